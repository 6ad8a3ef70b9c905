"""benchmarks/distill_refine.py: one tiny training, two distillation variants on copies of it, the table."""

import json
from pathlib import Path

from bench_tools import load_benchmark

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name: tiny
env: {id: "double_well:DoubleWell", max_episode_steps: 60}
reward: {known: "double_well:reward"}
collect: {random_steps: 300, steps_per_iteration: 100}
dynamics: {library: {degree: 3}, threshold: 0.01}
agent: {initial_steps: 4096, steps_per_iteration: 1024}
dyna: {iterations: 2}
distill: {passes: 1, n_rollouts: 4, refine_timesteps: 8192, refine_rounds: 1}
"""


def _load():
    return load_benchmark('distill_refine')


def test_variants_distil_copies_of_one_training_and_tabulate_every_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "benchmarks" / "envs"))
    bench = _load()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    runs = tmp_path / "runs"
    assert bench.main(["--config", str(cfg), "--seeds", "0", "--variants", "imitation,ppo",
                       "--runs-dir", str(runs)]) == 0
    rows = json.loads((runs / "distill_refine.json").read_text())
    assert [r["variant"] for r in rows] == ["imitation", "ppo"]
    base = json.loads((runs / "tiny-s0" / "manifest.json").read_text())["timings"]
    assert "train" in base and "distill" not in base  # trained once, distilled only in the copies
    for r in rows:
        assert r["neural"] == rows[0]["neural"]  # the same network, the same evaluation starts
        assert 0 < r["nnz"] <= r["params"] and r["train_seconds"] == base["train"]
    ppo = json.loads((runs / "tiny-s0-ppo" / "summary.json").read_text())
    assert ppo["distill_history"][-1]["pass"] == "ppo"  # the variant's setting reached the distillation
    md = bench.markdown(rows, "cmd", "tiny.yaml")
    assert "| 0 | imitation |" in md and "| 0 | ppo |" in md
