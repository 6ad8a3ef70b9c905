"""``sindyrl`` command line: a thin layer over the Python API.

    sindyrl run CONFIG             the whole pipeline (train, distill, export, control, hil, report)
    sindyrl train CONFIG           the Dyna loop only;  sindyrl train --resume RUN  continues a run
    sindyrl fit CONFIG             collect random data, fit the sparse models, print the equations
    sindyrl distill RUN            sparse policy from the run's neural policy
    sindyrl report RUN             report.html / report.md of a run
    sindyrl robust CONFIG|RUN      the robust stage (training the run first when given a config)
    sindyrl sweep CONFIG           seeds x settings, each trial a run directory (local pool or Ray Tune)

Other packages add their own commands (export, control, board, hil). Every
single-stage command runs its stage through :func:`sindyrl.pipeline.run_stage`,
which records the figures in ``summary.json``; a stage that cannot apply fails
the command with the reason.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

# packages that add commands: module -> register(subparsers)
_PLUGINS = ("export.commands", "controllers.commands", "firmware_bridge.commands", "sindyrl.compare")


def _echo(quiet: bool):
    return (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))


def cmd_run(args) -> int:
    from .config import load_config
    from .pipeline import run_pipeline
    from .runs import Run

    cfg = load_config(args.config, args.set)
    if args.resume:
        run = Run.open(args.resume)
    else:
        run = Run.create(cfg, root=args.runs_dir, name=args.name)
    echo = _echo(args.quiet)
    echo(f"sindyrl run: {args.config} -> {run.path}")
    skip = [s for s in (args.skip or "").split(",") if s]
    summary = run_pipeline(run.config, run, skip=skip, echo=echo, progress_bar=not args.quiet)
    _print_summary(run, summary)
    return 0


def _print_summary(run, summary: dict) -> None:
    keys = ["real_steps_collect", "real_steps_eval", "real_steps_total", "eval_return_mean", "eval_return_std",
            "neural_policy_return_mean", "sparse_policy_return_mean", "neural_policy_params", "sparse_policy_nnz",
            "onnx_parity_max_abs", "control_mpc_return_mean", "control_lqr_return_mean", "hil_return_mean"]
    print("\n=== summary")
    for k in keys:
        if k in summary and summary[k] is not None:
            v = summary[k]
            print(f"  {k:28s} {v:.4g}" if isinstance(v, float) else f"  {k:28s} {v}")
    print(f"\nartifacts in {run.path}/")
    for sub in ("config.yaml", "data/real.npz", "models", "agent/agent.zip", "export", "firmware", "plots",
                "metrics.csv", "summary.json", "report.html"):
        if (run.path / sub).exists():
            print(f"  {run.path / sub}")
    for stage, reason in (summary.get("skipped") or {}).items():
        print(f"  skipped: {stage} ({reason})")
    if "report_html" in summary:
        print(f"\nreport: {summary['report_html']}")


def cmd_train(args) -> int:
    from .config import load_config
    from .pipeline import run_stage
    from .runs import Run

    if args.resume:
        run = Run.open(args.resume)
        print(f"sindyrl train: resuming {run.path}", flush=True)
    else:
        if not args.config:
            raise ValueError("sindyrl train: give a CONFIG or --resume RUN")
        run = Run.create(load_config(args.config, args.set), root=args.runs_dir, name=args.name)
        print(f"sindyrl train: {args.config} -> {run.path}", flush=True)
    run_stage(run, "train", echo=_echo(args.quiet), skip_ok=False, progress_bar=not args.quiet)
    _print_summary(run, run.read_summary())
    return 0


def cmd_fit(args) -> int:
    from .config import load_config
    from .data import TransitionBuffer, collect
    from .dyna import fit_models
    from .envs import env_spec, make_env

    cfg = load_config(args.config, args.set)
    spec = env_spec(cfg.env)
    if args.data:
        buf = TransitionBuffer.load(args.data)
        print(f"[data] {len(buf)} transitions from {args.data}")
    else:
        env = make_env(cfg.env, seed=cfg.seed)
        buf = collect(env, cfg.collect.random_steps, seed=cfg.seed, max_episode_steps=cfg.collect.random_episode_steps)
        env.close()
        print(f"[collect] {len(buf)} random real steps from {cfg.env.id}")
    if (buf.n_obs, buf.n_act) != (len(spec.obs_names), len(spec.action_names)):
        raise ValueError(f"{args.data}: data has {buf.n_obs} observations/{buf.n_act} actions, "
                         f"{cfg.env.id} has {len(spec.obs_names)}/{len(spec.action_names)}")
    dyn, reward, scores = fit_models(cfg, buf, spec, cfg.seed)
    print(f"dynamics ({dyn.model_.nnz} nonzero terms, {dyn.model_.n_models} ensemble members):")
    for line in dyn.equations():
        print("  " + line)
    if not cfg.reward.known_spec:
        print("reward:")
        for line in reward.equations():
            print("  " + line)
    for k, v in scores.items():
        if k.endswith("_selection"):
            print(v)
        else:
            print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
    if args.out:
        out = Path(args.out)
        dyn.model_.to_json(out / "dynamics.json")
        if not cfg.reward.known_spec:
            reward.model_.to_json(out / "reward.json")
        buf.save(out / "real.npz")
        print(f"models and data written to {out}/")
    return 0


def cmd_distill(args) -> int:
    from .pipeline import run_stage
    from .runs import Run

    run_stage(Run.open(args.run), "distill", echo=_echo(False), skip_ok=False)
    return 0


def cmd_robust(args) -> int:
    from .config import load_config
    from .pipeline import run_stage
    from .runs import Run

    target = Path(args.target)
    if target.is_dir():
        run = Run.open(target)
    elif target.is_file():
        run = Run.create(load_config(target), root=args.runs_dir, name=args.name)
        print(f"sindyrl robust: training {target} -> {run.path}", flush=True)
        run_stage(run, "train", echo=_echo(False), skip_ok=False, progress_bar=False)
    else:
        raise ValueError(f"sindyrl robust: {target} is neither a run directory nor a config file")
    flags = {k: getattr(args, k) for k in ("epsilon", "iterations", "attacker_steps", "policy_steps", "eval_episodes",
                                           "bandit_episodes", "segment", "seed")}
    run_stage(run, "robust", echo=_echo(False), skip_ok=False, **flags)
    print(f"\npayoff matrix: {run.path / 'robust' / 'payoff.csv'}\nplots: {run.plots_dir / 'robust_payoff.png'}, "
          f"{run.plots_dir / 'robust_regret.png'}")
    return 0


def cmd_sweep(args) -> int:
    from .pipeline import sweep

    stages = [s for s in args.stages.split(",") if s]
    out = sweep(args.config, seeds=args.seeds, sets=args.set, backend=args.backend, workers=args.workers,
                address=args.address, runs_dir=args.runs_dir, name=args.name, stages=stages,
                echo=lambda *a: print(*a, flush=True))
    print(f"sweep directory: {out['path']}  (summary.md, summary.csv, trials.csv, sweep.png)")
    return 1 if out["failed"] else 0


def cmd_report(args) -> int:
    from .report import write_report
    from .runs import Run

    paths = write_report(Run.open(args.run))
    print(f"report: {paths['html']}\n        {paths['md']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sindyrl", description="Interpretable model-based control with sparse models.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="run the whole pipeline on a config")
    r.add_argument("config", help="YAML config (see examples/configs)")
    r.add_argument("--name", help="run name (default: config name + timestamp)")
    r.add_argument("--runs-dir", default="runs", help="parent directory of run directories (default: runs)")
    r.add_argument("--resume", metavar="RUN", help="continue an interrupted run directory")
    r.add_argument("--skip", help="comma-separated stages to skip (train,distill,export,control,hil,robust,report)")
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("train", help="the Dyna loop only (collect, fit, train in the surrogate)")
    t.add_argument("config", nargs="?", help="YAML config")
    t.add_argument("--resume", metavar="RUN", help="continue this run directory")
    t.add_argument("--name")
    t.add_argument("--runs-dir", default="runs")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    t.set_defaults(func=cmd_train)

    f = sub.add_parser("fit", help="fit the sparse models only and print their equations")
    f.add_argument("config")
    f.add_argument("--data", help="transitions .npz (default: collect config.collect.random_steps random steps)")
    f.add_argument("--out", help="write models JSON and data here")
    f.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    f.set_defaults(func=cmd_fit)

    d = sub.add_parser("distill", help="distil a run's neural policy into a sparse policy")
    d.add_argument("run", help="run directory")
    d.set_defaults(func=cmd_distill)

    rp = sub.add_parser("report", help="write report.html and report.md for a run")
    rp.add_argument("run", help="run directory")
    rp.set_defaults(func=cmd_report)

    rb = sub.add_parser(
        "robust", help="non-dominated robust policies against observation attacks, and bandit selection at test time",
        description="Train attackers and robust policies on the run's surrogate, write the payoff matrix "
                    "(robust/payoff.csv, plots/robust_payoff.png) and evaluate EXP3-IX / EXP3.S selection "
                    "under a switching attack schedule on the real env (plots/robust_regret.png). "
                    "Options: stages.robust in the config; flags override them.")
    rb.add_argument("target", metavar="CONFIG|RUN", help="a run directory, or a config to train first")
    rb.add_argument("--name", help="run name when training from a config")
    rb.add_argument("--runs-dir", default="runs", help="parent of new run directories (default: runs)")
    rb.add_argument("--epsilon", type=float, help="attack radius in units of the data's per-dimension spread")
    rb.add_argument("--iterations", type=int, help="at most this many new policies (K)")
    rb.add_argument("--attacker-steps", type=int, help="surrogate steps per attacker training")
    rb.add_argument("--policy-steps", type=int, help="surrogate steps per robust policy training")
    rb.add_argument("--eval-episodes", type=int, help="real episodes per payoff cell")
    rb.add_argument("--bandit-episodes", type=int, help="length of the switching schedule (episodes)")
    rb.add_argument("--segment", type=int, help="episodes per attack in the schedule")
    rb.add_argument("--seed", type=int)
    rb.set_defaults(func=cmd_robust)

    sw = sub.add_parser("sweep", help="run a grid of seeds x settings (local processes or Ray Tune)",
                        description="Seed and parameter sweeps: a grid of ordinary run directories, run on this "
                                    "machine or a Ray cluster (see sindyrl.sweep).")
    sw.add_argument("config", help="base YAML config")
    sw.add_argument("--seeds", type=int, default=1, help="seeds per setting (default 1)")
    sw.add_argument("--set", action="append", metavar="KEY=V1,V2", help="a grid axis (repeatable)")
    sw.add_argument("--backend", choices=("local", "ray"), default="local")
    sw.add_argument("--address", help="Ray cluster address (ray backend; default: start a local Ray instance)")
    sw.add_argument("--workers", type=int, default=1, help="trials at the same time (default 1)")
    sw.add_argument("--runs-dir", default="runs", help="parent of the sweep directory (default: runs)")
    sw.add_argument("--name", help="sweep directory name (default: <config stem>-sweep; reuse it to resume)")
    sw.add_argument("--stages", default="train", help="comma-separated pipeline stages per trial (default: train)")
    sw.set_defaults(func=cmd_sweep)

    for mod in _PLUGINS:
        try:
            m = importlib.import_module(mod)
        except ImportError as e:
            if getattr(e, "name", None) and mod.startswith(e.name):
                continue  # package not present in this installation
            raise
        m.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .runs import limit_threads

    limit_threads()  # $SINDYRL_THREADS, else 1
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
