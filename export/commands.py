"""``sindyrl export RUN [--what ...] [--quantize]``: the CLI face of the ``export`` stage (:mod:`export.stage`).

Flags override the run config's ``stages.export`` options; the figures go to ``summary.json`` through
:func:`sindyrl.pipeline.run_stage`.
"""

from __future__ import annotations

import argparse

__all__ = ["register", "cmd_export"]

_WHAT = ("policy", "sparse-policy", "dynamics", "reward", "all")


def cmd_export(args: argparse.Namespace) -> int:
    from sindyrl.pipeline import run_stage
    from sindyrl.runs import Run

    run = Run.open(args.run)
    if args.c_library is not None:
        from firmware_bridge.library import write_c_library

        lib = write_c_library(run.load_model("policy"), args.c_library)
        print(f"[export] C library of the sparse policy ({lib.model_hash}) in {lib.directory}: "
              f"{lib.header.name}, {lib.source.name}, README.md, library.json, library.properties, examples/host/main.c")
    out = run_stage(run, "export", skip_ok=False, what=args.what, quantize=args.quantize, n_states=args.n_states,
                    seed=args.seed, tol=args.tol, n_episodes=args.episodes)
    if "onnx_parity_max_abs" in out:
        tol = args.tol if args.tol is not None else run.config.stages.export.tol
        print(f"[export] worst parity error of {run.export_dir}/*.onnx: {out['onnx_parity_max_abs']:.3g} "
              f"(tolerance {tol:g}); summary: {run.path / 'summary.json'}")
    return 0


def _int_at_least(lowest: int):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lowest}, got {s!r}") from None
        if v < lowest:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lowest}, got {v}")
        return v

    return parse


def register(subparsers) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export", help="export a run's policies and models to ONNX, checked against Python with onnxruntime",
        description="Write RUN/export/*.onnx (neural policy, sparse policy, dynamics, reward). Each file is run with "
                    "onnxruntime on states sampled from the run's data bounds and refused if it differs from the "
                    "Python reference by more than --tol; sizes and parity errors go into summary.json.",
    )
    p.add_argument("run", help="run directory")
    # defaults (None): the run config's stages.export options
    p.add_argument("--what", choices=_WHAT, default=None,
                   help="what to export (default: stages.export.what, all: every artifact the run has)")
    p.add_argument("--quantize", action="store_true", default=None,
                   help="also write policy.int8.onnx (int8 dynamic quantisation) and compare its real-env return")
    p.add_argument("--n-states", type=_int_at_least(0), default=None,
                   help="parity states per file (default 10000; 0 skips the check)")
    p.add_argument("--tol", type=float, default=None, help="largest accepted max-abs parity error (default 1e-5)")
    p.add_argument("--seed", type=int, default=None, help="seed of parity states and evaluation (default: run seed)")
    p.add_argument("--episodes", type=_int_at_least(1), default=None,
                   help="real episodes of each policy for the float/int8 return comparison (default: "
                        "stages.export.n_episodes, 5)")
    p.add_argument("--c-library", default=None, metavar="DIR",
                   help="also write the sparse policy as a drop-in C99 library folder (sindyrl_policy.h/.c, README, "
                        "PlatformIO library.json, Arduino library.properties, a host example)")
    p.set_defaults(func=cmd_export)
