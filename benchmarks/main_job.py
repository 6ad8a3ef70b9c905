"""The main job over several seeds: `sindyrl sweep examples/configs/pendulum.yaml --seeds 5`, every stage of `make demo`.

For each seed: the neural and the sparse policy's final real return (20 deterministic episodes on the same
starts), the worst episode of each, the surrogate estimate, and the real steps spent on collection and on
evaluation. Across seeds: mean ± std. The section `dyna` of docs/benchmarks.md and docs/results/main_job.json
hold the latest figures (`--write-docs`).

    python benchmarks/main_job.py --seeds 5 --workers 2 --write-docs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = ("eval_return_mean", "eval_return_std", "eval_return_min", "sparse_policy_return_mean",
        "sparse_policy_return_std", "sparse_policy_return_min", "surrogate_return_mean", "surrogate_return_min",
        "real_steps_collect", "real_steps_eval", "real_steps_final_eval", "real_steps_distill", "sparse_policy_nnz",
        "neural_policy_params", "eval_episodes", "surrogate_steps", "train_wall_seconds", "real_steps_control",
        "real_steps_hil", "real_steps_export", "real_steps_total", "control_mpc_return_mean", "hil_return_mean",
        "hil_max_action_diff", "sweep_wall_seconds")


#: what `make demo` runs (robust is opt-in and the pendulum config does not ask for it)
STAGES = ("train", "distill", "export", "control", "hil", "report")


def trial_figures(path: Path) -> dict:
    s = json.loads((path / "summary.json").read_text())
    out = {k: s.get(k) for k in KEYS}
    out["seed"] = s.get("seed")
    return out


def _pm(vals) -> str:
    v = np.asarray([x for x in vals if x is not None], dtype=float)
    return f"{v.mean():.1f} ± {v.std():.1f}" if v.size else "–"


def markdown(rows: list[dict], command: str, config: str) -> str:
    wall = float(np.mean([r.get("sweep_wall_seconds") or np.nan for r in rows]))
    lines = [
        "## Pendulum Dyna run (the main job)", "",
        f"Command: `{command}` ({len(rows)} seeds of `{config}`, every stage of `make demo`; {wall:.0f} s "
        "per seed, two seeds side by side on 2 cores). Every figure is per seed; the last row is the mean ± std over seeds. Returns are over "
        f"{rows[0]['eval_episodes']} deterministic real episodes with reset seeds seed..seed+{rows[0]['eval_episodes'] - 1}, "
        "the same starts for the neural and the sparse policy. *Surrogate* is the agent's return in the learned "
        "model from the stored real states it was assessed on (no real step).", "",
        "| seed | neural return | neural worst | sparse return | sparse worst | sparse nnz / actor params | "
        "surrogate mean / worst | real steps: collect + eval = total |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} | {r['eval_return_min']:.1f} | "
            f"{r['sparse_policy_return_mean']:.1f} ± {r['sparse_policy_return_std']:.1f} | "
            f"{r['sparse_policy_return_min']:.1f} | {r['sparse_policy_nnz']} / {r['neural_policy_params']} | "
            f"{r['surrogate_return_mean']:.1f} / {r['surrogate_return_min']:.1f} | "
            f"{r['real_steps_collect']:,} + {r['real_steps_total'] - r['real_steps_collect']:,} = "
            f"{r['real_steps_total']:,} |")
    lines.append(
        f"| **all** | {_pm(r['eval_return_mean'] for r in rows)} | {min(r['eval_return_min'] for r in rows):.1f} | "
        f"{_pm(r['sparse_policy_return_mean'] for r in rows)} | {min(r['sparse_policy_return_min'] for r in rows):.1f} | "
        f"{_pm(r['sparse_policy_nnz'] for r in rows)} | {_pm(r['surrogate_return_mean'] for r in rows)} | "
        f"max total {max(r['real_steps_total'] for r in rows):,} |")
    return "\n".join(lines)


def headline(rows: list[dict]) -> dict:
    def arr(k):
        return np.asarray([r[k] for r in rows], dtype=float)

    return {
        "seeds": len(rows),
        "neural_return_mean_over_seeds": float(arr("eval_return_mean").mean()),
        "neural_return_std_over_seeds": float(arr("eval_return_mean").std()),
        "neural_return_worst_seed_mean": float(arr("eval_return_mean").min()),
        "neural_worst_episode": float(arr("eval_return_min").min()),
        "sparse_return_mean_over_seeds": float(arr("sparse_policy_return_mean").mean()),
        "sparse_return_std_over_seeds": float(arr("sparse_policy_return_mean").std()),
        "sparse_return_worst_seed_mean": float(arr("sparse_policy_return_mean").min()),
        "sparse_worst_episode": float(arr("sparse_policy_return_min").min()),
        "sparse_nnz_mean": float(arr("sparse_policy_nnz").mean()),
        "real_steps_collect_max": int(arr("real_steps_collect").max()),
        "real_steps_total_max": int(arr("real_steps_total").max()),
        "per_seed": {f"seed{r['seed']}": {k: float(v) for k, v in r.items() if k != "seed" and v is not None}
                     for r in rows},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="examples/configs/pendulum.yaml")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--name", default="main-job-sweep", help="sweep directory (reused: finished trials are kept)")
    p.add_argument("--write-docs", action="store_true", help="rewrite the dyna section and docs/results/main_job.json")
    args = p.parse_args(argv)
    from sindyrl.pipeline import sweep

    out = sweep(args.config, seeds=args.seeds, workers=args.workers, runs_dir=args.runs_dir, name=args.name,
                    stages=STAGES, echo=lambda *a: print(*a, flush=True))
    if out["failed"]:
        print(f"{out['failed']} trial(s) failed: not writing the docs", file=sys.stderr)
        return 1
    rows = sorted((trial_figures(Path(r["path"])) for r in out["rows"]), key=lambda r: r["seed"])
    command = f"python benchmarks/main_job.py --seeds {args.seeds} --workers {args.workers} --write-docs"
    md = markdown(rows, command, args.config)
    print(md)
    if args.write_docs:
        from benchmarks.docs_output import write_results, write_section

        write_section("dyna", md)
        write_results("main_job", headline(rows), command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
