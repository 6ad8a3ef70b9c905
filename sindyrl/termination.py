"""Episode ends for the surrogate: a known termination function, or a box rule learned from recorded flags.

Every termination is a callable ``termination(obs, action, next_obs) -> (N,) bool`` on batches, true where
the *task* ended (the pole fell, the robot is unhealthy): the surrogate then reports ``terminated`` (no
bootstrap), which is not the same as the ``truncated`` it reports at the horizon or where the model leaves
its domain.

Sources, in the order :func:`resolve_termination` tries them:

1. ``env.termination: "module:function"`` or a built-in name (the same env ids that have a built-in reward);
2. a built-in termination of the env id;
3. a :class:`BoxTermination` learned from the ``terminated`` flags of the real data, when there are any:
   the smallest set of "state k above/below a threshold" conditions that separates the states where
   episodes ended from the states where they went on. A person can read it, MPC can use it as a state
   constraint, and it is checked on held-out episodes.

``env.termination: none`` turns terminations off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TerminationFn", "KnownTermination", "BoxTermination", "known_termination", "resolve_termination",
           "BUILTIN_TERMINATIONS"]

TerminationFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _inverted_pendulum(obs, action, next_obs):
    """InvertedPendulum-v5: the pole angle (observation 1) leaves [-0.2, 0.2], or the state is not finite."""
    return ~np.all(np.isfinite(next_obs), axis=1) | (np.abs(next_obs[:, 1]) > 0.2)


def double_pendulum_tip(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """InvertedDoublePendulum-v5: (x, height) of the tip from (x, sin q1, sin q2, cos q1, cos q2, ...)."""
    x, s1, s2, c1, c2 = (obs[:, i] for i in range(5))
    # two 0.6 m links; the second link's angle is relative to the first
    return x + 0.6 * s1 + 0.6 * (s1 * c2 + c1 * s2), 0.6 * c1 + 0.6 * (c1 * c2 - s1 * s2)


def _inverted_double_pendulum(obs, action, next_obs):
    """InvertedDoublePendulum-v5: the tip's height falls to 1 m or below."""
    _, height = double_pendulum_tip(next_obs)
    return ~np.all(np.isfinite(next_obs), axis=1) | (height <= 1.0)


#: Built-in terminations, by env id (the envs with a built-in reward that ends episodes).
BUILTIN_TERMINATIONS: dict[str, TerminationFn] = {
    "InvertedPendulum-v5": _inverted_pendulum,
    "inverted_pendulum": _inverted_pendulum,
    "InvertedDoublePendulum-v5": _inverted_double_pendulum,
    "inverted_double_pendulum": _inverted_double_pendulum,
}


class KnownTermination:
    """A known termination function, batched: ``termination(obs, action, next_obs) -> (N,) bool``."""

    def __init__(self, fn: TerminationFn, name: str = "known"):
        self.fn = fn
        self.name = name

    def __call__(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            out = np.asarray(self.fn(np.atleast_2d(obs), np.atleast_2d(action), np.atleast_2d(next_obs)))
        if out.dtype != bool and not np.issubdtype(out.dtype, np.integer):
            raise TypeError(f"termination {self.name!r} must return booleans, got {out.dtype}")
        return out.astype(bool).reshape(-1)

    def describe(self) -> str:
        return f"known ({self.name})"


def known_termination(spec: str) -> KnownTermination:
    """A built-in termination by name or env id, or ``"module:function"``."""
    from .envs import known_function

    return KnownTermination(known_function(spec, BUILTIN_TERMINATIONS, "env.termination"), spec)


@dataclass
class BoxTermination:
    """``terminated`` where any listed state leaves its interval: ``x[k] > high`` or ``x[k] < low``.

    Fitted on the real data's next states: the conditions are chosen greedily, each the one that explains
    most of the still-unexplained terminal states, with the threshold halfway between the last state where
    an episode went on and the first where one ended (a maximum-margin cut along that state).
    """

    names: list[str]
    #: (state index, "above" | "below", threshold)
    conditions: list[tuple[int, str, float]] = field(default_factory=list)
    #: terminal states of the fitting data the rule explains, and non-terminal ones it flags wrongly
    recall_: float = float("nan")
    false_alarm_: float = float("nan")

    def __call__(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(next_obs)
        out = ~np.all(np.isfinite(x), axis=1)
        with np.errstate(invalid="ignore"):
            for k, side, thr in self.conditions:
                out |= (x[:, k] > thr) if side == "above" else (x[:, k] < thr)
        return out

    @classmethod
    def fit(cls, next_obs: np.ndarray, terminated: np.ndarray, names: Sequence[str],
            max_conditions: int = 8) -> BoxTermination:
        X = np.asarray(next_obs, dtype=np.float64)
        t = np.asarray(terminated, dtype=bool)
        names = list(names)
        if X.ndim != 2 or len(X) != len(t) or X.shape[1] != len(names):
            raise ValueError(f"BoxTermination.fit: next_obs {X.shape}, terminated {t.shape}, {len(names)} names")
        alive, dead = X[~t], X[t]
        if len(dead) == 0 or len(alive) == 0:
            return cls(names, [], recall_=float("nan"), false_alarm_=0.0)
        lo, hi = alive.min(0), alive.max(0)
        todo = np.ones(len(dead), dtype=bool)
        conditions: list[tuple[int, str, float]] = []
        for _ in range(max_conditions):
            best = None
            for k in range(X.shape[1]):
                for side, beyond in (("above", dead[:, k] > hi[k]), ("below", dead[:, k] < lo[k])):
                    gain = int((beyond & todo).sum())
                    if gain and (best is None or gain > best[0]):
                        best = (gain, k, side, beyond)
            if best is None:
                break
            _, k, side, beyond = best
            edge = dead[beyond, k].min() if side == "above" else dead[beyond, k].max()
            inner = hi[k] if side == "above" else lo[k]
            conditions.append((int(k), side, float(0.5 * (edge + inner))))
            todo &= ~beyond
            if not todo.any():
                break
        rule = cls(names, conditions)
        pred = rule(None, None, X)
        rule.recall_ = float(pred[t].mean())
        rule.false_alarm_ = float(pred[~t].mean())
        return rule

    def score(self, next_obs: np.ndarray, terminated: np.ndarray) -> dict:
        """Recall on terminal states and false alarms on the others (e.g. on held-out episodes)."""
        t = np.asarray(terminated, dtype=bool)
        pred = self(None, None, next_obs)
        return {"termination_recall": float(pred[t].mean()) if t.any() else float("nan"),
                "termination_false_alarm": float(pred[~t].mean()) if (~t).any() else float("nan")}

    def describe(self) -> str:
        if not self.conditions:
            return "learned: never (no terminal state in the data)"
        terms = [f"{self.names[k]} {'>' if side == 'above' else '<'} {thr:.4g}" for k, side, thr in self.conditions]
        return "learned: terminated when " + " or ".join(terms)

    def to_dict(self) -> dict:
        return {"kind": "box", "names": self.names, "conditions": [list(c) for c in self.conditions],
                "recall": self.recall_, "false_alarm": self.false_alarm_}

    @classmethod
    def from_dict(cls, d: dict) -> BoxTermination:
        if d.get("kind") != "box":
            raise ValueError(f"not a box termination: kind {d.get('kind')!r}")
        return cls(list(d["names"]), [(int(k), str(s), float(v)) for k, s, v in d["conditions"]],
                   recall_=float(d.get("recall", float("nan"))), false_alarm_=float(d.get("false_alarm", float("nan"))))


def resolve_termination(spec: str | None, env_id: str, buffer, obs_names: Sequence[str]):
    """The termination a surrogate of this env uses, or None.

    ``spec`` is ``env.termination``: None (automatic: a built-in one for the env id, else one learned from
    the data's ``terminated`` flags when there are any), ``"none"``, ``"learned"``, a built-in name or
    ``"module:function"``.
    """
    if spec is not None and spec.lower() == "none":
        return None
    if spec is not None and spec.lower() != "learned":
        return known_termination(spec)
    if spec is None and env_id in BUILTIN_TERMINATIONS:
        return known_termination(env_id)
    if buffer is None or not np.any(buffer.terminated):
        if spec is not None:  # asked for "learned"
            raise ValueError("env.termination: learned, but the real data hold no terminated episode to learn from")
        return None
    return BoxTermination.fit(buffer.next_obs, buffer.terminated, obs_names)
