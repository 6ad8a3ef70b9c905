"""Watch a training run live: the Dyna loop's per-iteration scalars as TensorBoard events under ``<run>/tb/``.

    tensorboard --logdir runs/<name>/tb

:class:`DynaBoard` writes ``tb/dyna`` (real steps, real-env returns mean and min, the surrogate's own estimate,
model errors, sizes), and :func:`agent_log_dir` is the ``tensorboard_log`` for the SB3 agent (``tb/agent``), so
both appear in one TensorBoard. Without the ``tensorboard`` package it warns once and writes nothing: logging
never stops a run.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

__all__ = ["DynaBoard", "agent_log_dir", "tensorboard_available", "SCALARS"]

#: metrics.csv / summary key -> TensorBoard tag. Steps are the Dyna iteration; ``returns_vs_real_steps/*`` repeat
#: the returns against the real steps the models were fitted on, the x axis the report uses.
SCALARS = {
    "real_steps_fit": "real_steps/fit",
    "real_steps_collect": "real_steps/collect",
    "real_steps_eval": "real_steps/eval",
    "real_steps_total": "real_steps/total",
    "surrogate_steps": "surrogate/steps",
    "eval_return_mean": "return/real_mean",
    "eval_return_min": "return/real_min",
    "eval_return_std": "return/real_std",
    "surrogate_return_mean": "return/surrogate_mean",
    "surrogate_return_min": "return/surrogate_min",
    "model_one_step_error": "model/one_step_error",
    "model_rollout_error": "model/rollout_error",
    "reward_error": "model/reward_error",
    "dynamics_nnz": "model/dynamics_nnz",
    "dynamics_members": "model/dynamics_members",
    "wall_seconds": "time/wall_seconds",
}


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def agent_log_dir(run_path: str | Path, enabled: bool = True) -> str | None:
    """``tensorboard_log`` for the SB3 agent (``<run>/tb/agent``), or None when disabled or not installed."""
    if not enabled or not tensorboard_available():
        return None
    return str(Path(run_path) / "tb" / "agent")


class DynaBoard:
    """TensorBoard writer of the Dyna loop's per-iteration scalars.

    Parameters
    ----------
    run_path : str or Path
        The run directory; events go to ``<run_path>/tb/dyna``.
    enabled : bool, default True
        ``agent.tensorboard`` of the config; False makes every call a no-op.

    Use as a context manager, or call :meth:`close`. A resumed run appends to the same directory, and the
    iteration numbers continue, so its curves continue too.
    """

    def __init__(self, run_path: str | Path, enabled: bool = True):
        self.log_dir = Path(run_path) / "tb" / "dyna"
        self._writer = None
        if not enabled:
            return
        if not tensorboard_available():
            warnings.warn("agent.tensorboard: the tensorboard package is not installed; no TensorBoard logs "
                          "(pip install tensorboard)", stacklevel=2)
            return
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def log_iteration(self, row: dict, iteration: int | None = None) -> list[str]:
        """Write the known scalars of one metrics row (a ``metrics.csv`` row, plus any summary-style keys).

        ``iteration`` defaults to ``row["iteration"]``. Missing, None and non-finite values are left out (a
        diverged rollout error is not a point on the curve). Returns the tags written; flushes, so a
        running TensorBoard shows the iteration at once.
        """
        if self._writer is None:
            return []
        step = int(row["iteration"] if iteration is None else iteration)
        written = []
        for key, tag in SCALARS.items():
            v = _finite(row.get(key))
            if v is None:
                continue
            self._writer.add_scalar(tag, v, step)
            written.append(tag)
        x = _finite(row.get("real_steps_fit"))
        if x is not None:
            for key in ("eval_return_mean", "eval_return_min", "surrogate_return_mean"):
                v = _finite(row.get(key))
                if v is not None:
                    tag = f"returns_vs_real_steps/{key.replace('_return', '')}"
                    self._writer.add_scalar(tag, v, int(x))
                    written.append(tag)
        self._writer.flush()
        return written

    def log_final(self, summary: dict, iteration: int) -> list[str]:
        """The final evaluation (``eval_return_mean/min`` of the summary) as ``final/*`` at the last iteration."""
        if self._writer is None:
            return []
        written = []
        for key in ("eval_return_mean", "eval_return_min", "real_steps_collect", "real_steps_eval",
                    "surrogate_return_mean", "surrogate_return_min"):
            v = _finite(summary.get(key))
            if v is not None:
                self._writer.add_scalar(f"final/{key}", v, int(iteration))
                written.append(f"final/{key}")
        self._writer.flush()
        return written

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> DynaBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _finite(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
