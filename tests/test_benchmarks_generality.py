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
    assert "| LQR | MPC |" in md.splitlines()[4]
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


def test_the_count_says_where_sac_learned_and_skips_budget_variants():
    gen = _load()

    def row(system, neural, sparse, sac, random):
        r = {"system": system, "env_id": "E", "stages_ran": ["train"], "skipped": {}, "real_steps_train": 5000,
             "neural": neural, "sparse": sparse, "sparse_nnz": 3, "mpc": None, "sac": sac, "zero": 0.0,
             "random": random}
        for k in ("neural", "sparse", "mpc"):
            r[f"{k}_how_far"] = gen.how_far(r[k], random, sac)
        return r

    rows = [row("a", 90, 80, 100, 0),       # both, SAC learned
            row("b", 90, 10, 100, 0),       # neural only
            row("c", 0, 0, 0, 0),           # SAC no better than random: counts, but said apart
            row("inverted_pendulum_5k", 100, 100, 100, 0)]  # a budget variant: not a system
    md = gen.markdown(rows, "cmd")
    assert "on 3 of 3 systems; sparse policy at ≥ 70% on 2; both on 2, of which 1 where SAC beat" in md, md
    assert "`inverted_pendulum_5k`) are not counted" in md


def test_lorenz_reward_function_is_the_envs_reward_and_the_fixed_point_holds():
    sys.path.insert(0, str(ROOT / "benchmarks" / "envs"))
    import lorenz

    env = lorenz.ControlledLorenz()
    rng = np.random.default_rng(0)
    o, _ = env.reset(seed=3)
    for _ in range(50):
        a = rng.uniform(-1, 1, 1)
        o2, r, term, trunc, _ = env.step(a)
        assert not term and r == pytest.approx(lorenz.reward(o[None], a[None], o2[None])[0], rel=1e-12)
        o = o2
    env.s = lorenz.TARGET.copy()  # C+ is a fixed point of the free system: it stays (to RK4's accuracy)
    np.testing.assert_allclose(env.step(np.zeros(1))[0], lorenz.TARGET, atol=1e-9)
