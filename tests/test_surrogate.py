"""Surrogate envs: gymnasium/SB3 checkers, batched stepping, auto-reset, truncation, no NaN."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from sindyrl.reward import known_reward
from sindyrl.sparse import SparseModel
from sindyrl.surrogate import SurrogateEnv, SurrogateVecEnv

OBS = gym.spaces.Box(np.array([-1, -1, -8], np.float32), np.array([1, 1, 8], np.float32))
ACT = gym.spaces.Box(np.array([-2], np.float32), np.array([2], np.float32))


def pendulum_model(n_models=3, blowup=False):
    """Exact Pendulum-v1 velocity update; the angle advanced to first order; (cos, sin) renormalised."""
    inputs = ["c", "s", "w", "u"]
    terms = [((0, "pow", 1),), ((1, "pow", 1),), ((2, "pow", 1),), ((3, "pow", 1),), ((1, "pow", 1), (2, "pow", 1)),
             ((0, "pow", 1), (2, "pow", 1))]
    coef = np.array([
        [1, 0, 0, 0, -0.05, 0],
        [0, 1, 0, 0, 0, 0.05],
        [0, 0.75, 1, 0.15, 0, 0],
    ], dtype=float)
    if blowup:
        coef[2, 2] = 1e200
    rng = np.random.default_rng(0)
    ens = coef[None] + rng.normal(scale=1e-3, size=(n_models, *coef.shape)) * (coef != 0)
    return SparseModel(inputs, ["c", "s", "w"], terms, coef, ensemble=ens, unit_pairs=[(0, 1)])


def starts(n=50, seed=0):
    th = np.random.default_rng(seed).uniform(-np.pi, np.pi, n)
    return np.c_[np.cos(th), np.sin(th), np.zeros(n)]


def test_single_env_passes_gymnasium_and_sb3_checkers():
    env = SurrogateEnv(pendulum_model(), known_reward("pendulum"), starts(), OBS, ACT, horizon=50)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


def test_vec_env_matches_model_and_autoresets():
    model = pendulum_model()
    venv = SurrogateVecEnv(model, known_reward("pendulum"), starts(), OBS, ACT, horizon=5, n_envs=4, seed=1)
    obs = venv.reset().astype(np.float64)
    a = np.full((4, 1), 3.0)  # outside the bounds: clipped to 2
    nxt, r, done, infos = venv.step(a)
    expected = model.evaluate(np.c_[obs, np.full((4, 1), 2.0)])
    np.testing.assert_allclose(nxt, expected, rtol=1e-6)
    np.testing.assert_allclose(r, known_reward("pendulum")(obs, np.full((4, 1), 2.0), expected), rtol=1e-6)
    assert not done.any()
    for _ in range(4):
        nxt, r, done, infos = venv.step(np.zeros((4, 1)))
    assert done.all()
    for i in range(4):
        assert infos[i]["TimeLimit.truncated"] and infos[i]["surrogate_cut"] == "horizon"
        assert infos[i]["terminal_observation"].shape == (3,)
        assert nxt[i, 2] == 0.0  # auto-reset to a stored (zero-velocity) state


def test_leaving_bounds_truncates_and_nan_never_leaves():
    venv = SurrogateVecEnv(pendulum_model(blowup=True), known_reward("pendulum"), starts() + [0, 0, 0.5], OBS, ACT,
                           horizon=100, n_envs=8, state_bounds=(starts().min(0), starts().max(0) + 0.5))
    venv.reset()
    for _ in range(3):
        with np.errstate(all="raise"):  # not even a float32 overflow on the way out
            obs, r, done, infos = venv.step(np.ones((8, 1)))
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(r))
        assert all(np.all(np.isfinite(i["terminal_observation"])) for i in infos if "terminal_observation" in i)
    assert all(i.get("surrogate_cut") in ("bounds", "nonfinite", None) for i in infos)
    assert done.all()


def test_sample_mode_uses_one_member_per_episode_and_disagreement_cut():
    model = pendulum_model(n_models=4)
    venv = SurrogateVecEnv(model, known_reward("pendulum"), starts(), OBS, ACT, horizon=50, n_envs=16,
                           ensemble_mode="sample", seed=0)
    obs = venv.reset().astype(np.float64)
    nxt, *_ = venv.step(np.zeros((16, 1)))
    for i in range(16):
        m = venv._member[i]
        np.testing.assert_allclose(nxt[i], model.evaluate(np.r_[obs[i], 0.0], coef=model.ensemble[m]), rtol=1e-6)
    tight = SurrogateVecEnv(model, known_reward("pendulum"), starts() + [0, 0, 1.0], OBS, ACT, horizon=50,
                            n_envs=4, disagreement_threshold=1e-12)
    tight.reset()
    _, _, done, infos = tight.step(np.ones((4, 1)))
    assert done.all() and infos[0]["surrogate_cut"] == "disagreement"


def test_bad_arguments():
    with pytest.raises(ValueError, match="reset_states"):
        SurrogateVecEnv(pendulum_model(), known_reward("pendulum"), np.zeros((0, 3)), OBS, ACT, horizon=5)
    with pytest.raises(ValueError, match="ensemble_mode"):
        SurrogateVecEnv(pendulum_model(), known_reward("pendulum"), starts(), OBS, ACT, horizon=5,
                        ensemble_mode="vote")
    with pytest.raises(TypeError, match="dynamics"):
        SurrogateVecEnv(object(), known_reward("pendulum"), starts(), OBS, ACT, horizon=5)


def test_sac_learns_in_the_surrogate_and_beats_random_on_the_real_env(seed):
    """Learning through the surrogate works: a short SAC run on the exact model swings the real pendulum up,
    for any seed (SAC rather than PPO: PPO at a test-sized budget is a coin toss between seeds and CPUs)."""
    from stable_baselines3 import SAC

    from sindyrl.evaluation import evaluate_policy

    venv = SurrogateVecEnv(pendulum_model(), known_reward("pendulum"), starts(400, seed), OBS, ACT, horizon=200,
                           n_envs=1, seed=seed)
    agent = SAC("MlpPolicy", venv, learning_rate=1e-3, learning_starts=200, seed=seed, device="cpu",
                policy_kwargs={"net_arch": [64, 64]})
    agent.learn(6_000)
    make = lambda: gym.make("Pendulum-v1")  # noqa: E731
    trained = evaluate_policy(lambda o: agent.predict(o, deterministic=True)[0], make, 6, seed=100 + seed)
    rng = np.random.default_rng(seed)
    rand = evaluate_policy(lambda o: rng.uniform(-2, 2, 1), make, 6, seed=100 + seed)
    # random actions score about -1,200; a policy that swings up and holds scores about -150 to -400
    assert rand.mean() < -800, rand
    assert trained.mean() > -600, (trained, rand)
