"""Observation attacks: they never leave the epsilon ball, and MAD hurts a trained policy more than noise.

One TD3 agent is trained briefly on Pendulum-v1 for this module (module-scoped
fixture) and shared by the gradient-attack, learned-attacker and discovery tests.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO, TD3
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import DummyVecEnv

from sindyrl.robust import (
    AttackerEnv,
    Ball,
    CriticAttack,
    MADAttack,
    NoAttack,
    ObservationAttack,
    RandomAttack,
    VecObservationAttack,
    discover,
    episode_returns,
    observation_scale,
    random_policy,
    train_attacker,
)

SCALE = np.array([0.7, 0.7, 2.5])  # about the spread of Pendulum observations under a random policy


def make_pendulum():
    return gym.make("Pendulum-v1")


def make_short_pendulum():
    return gym.make("Pendulum-v1", max_episode_steps=60)


TD3_SETTINGS = dict(learning_starts=200, batch_size=64, learning_rate=1e-3, policy_kwargs=dict(net_arch=[64, 64]))


def _train_td3(seed: int) -> TD3:
    """TD3 on Pendulum-v1 until it swings up (about 8,000 steps), in chunks, at most 14,000 steps."""
    torch.manual_seed(seed)
    model = TD3("MlpPolicy", make_pendulum(), action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)),
                verbose=0, device="cpu", seed=seed, **TD3_SETTINGS)
    for k in range(7):
        model.learn(2000, reset_num_timesteps=False)
        if k >= 2 and episode_returns(model, make_pendulum, None, 4, seed=500).mean() > -300:
            break
    return model


@pytest.fixture(scope="module")
def td3(pytestconfig, tmp_path_factory, seed):
    """A briefly trained TD3 agent, cached in pytest's cache directory.

    Training costs ~30 s on an idle machine (minutes on a loaded one); the
    zip is keyed by the library versions and settings, so later sessions load it.
    """
    import hashlib

    import stable_baselines3

    torch.set_num_threads(1)
    key = hashlib.sha256(repr((TD3_SETTINGS, seed, stable_baselines3.__version__, torch.__version__,
                               gym.__version__)).encode()).hexdigest()[:12]
    cache = getattr(pytestconfig, "cache", None)  # absent under -p no:cacheprovider
    folder = cache.mkdir("sindyrl_robust") if cache is not None else tmp_path_factory.mktemp("sindyrl_robust")
    path = folder / f"td3_pendulum_{key}.zip"
    if path.is_file():
        return TD3.load(path, device="cpu")
    model = _train_td3(seed)
    model.save(path)
    return model


# ------------------------------------------------------------------ the ball
@settings(max_examples=200, deadline=None)
@given(
    s=st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=3, max_size=3),
    d=st.lists(st.floats(-10, 10, allow_nan=False), min_size=3, max_size=3),
    eps=st.floats(0, 0.7),
)
def test_projection_never_leaves_the_ball_even_with_bounds_and_float32(s, d, eps):
    ball = Ball(eps, SCALE, low=[-1, -1, -8], high=[1, 1, 8])
    s = np.asarray(s, dtype=np.float32)
    out = ball.project(s, s.astype(np.float64) + np.asarray(d))
    assert out.dtype == np.float32
    assert ball.contains(s, out)  # exact, in float64: no rounding slack
    inside = (s >= -1) & (s <= 1) | (np.arange(3) == 2)
    # where the true state is inside the observation bounds, the perturbed one is too
    assert np.all((out[inside] >= ball.limits(s)[0][inside]) & (out[inside] <= ball.limits(s)[1][inside]))
    assert np.all(out[:2][inside[:2]] >= -1) and np.all(out[:2][inside[:2]] <= 1)


def test_scale_from_data_and_bad_input():
    X = np.array([[0.0, 1.0, 5.0], [2.0, 1.0, -5.0]])
    np.testing.assert_allclose(observation_scale(X), [1.0, 0.0, 5.0])
    np.testing.assert_allclose(observation_scale(X, "range"), [2.0, 0.0, 10.0])
    np.testing.assert_allclose(observation_scale(X, [1, 2, 3]), [1, 2, 3])
    with pytest.raises(ValueError, match="kind"):
        observation_scale(X, "mad")
    with pytest.raises(ValueError, match="shape"):
        observation_scale(np.zeros(3))
    with pytest.raises(ValueError, match="epsilon"):
        RandomAttack(-0.1, SCALE)


def _check_wrapped_episode(attack, policy, n_steps=80):
    env = ObservationAttack(make_pendulum(), attack)
    obs, info = env.reset(seed=3)
    ball = attack.ball
    moved = 0.0
    for _ in range(n_steps):
        assert ball.contains(info["true_obs"], obs), (info["true_obs"], obs)
        assert np.all(obs >= env.observation_space.low) and np.all(obs <= env.observation_space.high)
        moved = max(moved, float(np.max(np.abs(obs - info["true_obs"]))))
        obs, r, te, tr, info = env.step(policy(obs))
    return moved


def test_random_attack_stays_in_the_ball_and_uses_it():
    space = make_pendulum().observation_space
    act = random_policy(make_pendulum().action_space, seed=1)
    moved = _check_wrapped_episode(RandomAttack(0.3, SCALE, space.low, space.high), act)
    assert moved > 0.5 * 0.3 * SCALE.min()  # it perturbs, not just passes through


def test_attacked_env_steps_with_the_true_state():
    space = make_pendulum().observation_space
    clean, attacked = make_pendulum(), ObservationAttack(make_pendulum(), RandomAttack(0.5, SCALE, space.low, space.high))
    o1, _ = clean.reset(seed=5)
    o2, info = attacked.reset(seed=5)
    np.testing.assert_array_equal(o1, info["true_obs"])
    for k in range(20):
        a = np.array([np.sin(k)], dtype=np.float32)
        o1, r1, *_ = clean.step(a)
        o2, r2, _, _, info = attacked.step(a)
        np.testing.assert_array_equal(o1, info["true_obs"])
        assert r1 == r2
    # the same seed gives the same perturbations
    a1 = ObservationAttack(make_pendulum(), RandomAttack(0.5, SCALE, space.low, space.high))
    a2 = ObservationAttack(make_pendulum(), RandomAttack(0.5, SCALE, space.low, space.high))
    np.testing.assert_array_equal(a1.reset(seed=9)[0], a2.reset(seed=9)[0])


def test_gradient_attacks_stay_in_the_ball(td3):
    space = make_pendulum().observation_space
    for cls in (MADAttack, CriticAttack):
        atk = cls(0.3, SCALE, space.low, space.high).bind(td3)
        moved = _check_wrapped_episode(atk, lambda o: td3.predict(o, deterministic=True)[0], n_steps=40)
        assert moved > 0.3 * 0.3 * SCALE.min(), cls.kind


def test_mad_hurts_more_than_random_noise_of_the_same_epsilon(td3):
    space = make_pendulum().observation_space
    eps = 0.25
    clean = episode_returns(td3, make_pendulum, None, 6, seed=100).mean()
    rnd_policy = episode_returns(random_policy(space and make_pendulum().action_space), make_pendulum, None, 6,
                                 seed=100).mean()
    assert clean > rnd_policy + 300, "the fixture policy did not train"
    noise = episode_returns(td3, make_pendulum, RandomAttack(eps, SCALE, space.low, space.high), 6, seed=100).mean()
    mad = episode_returns(td3, make_pendulum, MADAttack(eps, SCALE, space.low, space.high), 6, seed=100).mean()
    critic = episode_returns(td3, make_pendulum, CriticAttack(eps, SCALE, space.low, space.high), 6, seed=100).mean()
    assert mad < noise - 0.1 * (clean - rnd_policy), (clean, noise, mad)
    assert critic < noise, (clean, noise, critic)
    # epsilon 0 is no attack at all
    zero = episode_returns(td3, make_pendulum, MADAttack(0.0, SCALE, space.low, space.high), 2, seed=100)
    np.testing.assert_allclose(zero, episode_returns(td3, make_pendulum, NoAttack(3), 2, seed=100))


def test_critic_attack_needs_a_critic():
    ppo = PPO("MlpPolicy", make_pendulum(), n_steps=64, seed=0, device="cpu")
    with pytest.raises(TypeError, match="critic"):
        CriticAttack(0.1, SCALE).bind(ppo)
    with pytest.raises(ValueError, match="bind"):
        MADAttack(0.1, SCALE).perturb(np.zeros(3, dtype=np.float32))
    # MAD works on PPO's Gaussian mean, from a random or a reversing start
    obs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=np.float32)
    for start in ("random", "reverse"):
        out = MADAttack(0.2, SCALE, start=start).bind(ppo).perturb(obs)
        assert out.shape == obs.shape and np.all(Ball(0.2, SCALE).contains(obs, out))
        assert np.any(out != obs)
    with pytest.raises(ValueError, match="start"):
        MADAttack(0.2, SCALE, start="zero")


def test_learned_attacker_and_gap_objective(td3):
    space = make_pendulum().observation_space
    atk = train_attacker(make_short_pendulum, td3, 0.3, SCALE, total_timesteps=256,
                         ppo_kwargs=dict(n_steps=128, batch_size=64, n_epochs=2), seed=0, init_states=2048)
    _check_wrapped_episode(atk, lambda o: td3.predict(o, deterministic=True)[0], n_steps=30)
    # started from an imitation of MAD, the learned attacker is a real attack, not noise
    noise = episode_returns(td3, make_pendulum, RandomAttack(0.3, SCALE, space.low, space.high), 4, seed=100).mean()
    learned = episode_returns(td3, make_pendulum, atk, 4, seed=100).mean()
    assert learned < noise - 100, (learned, noise)
    # reward -r without references
    env = AttackerEnv(make_short_pendulum, td3, 0.3, SCALE, seed=0)
    env.reset(seed=1)
    ref = make_short_pendulum()
    ref.reset(seed=1)
    _, r_att, *_ = env.step(np.zeros(3, dtype=np.float32))  # tanh(0) = 0: no perturbation
    _, r, *_ = ref.step(td3.predict(ref.reset(seed=1)[0], deterministic=True)[0])
    assert r_att == pytest.approx(-r, rel=1e-6)
    # gap objective: against a copy of itself with a zero attacker the episode's reward sums to 0
    gap = AttackerEnv(make_short_pendulum, td3, 0.3, SCALE, references=[td3], seed=0)
    gap.set_attacker(lambda S: np.zeros_like(S))
    gap.reset(seed=2)
    total, done = 0.0, False
    while not done:
        _, rr, te, tr, info = gap.step(np.zeros(3, dtype=np.float32))
        total += rr
        done = te or tr
    assert total == pytest.approx(0.0, abs=1e-6)
    assert "reference_returns" in info
    # the vectorised wrapper keeps the ball too
    venv = VecObservationAttack(DummyVecEnv([make_pendulum, make_pendulum]), atk)
    obs = venv.reset()
    for _ in range(5):
        obs, _, _, infos = venv.step(np.zeros((2, 1), dtype=np.float32))
        for i in range(2):
            assert atk.ball.contains(infos[i]["true_obs"], obs[i])
    assert space.shape == (3,)


def test_discovery_smoke(td3, tmp_path):
    """One tiny iteration end to end: real SB3 training of attackers and of a warm-started policy."""
    res = discover(td3, make_short_pendulum, make_short_pendulum, epsilon=0.3, scale=SCALE,
                   attack_kinds=("none", "random", "mad"), iterations=1, attacker_steps=128, policy_steps=100,
                   eval_episodes=2, min_improvement=-10.0, seed=0)
    assert res.payoff.attacks == ["none", "random", "mad", "adversary", "gap_1"]
    assert res.payoff.policies == ["natural", "robust_1"]
    assert np.all(np.isfinite(res.payoff.values))
    assert set(res.kept) <= {"natural", "robust_1"} and res.kept
    assert res.natural_return == pytest.approx(res.payoff.value("natural", "none"))
    assert res.history[0]["policy"] == "robust_1"
    # the new policy is a different network from the natural one (it was trained)
    p0 = torch.nn.utils.parameters_to_vector(td3.policy.actor.parameters())
    p1 = torch.nn.utils.parameters_to_vector(res.policies["robust_1"].policy.actor.parameters())
    assert not torch.allclose(p0, p1)
