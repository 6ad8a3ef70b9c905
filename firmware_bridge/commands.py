"""CLI commands of the firmware bridge: ``sindyrl hil`` and ``sindyrl board serve``.

``sindyrl/cli.py`` imports this module and calls :func:`register`. ``sindyrl hil RUN`` runs the ``hil``
stage (:mod:`firmware_bridge.stage`) through :func:`sindyrl.pipeline.run_stage`, which records its figures.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def cmd_hil(args: argparse.Namespace) -> int:
    from sindyrl.pipeline import run_stage
    from sindyrl.runs import Run

    run = Run.open(args.run)
    if args.policy_set is not None:
        return _policy_set_hil(run, args)
    out = run_stage(run, "hil", skip_ok=False, board=args.board, policy=args.policy, episodes=args.episodes,
                    seed=args.seed, timeout=args.timeout, retries=args.retries, real=args.real,
                    domain_guard=args.domain_guard)
    return 0 if out["hil_protocol_errors"] == 0 else 1


def _policy_set_hil(run, args: argparse.Namespace) -> int:
    from sindyrl.pipeline import record_summary

    from .policy_set import PolicySetConfig, load_policy_set, robust_return_bounds, run_policy_set_hil

    if args.board == "onnx":
        raise ValueError("--policy-set runs on the host or an emulated board, not on the ONNX server")
    policies = load_policy_set(args.policy_set)
    bounds = tuple(args.return_bounds) if args.return_bounds else robust_return_bounds(run.path)
    if bounds is None:
        raise ValueError("--policy-set needs --return-bounds LOW HIGH (no robust/adaptation.json in the run)")
    seed = int(run.config.seed) if args.seed is None else int(args.seed)
    episodes = args.episodes if args.episodes is not None else run.config.stages.hil.episodes
    config = PolicySetConfig(len(policies), bounds, horizon=max(episodes, 1), seed=seed)
    out = run_policy_set_hil(policies, lambda: run.make_env(), config, board=args.board,
                             work_dir=run.firmware_dir, episodes=episodes, seed=seed,
                             timeout=args.timeout if args.timeout is not None else 2.0,
                             retries=args.retries if args.retries is not None else 2)
    for k, v in out.items():
        print(f"  {k:38s} {v}")
    record_summary(run, out)
    return 0 if out["hil_policy_set_protocol_errors"] == 0 and out["hil_policy_set_python_replay_agrees"] else 1


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
    h.add_argument("--board", choices=["host", "qemu", "onnx", "mps2-an386", "stm32f405", "microbit"], default="host",
                   help="host: firmware as a local process; qemu (= mps2-an386): Cortex-M4F in QEMU; stm32f405: "
                        "STM32F405 firmware in QEMU's netduinoplus2; microbit: nRF51 Cortex-M0 (no FPU) in QEMU; "
                        "onnx: the ONNX edge server (default: host; docs/boards.md)")
    h.add_argument("--real", choices=["float", "double", "fixed"], default=None,
                   help="arithmetic of the sparse policy's C: fixed (Q-format integers, with an error bound) is the "
                        "default on boards without an FPU, where float is the soft-float baseline; else float")
    h.add_argument("--policy", choices=["sparse", "neural"], default="sparse",
                   help="the distilled sparse policy or the neural agent (default: sparse)")
    h.add_argument("--domain-guard", type=float, default=None, metavar="MARGIN",
                   help="build the board with the domain guard: an observation outside the policy's input bounds "
                        "widened by MARGIN x their width gets ERROR OUT_OF_DOMAIN and the safe action; HIL counts "
                        "them (hil_domain_events)")
    h.add_argument("--episodes", type=int, default=None,
                   help="closed-loop real episodes (default: stages.hil.episodes of the run, 3)")
    h.add_argument("--seed", type=int, default=None, help="first reset seed (default: the run's seed)")
    h.add_argument("--timeout", type=float, default=None, help="seconds to wait for each reply (default: 2, or 10 on an emulated board)")
    h.add_argument("--retries", type=int, default=None, help="resends of an unanswered request (default: 2)")
    h.add_argument("--policy-set", default=None, metavar="DIR",
                   help="put every SparseModel *.json in DIR on the board as one policy set; the board picks "
                        "each episode's policy with EXP3-IX and the host reports the returns (host/qemu boards)")
    h.add_argument("--return-bounds", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="with --policy-set: returns mapped to [0, 1] (default: the robust stage's bounds)")
    h.set_defaults(func=cmd_hil)

    b = subparsers.add_parser("board", help="edge board tools")
    bsub = b.add_subparsers(dest="board_command", required=True)
    s = bsub.add_parser(
        "serve", help="serve an exported ONNX policy over the sindyrl serial protocol",
        description="A small process for a Linux edge board (onnxruntime, numpy, pyserial, cobs only).",
    )
    add_arguments(s)
    s.set_defaults(func=cmd_board_serve)
