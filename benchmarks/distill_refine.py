"""Sparse policies against their networks, per seed: imitation alone, APG refinement, the PPO sparse actor.

For each seed the task's config is trained once (``sindyrl train``, reused when its run directory is already
there); then each distillation variant runs on a copy of that run (``sindyrl distill``, so only
``distill.*`` differs). Per seed and variant: the neural policy's real return, the sparse policy's, their
ratio, the sparse policy's nonzero coefficients against the actor's parameters, the sparse policy's
surrogate return from the stored real starts, and the distillation's wall time against the Dyna training's.
Real returns are the run's final evaluation (``dyna.final_eval_episodes`` deterministic episodes, reset seeds
seed..seed+N-1; the sparse policy on the same starts).

    python benchmarks/distill_refine.py --seeds 0,1,2,3,4 --runs-dir /tmp/refine --write-docs
    python benchmarks/distill_refine.py --config examples/configs/pendulum.yaml --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: variant -> distill settings on top of the config's
VARIANTS: dict[str, dict] = {
    "imitation": {"refine": "none"},
    "apg": {"refine": "apg", "refine_value": "critic"},
    "ppo": {"refine": "ppo"},
    # the 2% budget: on the swing-up's 5 observations the whole degree-3 library (56 terms) fits in it
    "imitation_2pct": {"refine": "none", "max_terms_fraction": 0.02},
    "ppo_2pct": {"refine": "ppo", "max_terms_fraction": 0.02},
    # one STLSQ fit instead of the 20-member E-SINDy ensemble's median
    "imitation_2pct_single": {"refine": "none", "max_terms_fraction": 0.02, "n_models": 1},
    "ppo_2pct_single": {"refine": "ppo", "max_terms_fraction": 0.02, "n_models": 1},
    # the 2% sparse actor, and its three best candidates by the surrogate confirmed on 2 real episodes each
    "ppo_2pct_confirm3": {"refine": "ppo", "max_terms_fraction": 0.02, "confirm_top": 3, "confirm_episodes": 2},
    # a richer library and the 2% budget: degree 4 has 126 terms on the swing-up's 5 observations
    "ppo_deg4": {"refine": "ppo", "degree": 4, "max_terms_fraction": 0.02},
}


def _sindyrl(*args: str, log: Path) -> None:
    with open(log, "a") as f:
        subprocess.run([sys.executable, "-c", "import sys; from sindyrl.cli import main; sys.exit(main())", *args],
                       check=True, stdout=f, stderr=subprocess.STDOUT,
                       cwd=ROOT)


def _trained(config: Path, seed: int, runs: Path, overrides: list[str]) -> Path:
    base = runs / f"{config.stem}-s{seed}"
    if (base / "agent").is_dir() and (base / "manifest.json").is_file() and \
            "train" in json.loads((base / "manifest.json").read_text()).get("timings", {}):
        return base
    if base.exists():
        shutil.rmtree(base)
    sets = [a for o in [f"seed={seed}", *overrides] for a in ("--set", o)]
    _sindyrl("train", str(config), "--runs-dir", str(runs), "--name", base.name, "--quiet", *sets,
             log=runs / f"{base.name}.log")
    return base


def run_variant(base: Path, variant: str) -> dict:
    path = base.with_name(f"{base.name}-{variant}")
    summary = path / "summary.json"
    done = summary.is_file() and "sparse_policy_return_mean" in json.loads(summary.read_text())
    if not done:
        if path.exists():
            shutil.rmtree(path)
        shutil.copytree(base, path, ignore=shutil.ignore_patterns("tb", "traces"))
        cfg = yaml.safe_load((path / "config.yaml").read_text())
        cfg.setdefault("distill", {}).update(VARIANTS[variant])
        (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        _sindyrl("distill", str(path), log=path.with_suffix(".log"))
    s = json.loads(summary.read_text())
    timings = json.loads((path / "manifest.json").read_text()).get("timings", {})
    neural, sparse = s["neural_policy_return_mean"], s["sparse_policy_return_mean"]
    return {
        "variant": variant, "seed": s.get("seed"), "neural": neural, "sparse": sparse,
        "ratio": sparse / neural if neural and neural > 0 else None,
        "nnz": s["sparse_policy_nnz"], "params": s["neural_policy_params"],
        "size_ratio": s["sparse_policy_nnz"] / s["neural_policy_params"],
        "sparse_surrogate": s.get("sparse_policy_surrogate_return_mean"),
        "neural_surrogate": s.get("neural_policy_surrogate_return_mean"),
        "distill_seconds": s.get("distill_seconds"), "train_seconds": timings.get("train"),
        "episodes": len(s.get("sparse_policy_returns") or []), "refined": s.get("sparse_policy_refined"),
    }


def markdown(rows: list[dict], command: str, config: str) -> str:
    lines = [
        f"### Sparse policy refinement on `{config}`", "",
        f"Command: `{command}`. One Dyna training per seed, then each distillation variant on a copy of it "
        "(only `distill.*` differs): "
        + "; ".join(f"*{v}* ({', '.join(f'`{k}: {x}`' for k, x in VARIANTS[v].items())})"
                    for v in dict.fromkeys(r["variant"] for r in rows))
        + " (*imitation*: DAgger passes chosen by the surrogate return; *apg*: analytic policy gradients with "
        "the agent's critic at the horizon; *ppo*: the sparse actor; the size budget is 1% of the actor's "
        f"parameters unless said). Real returns over {rows[0]['episodes']} deterministic episodes, the same starts for the network and the "
        "sparse policy. Ratio = sparse / neural real return.", "",
        "| seed | variant | neural | sparse | ratio | nnz / actor params | sparse in the surrogate | "
        "distill / train (s) |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['seed']} | {r['variant']} | {r['neural']:.1f} | {r['sparse']:.1f} | {ratio} | "
                     f"{r['nnz']} / {r['params']} ({100 * r['size_ratio']:.2f}%) | {r['sparse_surrogate']:.1f} | "
                     f"{r['distill_seconds']:.0f} / {r['train_seconds']:.0f} |")
    lines += ["", "Per variant over seeds (mean, and the worst seed's ratio):", ""]
    for v in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == v]
        ratios = [r["ratio"] for r in sel if r["ratio"] is not None]
        lines.append(f"- {v}: sparse {np.mean([r['sparse'] for r in sel]):.1f} against neural "
                     f"{np.mean([r['neural'] for r in sel]):.1f}; ratio mean "
                     f"{np.mean(ratios):.2f}, worst {min(ratios):.2f} ({len(sel)} seeds)" if ratios else f"- {v}: –")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="examples/configs/cartpole_swingup.yaml")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--runs-dir", default="runs/distill_refine")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the training (repeatable)")
    p.add_argument("--out", default=None, help="JSON of every row (default: RUNS_DIR/distill_refine.json)")
    p.add_argument("--write-docs", action="store_true", help="the distill_refine section of docs/benchmarks.md")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    config = Path(args.config)
    if not config.is_file():
        p.error(f"config not found: {config}")
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        base = _trained(config.resolve(), seed, runs.resolve(), args.set)
        for v in variants:
            r = run_variant(base, v)
            rows.append(r)
            print(f"seed {seed} {v}: neural {r['neural']:.1f}, sparse {r['sparse']:.1f} with {r['nnz']} terms "
                  f"(surrogate {r['sparse_surrogate']:.1f}); distill {r['distill_seconds']:.0f} s against train "
                  f"{r['train_seconds']:.0f} s", flush=True)
    out = Path(args.out) if args.out else runs / "distill_refine.json"
    out.write_text(json.dumps(rows, indent=1))
    command = (f"python benchmarks/distill_refine.py --config {args.config} --seeds {args.seeds} --variants "
               f"{','.join(variants)}" + "".join(f" --set {s}" for s in args.set))
    text = markdown(rows, command, args.config)
    print(text)
    if args.write_docs:
        from benchmarks.docs_output import write_results, write_section

        write_section("distill_refine", text)
        figures = {f"{r['variant']}.seed{r['seed']}": {k: r[k] for k in ("neural", "sparse", "ratio", "nnz",
                                                                          "size_ratio", "distill_seconds",
                                                                          "train_seconds")} for r in rows}
        write_results("distill_refine", figures, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
