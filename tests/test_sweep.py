"""`sindyrl sweep`: the grid, a local sweep killed and restarted (only missing trials run), a Ray Tune sweep
on a local Ray instance, and the aggregated table."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from sindyrl.pipeline import sweep as run_sweep
from sindyrl.sweep import DONE_KEY, expand_trials, parse_grid

TINY = {
    "name": "tiny", "seed": 0,
    "env": {"id": "Pendulum-v1", "max_episode_steps": 50},
    "collect": {"random_steps": 200, "steps_per_iteration": 50},
    "dynamics": {"library": {"degree": 2}, "n_models": 3},
    "reward": {"known": "pendulum"},
    "agent": {"algo": "ppo", "n_envs": 2, "initial_steps": 256, "steps_per_iteration": 128,
              "kwargs": {"n_steps": 64, "batch_size": 64, "n_epochs": 1}},
    "dyna": {"iterations": 2, "eval_episodes": 1, "final_eval_episodes": 2},
}


@pytest.fixture
def tiny_config(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


def _summary(path):
    return json.loads((Path(path) / "summary.json").read_text())


def test_grid_is_the_product_of_values_and_seeds(tiny_config, tmp_path):
    grid = parse_grid(["agent.initial_steps=256,512", "dynamics.library.degree=2,3,4", "distill.alphas=[1, 2],[3]"])
    assert len(grid) == 2 * 3 * 2
    assert grid[0] == [("agent.initial_steps", "256"), ("dynamics.library.degree", "2"), ("distill.alphas", "[1, 2]")]
    assert parse_grid(None) == [[]]
    trials = expand_trials(tiny_config, 3, ["agent.initial_steps=256,512"], tmp_path / "sw")
    assert [t["trial"] for t in trials] == [f"initial_steps-{v}-s{s}" for v in (256, 512) for s in (0, 1, 2)]
    assert [t["config"]["seed"] for t in trials] == [0, 1, 2, 0, 1, 2]
    assert trials[4]["config"]["agent"]["initial_steps"] == 512 and trials[4]["setting"] == "agent.initial_steps=512"
    for bad, msg in ((["agent.initial_steps"], "expected key.path"), (["agent.algo=ppo,xyz"], "agent.algo"),
                     (["agent.nope=1"], "agent.nope"), (["seed=1", "seed=2"], "given twice")):
        with pytest.raises(ValueError, match=msg):
            expand_trials(tiny_config, 1, bad, tmp_path / "sw")
    with pytest.raises(ValueError, match="--stages"):
        run_sweep(tiny_config, 1, stages=["train", "fly"], runs_dir=tmp_path)
    with pytest.raises(ValueError, match="--address"):
        run_sweep(tiny_config, 1, address="ray://x:1", runs_dir=tmp_path)


def test_ray_backend_missing_gives_install_hint(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(RuntimeError, match=r"sindyrl\[ray\]"):
        run_sweep(tiny_config, 1, backend="ray", runs_dir=tmp_path)
    assert not (tmp_path / "tiny-sweep").exists()  # failed before any work


def _check_table(out, settings, seeds):
    rows, table = out["rows"], out["table"]
    assert [t["setting"] for t in table] == settings
    for t in table:
        mine = [_summary(r["path"]) for r in rows if r["setting"] == t["setting"]]
        assert t["n_done"] == len(mine) == seeds and all(s[DONE_KEY] for s in mine)
        rets = [s["eval_return_mean"] for s in mine]
        assert t["return_mean"] == pytest.approx(np.mean(rets)) and t["return_std"] == pytest.approx(np.std(rets))
        assert t["real_steps_mean"] == pytest.approx(np.mean([s["real_steps_collect"] for s in mine]))
        assert t["wall_seconds_mean"] > 0
    with open(out["files"]["summary_csv"]) as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["setting"] for r in csv_rows] == settings
    assert float(csv_rows[0]["return_mean"]) == pytest.approx(table[0]["return_mean"])
    md = out["files"]["summary_md"].read_text()
    assert all(f"| {s} | {seeds}/{seeds} |" in md for s in settings)
    assert out["files"]["plot"].stat().st_size > 1000


def test_local_sweep_killed_and_restarted_runs_only_missing_trials(tiny_config, tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "sindyrl.cli", "sweep", str(tiny_config), "--seeds", "1",
           "--set", "agent.initial_steps=256,384", "--workers", "1", "--runs-dir", str(runs), "--name", "sw"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = runs / "sw" / "initial_steps-256-s0"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (first / "summary.json").is_file() and _summary(first).get(DONE_KEY):
                break
            time.sleep(0.1)
        assert _summary(first).get(DONE_KEY), "the first trial did not finish"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker processes, mid-way through trial 2
        proc.wait()
    stamp = {f: (first / f).stat().st_mtime_ns for f in ("summary.json", "metrics.csv", "agent/agent.zip")}
    second = runs / "sw" / "initial_steps-384-s0"
    assert not (second / "summary.json").is_file() or not _summary(second).get(DONE_KEY)

    out = run_sweep(tiny_config, 1, ["agent.initial_steps=256,384"], workers=1, runs_dir=runs, name="sw",
                    echo=lambda *a: None)
    assert (out["skipped"], out["ran"], out["failed"]) == (1, 1, 0)
    assert {f: (first / f).stat().st_mtime_ns for f in stamp} == stamp  # the finished trial was not touched
    assert _summary(second)["real_steps_collect"] == 250  # resumed or restarted: nothing collected twice
    assert len(_run_metrics(second)) == 2
    _check_table(out, ["agent.initial_steps=256", "agent.initial_steps=384"], 1)
    # a third start has nothing left to do
    again = run_sweep(tiny_config, 1, ["agent.initial_steps=256,384"], runs_dir=runs, name="sw", echo=lambda *a: None)
    assert (again["skipped"], again["ran"]) == (2, 0)


def _run_metrics(path):
    from sindyrl.runs import Run

    return Run.open(path).read_metrics()


def test_ray_sweep_on_a_local_instance(tiny_config, tmp_path):
    ray = pytest.importorskip("ray", reason="the ray backend needs pip install 'sindyrl[ray]'")
    out = run_sweep(tiny_config, 2, backend="ray", workers=2, runs_dir=tmp_path, name="rs", echo=lambda *a: None)
    assert not ray.is_initialized()  # the sweep shut down the Ray instance it started
    assert (out["ran"], out["failed"]) == (2, 0)
    _check_table(out, ["base"], 2)
    seeds = sorted(_summary(r["path"])["seed"] for r in out["rows"])
    assert seeds == [0, 1]
    # different seeds, different runs (the table's std is not a copy of one trial)
    assert out["table"][0]["return_std"] > 0
    # a trial interrupted before it finished (its summary lacks the done flag) is the only one Ray runs again
    paths = sorted(Path(r["path"]) for r in out["rows"])
    cut = _summary(paths[1])
    del cut[DONE_KEY]
    (paths[1] / "summary.json").write_text(json.dumps(cut))
    stamp = (paths[0] / "summary.json").stat().st_mtime_ns
    again = run_sweep(tiny_config, 2, backend="ray", workers=2, runs_dir=tmp_path, name="rs", echo=lambda *a: None)
    assert (again["skipped"], again["ran"], again["failed"]) == (1, 1, 0)
    assert (paths[0] / "summary.json").stat().st_mtime_ns == stamp and _summary(paths[1]).get(DONE_KEY)
    _check_table(again, ["base"], 2)
