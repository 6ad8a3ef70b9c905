"""``sindyrl control RUN --method lqr|mpc``: the CLI face of the ``control`` stage (:mod:`controllers.stage`).

Flags override the run config's ``stages.control`` options; the figures go to ``summary.json`` through
:func:`sindyrl.pipeline.run_stage`. A controller that cannot apply (no target state and no steady state of the
learned model in the data box) fails the command.
"""

from __future__ import annotations

import argparse

# the choices of controllers.stage, repeated here so that registering the command imports nothing heavy
METHODS = ("lqr", "mpc")
MPC_SOLVERS = ("ipopt", "sqpmethod", "c")
COSTS = ("auto", "reward", "quadratic")

__all__ = ["register", "cmd_control"]


def cmd_control(args: argparse.Namespace) -> int:
    from sindyrl.pipeline import run_stage
    from sindyrl.runs import Run

    run = Run.open(args.run)
    run_stage(run, "control", skip_ok=False, methods=[args.method], horizon=args.horizon, n_episodes=args.episodes,
              solver=args.solver, cost=args.cost, target=args.target, seed=args.seed,
              compare=False if args.no_compare else None)
    print(f"[control] wrote {run.path / 'control.md'} and {run.path / 'control.json'}")
    return 0


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def register(subparsers) -> None:
    """Add the ``control`` subcommand."""
    p = subparsers.add_parser(
        "control", help="LQR or MPC on a run's learned model, evaluated on the real env",
        description="Design an LQR or MPC on RUN's learned dynamics, evaluate it on the real env (same reset seeds "
                    "as the RL evaluation) and write control.json / control.md and control_<method>_* summary keys.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--method", choices=METHODS, default="mpc", help="controller (default mpc)")
    # defaults (None): the run config's stages.control options
    p.add_argument("--horizon", type=_positive_int, default=None, help="MPC horizon in steps (default 30)")
    p.add_argument("--episodes", type=_positive_int, default=None,
                   help="real episodes (default: stages.control.n_episodes of the run, 5)")
    p.add_argument("--solver", choices=MPC_SOLVERS, default=None,
                   help="MPC solver; 'c' builds and runs the generated sqpmethod/qrqp C (default ipopt)")
    p.add_argument("--cost", choices=COSTS, default=None,
                   help="MPC stage cost: negative reward or quadratic tracking of --target (default auto)")
    p.add_argument("--target", type=float, nargs="+", default=None,
                   help="target state, one value per observation (LQR equilibrium guess, tracking target)")
    p.add_argument("--seed", type=int, default=None, help="first reset seed (default: the run's seed)")
    p.add_argument("--no-compare", action="store_true", help="do not add the neural/sparse policies to the table")
    p.set_defaults(func=cmd_control)
