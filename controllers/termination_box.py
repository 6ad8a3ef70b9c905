"""Episode ends as a state box for the controllers: MPC keeps its predicted states inside, LQR reports its equilibrium.

An episode that ends where a state leaves an interval (InvertedPendulum-v5: the
pole angle leaves [-0.2, 0.2]) is a box ``low <= x <= high`` on the states
after each step. :func:`termination_box` finds the box of a run, in this order:

1. the box form of a built-in termination (:data:`BUILTIN_BOXES`);
2. the learned :class:`sindyrl.termination.BoxTermination` of the run (``models/termination.json``);
3. otherwise, when the run has episode ends (a built-in or ``"module:function"`` termination
   without a box form, or an automatic one) and its real data hold ``terminated`` flags, a
   ``BoxTermination`` fitted to them here.

A learned threshold lies halfway between the last state where an episode went
on and the first where one ended, so the true edge can be anywhere in between:
a learned box is tightened to the data's last states where episodes went on
(an MPC that rides the edge of the box must not cross the real one). Built-in
boxes are exact. ``env.termination: none`` means no box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sindyrl.termination import BUILTIN_TERMINATIONS, BoxTermination

__all__ = ["TerminationBox", "termination_box", "box_from_conditions", "tighten_to_data", "BUILTIN_BOXES"]

#: box forms of the built-in terminations that have one: (state index, "above" | "below", threshold)
BUILTIN_BOXES: dict[str, list[tuple[int, str, float]]] = {
    "InvertedPendulum-v5": [(1, "above", 0.2), (1, "below", -0.2)],
    "inverted_pendulum": [(1, "above", 0.2), (1, "below", -0.2)],
}


@dataclass
class TerminationBox:
    """The states where episodes go on: ``low <= x <= high`` (±inf where a state is free)."""

    low: np.ndarray
    high: np.ndarray
    #: where it comes from, for people ("learned: terminated when th > 0.2", "built-in InvertedPendulum-v5")
    source: str

    def contains(self, x: Sequence[float]) -> bool:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return bool(np.all(x >= self.low) and np.all(x <= self.high))

    def describe(self, names: Sequence[str]) -> str:
        parts = []
        for i, (a, b) in enumerate(zip(self.low, self.high, strict=True)):
            if np.isfinite(a) and np.isfinite(b):
                parts.append(f"{a:.4g} <= {names[i]} <= {b:.4g}")
            elif np.isfinite(a):
                parts.append(f"{names[i]} >= {a:.4g}")
            elif np.isfinite(b):
                parts.append(f"{names[i]} <= {b:.4g}")
        return ", ".join(parts) + f" ({self.source})"


def box_from_conditions(conditions: Sequence[tuple[int, str, float]], n_x: int, source: str) -> TerminationBox:
    """The box where none of ``conditions`` (``x[k] > thr`` for "above", ``x[k] < thr`` for "below") holds."""
    low, high = np.full(n_x, -np.inf), np.full(n_x, np.inf)
    for k, side, thr in conditions:
        if not 0 <= int(k) < n_x or side not in ("above", "below"):
            raise ValueError(f"termination condition {(k, side, thr)} does not fit a state of size {n_x}")
        if side == "above":
            high[k] = min(high[k], float(thr))
        else:
            low[k] = max(low[k], float(thr))
    return TerminationBox(low, high, source)


def tighten_to_data(box: TerminationBox, next_obs: np.ndarray, terminated: np.ndarray) -> TerminationBox:
    """``box`` with each finite bound moved in to the furthest state, on its side, where an episode went on."""
    alive = np.asarray(next_obs, dtype=np.float64)[~np.asarray(terminated, dtype=bool)]
    low, high = box.low.copy(), box.high.copy()
    for k in range(len(low)):
        v = alive[:, k]
        if np.isfinite(high[k]) and np.any(v <= high[k]):
            high[k] = v[v <= high[k]].max()
        if np.isfinite(low[k]) and np.any(v >= low[k]):
            low[k] = v[v >= low[k]].min()
    return TerminationBox(low, high, box.source + "; tightened to the last states where episodes went on")


def termination_box(run) -> TerminationBox | None:
    """The episode-end box of ``run`` (a :class:`sindyrl.runs.Run`), or None when its episodes do not end in a box."""
    spec = run.config.env.termination
    if spec is not None and spec.lower() == "none":
        return None
    n_x = len(run.obs_names)
    for key in (spec, run.config.env.id):
        if key in BUILTIN_BOXES:
            return box_from_conditions(BUILTIN_BOXES[key], n_x, f"built-in {key}")
    try:
        buf = run.load_data()
    except FileNotFoundError:
        buf = None
    learned = run.load_termination()
    if isinstance(learned, BoxTermination) and learned.conditions:
        box = box_from_conditions(learned.conditions, n_x, learned.describe())
        return box if buf is None else tighten_to_data(box, buf.next_obs, buf.terminated)
    if buf is None or not np.any(buf.terminated):
        return None
    known = spec if spec is not None and spec.lower() != "learned" else (
        run.config.env.id if run.config.env.id in BUILTIN_TERMINATIONS else None)
    rule = BoxTermination.fit(buf.next_obs, buf.terminated, run.obs_names)
    if not rule.conditions:
        return None
    what = f"box fitted to the data's terminated flags ({known} has no box form)" if known else rule.describe()
    return tighten_to_data(box_from_conditions(rule.conditions, n_x, what), buf.next_obs, buf.terminated)
