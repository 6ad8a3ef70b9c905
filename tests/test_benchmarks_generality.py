"""benchmarks/generality.py: a defaults-only system end to end (--quick), the table, and the rewards it declares."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_tools import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _load():
    return load_benchmark('generality')


def test_quick_run_of_a_new_system_runs_or_skips_every_stage_and_reports_it(tmp_path):
    gen = _load()
    r = gen.run_system("double_well_known", str(tmp_path), 0, quick=True)
    assert "error" not in r
    assert set(r["stages_ran"]) | set(r["skipped"]) >= {"train", "distill", "export", "control", "hil", "report"}
    assert all(isinstance(v, str) and v for v in r["skipped"].values())  # every skip says why
    assert r["real_steps_train"] == 400  # 300 random + 100 collected between the two iterations
    assert r["train_seconds"] > 0 and r["pipeline_seconds"] >= r["train_seconds"]
    assert r["random"] < r["zero"]  # DoubleWell: random pushes hurt more than doing nothing
    again = gen.run_system("double_well_known", str(tmp_path), 0, quick=True)  # reused: same figures, stage times
    assert {k: again[k] for k in ("neural", "sac", "pipeline_seconds")} == \
        {k: r[k] for k in ("neural", "sac", "pipeline_seconds")}
    md = gen.markdown([r, {"system": "broken", "error": "ValueError: x"}], "cmd")
    assert "| double_well_known (double_well:DoubleWell) |" in md and "**failed**: ValueError: x" in md
    json.dumps(r)


def test_dm_control_pendulum_reward_function_is_the_envs_reward():
    pytest.importorskip("dm_control")
    import gymnasium as gym
    import shimmy  # noqa: F401  (registers the dm_control/ ids)
    from gymnasium.wrappers import FlattenObservation

    sys.path.insert(0, str(ROOT / "benchmarks" / "envs"))
    import dmc_rewards

    env = FlattenObservation(gym.make("dm_control/pendulum-swingup-v0"))
    env.action_space.seed(0)
    mine, theirs = [], []
    for s in range(40):  # random starts: some begin near upright, where the reward is 1
        o, _ = env.reset(seed=s)
        for _ in range(20):
            a = env.action_space.sample()
            o2, r, *_ = env.step(a)
            mine.append(dmc_rewards.pendulum_swingup(o[None], a[None], o2[None])[0])
            theirs.append(r)
            o = o2
    env.close()
    assert 0 < sum(theirs) < len(theirs)
    np.testing.assert_array_equal(mine, theirs)
