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


def test_ppo_learns_in_the_surrogate_and_beats_random_on_the_real_env():
    """Learning through the surrogate works: a short PPO run on the exact model swings the real pendulum better
    than random actions."""
    from stable_baselines3 import PPO

    from sindyrl.evaluation import evaluate_policy

    venv = SurrogateVecEnv(pendulum_model(), known_reward("pendulum"), starts(400), OBS, ACT, horizon=200,
                           n_envs=8, seed=0)
    agent = PPO("MlpPolicy", venv, n_steps=256, batch_size=256, gamma=0.9, learning_rate=1e-3, use_sde=True,
                sde_sample_freq=4, seed=0, device="cpu")
    agent.learn(40_000)
    trained = evaluate_policy(lambda o: agent.predict(o, deterministic=True)[0], lambda: gym.make("Pendulum-v1"), 6)
    rng = np.random.default_rng(0)
    rand = evaluate_policy(lambda o: rng.uniform(-2, 2, 1), lambda: gym.make("Pendulum-v1"), 6)
    assert trained.mean() > rand.mean() + 300, (trained, rand)
