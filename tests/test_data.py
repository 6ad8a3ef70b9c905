"""Transition buffer: collection, persistence, bad data rejected with clear messages."""

import gymnasium as gym
import numpy as np
import pytest

from sindyrl.data import TransitionBuffer, collect


def test_collect_random_and_policy_and_episode_ids(tmp_path):
    env = gym.make("Pendulum-v1")
    buf = collect(env, 250, seed=0)
    assert len(buf) == 250 and buf.n_episodes == 2
    assert buf.truncated.sum() == 1  # the first episode hit the 200-step limit
    assert np.all(np.abs(buf.actions) <= 2.0)
    collect(env, 30, policy=lambda o: np.array([5.0]), seed=9, buffer=buf)  # actions clipped to bounds
    assert len(buf) == 280 and np.all(buf.actions[250:] == 2.0)
    assert buf.episode[250] == 2  # new episodes continue the id sequence
    # the next state of a step is the state of the following step within an episode
    e = buf.episodes()[0]
    np.testing.assert_array_equal(buf.next_obs[e[:-1]], buf.obs[e[1:]])
    p = tmp_path / "d" / "real.npz"
    buf.save(p)
    back = TransitionBuffer.load(p)
    for f in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "episode"):
        np.testing.assert_array_equal(getattr(back, f), getattr(buf, f))


def test_same_seed_same_data():
    a = collect(gym.make("Pendulum-v1"), 50, seed=3)
    b = collect(gym.make("Pendulum-v1"), 50, seed=3)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.actions, b.actions)


def _good(n=4):
    return [np.zeros((n, 3)), np.zeros((n, 1)), np.zeros(n), np.zeros((n, 3)), np.zeros(n, bool), np.zeros(n, bool),
            np.zeros(n, int)]


@pytest.mark.parametrize(
    "field, value, match",
    [
        (0, np.full((4, 3), np.nan), "obs contains NaN"),
        (2, np.array([0, np.inf, 0, 0.0]), "rewards contains NaN or inf"),
        (1, np.zeros((4, 2)), r"actions has shape \(4, 2\), expected \(4, 1\)"),
        (3, np.zeros((3, 3)), r"next_obs has shape"),
        (0, np.zeros((0, 3)), "non-empty"),
    ],
)
def test_bad_data_rejected(field, value, match):
    buf = TransitionBuffer(3, 1)
    args = _good()
    args[field] = value
    with pytest.raises(ValueError, match=match):
        buf.add(*args)
    assert len(buf) == 0  # nothing half-added


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        TransitionBuffer.load(tmp_path / "nope.npz")
    p = tmp_path / "other.npz"
    np.savez(p, x=np.zeros(3))
    with pytest.raises(ValueError, match="missing array 'obs'"):
        TransitionBuffer.load(p)
    buf = TransitionBuffer(3, 1)
    buf.add(*_good())
    q = tmp_path / "t.npz"
    buf.save(q)
    q.write_bytes(q.read_bytes()[:40])
    with pytest.raises(ValueError, match="cannot read transitions"):
        TransitionBuffer.load(q)


def test_nonfinite_env_output_is_rejected():
    class Bad(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,))
        action_space = gym.spaces.Box(-1, 1, (1,))

        def reset(self, *, seed=None, options=None):
            return np.zeros(2, np.float32), {}

        def step(self, a):
            return np.array([np.nan, 0], np.float32), 0.0, False, False, {}

    with pytest.raises(ValueError, match="non-finite observation or reward at step 0"):
        collect(Bad(), 5)


def test_episode_limit_is_what_the_env_cut_when_it_declares_none():
    """A "module:Class" env without a TimeLimit: the surrogate's horizon comes from the episodes the env cut."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from toy_envs import LinearEnv

    from sindyrl.data import collect

    env = LinearEnv(horizon=30)
    assert getattr(env, "spec", None) is None  # nothing declares the limit
    buf = collect(env, 100, seed=0)
    assert buf.episode_limit() == 30  # three full episodes and a cut-off fourth
    buf.terminated[buf.episodes()[0][-1]] = True  # an episode that ended by termination says nothing of it
    assert buf.episode_limit() == 30
