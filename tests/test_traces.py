"""evaluate_policy(keep_trace=True) keeps the first episode it evaluates; Run.save_trace/load_traces round-trip it."""

import numpy as np
import pytest

from sindyrl.config import config_from_dict
from sindyrl.evaluation import evaluate_policy
from sindyrl.runs import Run
from tests.toy_envs import LinearEnv


def _act(obs):
    return -0.5 * obs[:1]


def test_keep_trace_is_the_first_episode_and_changes_nothing_else():
    plain = evaluate_policy(_act, LinearEnv, n_episodes=3, seed=4)
    kept = evaluate_policy(_act, LinearEnv, n_episodes=3, seed=4, keep_trace=True)
    np.testing.assert_array_equal(plain, kept)
    np.testing.assert_array_equal(plain.lengths, kept.lengths)
    assert plain.trace is None
    tr = kept.trace
    T = int(kept.lengths[0])
    assert tr["obs"].shape[0] == T + 1 and tr["actions"].shape[0] == T and tr["rewards"].shape == (T,)
    assert tr["rewards"].sum() == pytest.approx(kept[0])
    assert int(tr["seed"]) == 4
    env = LinearEnv()
    obs0, _ = env.reset(seed=4)
    np.testing.assert_allclose(tr["obs"][0], obs0)


def test_save_and_load_traces(tmp_path):
    run = Run.create(config_from_dict({"env": {"id": "Pendulum-v1"}}), root=tmp_path, name="r")
    assert run.load_traces() == {}
    tr = evaluate_policy(_act, LinearEnv, n_episodes=1, keep_trace=True).trace
    p = run.save_trace("mpc", tr)
    assert p == run.path / "traces" / "mpc.npz"
    back = run.load_traces()
    assert list(back) == ["mpc"]
    for k in ("obs", "actions", "rewards"):
        np.testing.assert_array_equal(back["mpc"][k], tr[k])
    with pytest.raises(ValueError, match="label"):
        run.save_trace("../x", tr)
    with pytest.raises(ValueError, match="keep_trace"):
        run.save_trace("x", {"obs": []})
