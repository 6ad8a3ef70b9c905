"""The ``hil`` stage of ``sindyrl run`` (and ``sindyrl hil RUN``): the run's policy on a board, closed loop.

Options: ``stages.hil`` (:class:`sindyrl.stage_options.HILOptions`). The stage
picks the board (QEMU when the ARM toolchain and QEMU are installed, else the
host build) and the policy (the sparse one when the run has it, else the
neural agent), runs :func:`firmware_bridge.hil.run_hil` and returns the ``hil_``
figures and ``real_steps_hil``. It is skipped when the run has no policy at
all, or when ``board: auto`` finds no C toolchain for any board.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sindyrl.stage_options import HILOptions, StageSkipped

from .build import missing_tools
from .hil import default_board, run_hil

__all__ = ["stage", "HILOptions"]


def _policy(run: Any, policy: str) -> str:
    if policy != "auto":
        return policy  # asked for by name: a missing file is an error, not a skip
    if Path(run.model_path("policy")).is_file():
        return "sparse"
    if Path(run.agent_path).is_file():
        return "neural"
    raise StageSkipped("no policy to put on a board (no models/policy.json and no agent/agent.zip)")


def _board(board: str) -> str:
    if board != "auto":
        return board
    chosen = default_board()
    missing = missing_tools("host") if chosen == "host" else []
    if missing:
        raise StageSkipped(f"no C toolchain for a board: the host build needs {', '.join(missing)} and the "
                           "Cortex-M4F needs gcc-arm-none-eabi and qemu-system-arm")
    return chosen


def _measured_returns(run: Any, policy: str, seed: int | None) -> list[float] | None:
    """The policy's real returns from reset seeds ``seed, seed + 1, ...`` that an earlier stage recorded."""
    s = run.read_summary()
    if seed is not None and int(seed) != int(s.get("seed", run.config.seed)):
        return None
    key = "sparse_policy_returns" if policy == "sparse" else "eval_returns"
    got = s.get(key)
    return [float(v) for v in got] if got else None


def stage(run: Any, echo: Callable[..., None] = print, **options: Any) -> dict:
    """The ``hil`` stage: :func:`~firmware_bridge.hil.run_hil` with the ``stages.hil`` options; the ``hil_`` figures."""
    o = HILOptions.from_dict(options)
    policy = _policy(run, o.policy)
    board = _board(o.board)
    extra = {k: getattr(o, k) for k in ("max_steps", "timeout", "retries", "bench_calls", "onnx_path", "real",
                                        "domain_guard")}
    if extra["onnx_path"] is None:
        del extra["onnx_path"]  # run_hil picks the run's export
    ref = _measured_returns(run, policy, o.seed)
    if ref is not None:
        echo(f"[hil] Python reference: the {policy} policy's returns from the same reset seeds, measured in an "
             "earlier stage (no real episode spent on it again)")
    episodes = o.episodes if o.episodes is not None else run.confirm_episodes()
    report = run_hil(run, board=board, policy=policy, episodes=episodes, seed=o.seed, echo=echo,
                     reference_returns=ref, **extra)
    return {**report.summary(), "real_steps_hil": report.real_steps}
