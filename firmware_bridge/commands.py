"""CLI commands of the firmware bridge: ``sindyrl hil`` and ``sindyrl board serve``.

``sindyrl/cli.py`` imports this module and calls :func:`register`.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def cmd_hil(args: argparse.Namespace) -> int:
    from sindyrl.runs import Run

    from .hil import run_hil

    run = Run.open(args.run)
    report = run_hil(
        run, board=args.board, policy=args.policy, episodes=args.episodes, seed=args.seed,
        timeout=args.timeout, retries=args.retries,
    )
    return 0 if report.protocol_errors == 0 else 1


def cmd_board_serve(args: argparse.Namespace) -> int:
    from .serve import run_from_args

    return run_from_args(args)


def register(subparsers) -> None:
    """Add ``hil`` and ``board`` to the ``sindyrl`` command line."""
    from .serve import add_arguments

    h = subparsers.add_parser(
        "hil", help="hardware-in-the-loop: run the policy on a board against the real env",
        description="Generate C for the run's policy, build the firmware, start the board and run closed-loop "
                    "episodes with the actions computed on the board. Results go to the screen and to "
                    "summary.json (hil_* keys).",
    )
    h.add_argument("run", help="run directory")
    h.add_argument("--board", choices=["host", "qemu", "onnx"], default="host",
                   help="host: firmware as a local process; qemu: Cortex-M4F (mps2-an386) in QEMU; "
                        "onnx: the ONNX edge server (default: host)")
    h.add_argument("--policy", choices=["sparse", "neural"], default="sparse",
                   help="the distilled sparse policy or the neural agent (default: sparse)")
    h.add_argument("--episodes", type=int, default=5, help="closed-loop episodes (default: 5)")
    h.add_argument("--seed", type=int, default=None, help="first reset seed (default: the run's seed)")
    h.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each reply (default: 2)")
    h.add_argument("--retries", type=int, default=2, help="resends of an unanswered request (default: 2)")
    h.set_defaults(func=cmd_hil)

    b = subparsers.add_parser("board", help="edge board tools")
    bsub = b.add_subparsers(dest="board_command", required=True)
    s = bsub.add_parser(
        "serve", help="serve an exported ONNX policy over the sindyrl serial protocol",
        description="A small process for a Linux edge board (onnxruntime, numpy, pyserial, cobs only).",
    )
    add_arguments(s)
    s.set_defaults(func=cmd_board_serve)
