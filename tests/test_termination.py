"""Episode ends: known and learned terminations find where the real env ends episodes; the surrogate keeps
terminated (no bootstrap) and truncated (horizon, model domain) apart."""

import gymnasium as gym
import numpy as np
import pytest

from sindyrl.data import collect
from sindyrl.sparse import SparseModel
from sindyrl.surrogate import SurrogateEnv, SurrogateVecEnv
from sindyrl.termination import BoxTermination, known_termination, resolve_termination

pytest.importorskip("mujoco")


def _inverted_pendulum_data(seed: int, n: int = 1500):
    env = gym.make("InvertedPendulum-v5")
    try:
        return collect(env, n, seed=seed)
    finally:
        env.close()


def test_known_and_learned_terminations_end_where_the_real_env_does_on_held_out_episodes(seed):
    buf = _inverted_pendulum_data(seed)
    train, val = buf.split_episodes(0.3, seed)
    assert buf.terminated[val].sum() >= 5  # random actions drop the pole within a few dozen steps
    names = ["x", "th", "x_dot", "th_dot"]
    known = known_termination("InvertedPendulum-v5")
    np.testing.assert_array_equal(known(buf.obs[val], buf.actions[val], buf.next_obs[val]), buf.terminated[val])

    rule = BoxTermination.fit(buf.next_obs[train], buf.terminated[train], names)
    score = rule.score(buf.next_obs[val], buf.terminated[val])
    assert score["termination_recall"] >= 0.95, (rule.describe(), score)
    assert score["termination_false_alarm"] <= 0.01, (rule.describe(), score)
    # the rule it finds is the env's own: the pole angle beyond about 0.2 rad, in both directions
    assert {(names[k], side) for k, side, _ in rule.conditions} == {("th", "above"), ("th", "below")}
    for _, _, thr in rule.conditions:
        assert abs(abs(thr) - 0.2) < 0.03
    assert "th >" in rule.describe() and "th <" in rule.describe()
    assert BoxTermination.from_dict(rule.to_dict()).conditions == rule.conditions


def test_resolve_termination_sources(tmp_path):
    buf = _inverted_pendulum_data(0, 300)
    names = ["x", "th", "x_dot", "th_dot"]
    assert resolve_termination("none", "InvertedPendulum-v5", buf, names) is None
    assert resolve_termination(None, "InvertedPendulum-v5", buf, names).name == "InvertedPendulum-v5"
    assert isinstance(resolve_termination("learned", "InvertedPendulum-v5", buf, names), BoxTermination)
    assert isinstance(resolve_termination(None, "my:Env", buf, names), BoxTermination)
    buf.terminated[:] = False
    assert resolve_termination(None, "my:Env", buf, names) is None
    with pytest.raises(ValueError, match="no terminated episode"):
        resolve_termination("learned", "my:Env", buf, names)
    with pytest.raises(ValueError, match="env.termination .bogus.: not a built-in one"):
        resolve_termination("bogus", "my:Env", buf, names)
    assert resolve_termination("toy_envs:termination", "my:Env", buf, ["x0", "x1"]).name == "toy_envs:termination"


def _drift_model():
    """x' = x + 0.1 (one state, one action ignored)."""
    return SparseModel(["x", "u"], ["x"], [(), ((0, "pow", 1),)], np.array([[0.1, 1.0]]))


def test_surrogate_terminates_where_the_task_ends_and_truncates_elsewhere():
    obs = gym.spaces.Box(-10, 10, (1,), np.float32)
    act = gym.spaces.Box(-1, 1, (1,), np.float32)
    starts = np.zeros((4, 1))

    def reward(o, a, n):
        return np.ones(len(o))

    def ends(o, a, n):
        return n[:, 0] > 0.45

    venv = SurrogateVecEnv(_drift_model(), reward, starts, obs, act, horizon=100, n_envs=2, termination=ends,
                           state_bounds=(np.array([-10.0]), np.array([10.0])))
    venv.reset()
    for _ in range(5):
        _, _, done, infos = venv.step(np.zeros((2, 1)))
    assert done.all()
    assert all(i["surrogate_cut"] == "terminated" and i["TimeLimit.truncated"] is False for i in infos)
    returns, lengths = venv.rollout_returns(lambda o: np.zeros((len(o), 1)), starts)
    np.testing.assert_array_equal(lengths, 5)
    np.testing.assert_allclose(returns, 5.0)
    # no termination: the horizon truncates (and SB3 may bootstrap)
    venv = SurrogateVecEnv(_drift_model(), reward, starts, obs, act, horizon=3, n_envs=1,
                           state_bounds=(np.array([-10.0]), np.array([10.0])))
    venv.reset()
    for _ in range(3):
        _, _, done, infos = venv.step(np.zeros((1, 1)))
    assert done[0] and infos[0]["TimeLimit.truncated"] is True and infos[0]["surrogate_cut"] == "horizon"
    env = SurrogateEnv(_drift_model(), reward, starts, obs, act, horizon=100, termination=ends,
                       state_bounds=(np.array([-10.0]), np.array([10.0])))
    env.reset(seed=0)
    for _ in range(5):
        _, _, terminated, truncated, _ = env.step(np.zeros(1))
    assert terminated and not truncated


def test_assessment_starts_leave_out_states_just_before_a_real_episode_ended():
    from sindyrl.evaluation import assessment_starts

    buf = _inverted_pendulum_data(0, 1500)
    episodes = buf.episodes()
    first = {tuple(buf.obs[e[0]]) for e in episodes}
    doomed = {tuple(buf.obs[i]) for e in episodes if buf.terminated[e[-1]] for i in e[-10:]} - first
    starts = assessment_starts(buf, n=400, seed=0)
    got = {tuple(x) for x in starts}
    assert first <= got  # every real initial state
    assert not got & doomed
    assert len(starts) == min(400, len(first) + len(buf) - len(first) - len(doomed))
