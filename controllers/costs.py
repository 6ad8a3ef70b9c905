"""Stage and terminal costs for the controllers, as CasADi expressions.

Two families cover most systems: a quadratic tracking cost around a target
state (the LQR-style choice), and a reward (a learned reward ``SparseModel`` or
any CasADi-expressible callable) used as negative stage cost, so the MPC
optimises what the RL agent optimises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import casadi as ca
import numpy as np

from sindyrl.sparse import SparseModel

from .casadi_backend import casadi_expr

__all__ = ["Cost", "QuadraticCost", "RewardCost", "CASADI_REWARDS", "KNOWN_TARGETS", "pendulum_reward"]


def _as_weight(w, n: int, key: str) -> np.ndarray:
    """A weight given as a scalar, a diagonal (n,) or a full (n, n) matrix -> (n, n) symmetric PSD."""
    a = np.asarray(w, dtype=np.float64)
    if a.ndim == 0:
        a = np.eye(n) * float(a)
    elif a.shape == (n,):
        a = np.diag(a)
    elif a.shape != (n, n):
        raise ValueError(f"{key} must be a scalar, shape ({n},) or ({n}, {n}); got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{key} contains NaN or inf")
    if not np.allclose(a, a.T):
        raise ValueError(f"{key} must be symmetric")
    if np.linalg.eigvalsh(a).min() < -1e-12:
        raise ValueError(f"{key} must be positive semidefinite")
    return a


class Cost:
    """Interface: ``stage(x, u)`` and ``terminal(x)`` return scalar CasADi expressions."""

    def bind(self, n_x: int, n_u: int) -> None:
        """Check the cost fits a system with ``n_x`` states and ``n_u`` actions (ValueError otherwise)."""

    def stage(self, x: ca.SX, u: ca.SX) -> ca.SX:  # pragma: no cover - interface
        raise NotImplementedError

    def terminal(self, x: ca.SX) -> ca.SX:
        return ca.SX(0)

    def describe(self) -> str:
        """One line for reports."""
        return type(self).__name__


class QuadraticCost(Cost):
    """Quadratic tracking cost ``(x - x*)' Q (x - x*) + (u - u*)' R (u - u*)``, terminal ``(x - x*)' P (x - x*)``.

    Parameters
    ----------
    target : array, shape (n_x,)
        Target state ``x*`` (for Pendulum: ``(cos, sin, th_dot) = (1, 0, 0)``).
    Q : float, array (n_x,) or (n_x, n_x), default 1.0
        State weight.
    R : float, array (n_u,) or (n_u, n_u), default 0.01
        Action weight.
    terminal_weight : float, array or None, default None
        Terminal weight ``P``; ``None`` means ``10 * Q``.
    u_target : array, shape (n_u,), optional
        Action at the target (default zero).
    """

    def __init__(self, target: Sequence[float], Q=1.0, R=0.01, terminal_weight=None, u_target=None) -> None:
        self.target = np.asarray(target, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(self.target)):
            raise ValueError("QuadraticCost target contains NaN or inf")
        self.Q_in, self.R_in, self.P_in, self.u_target_in = Q, R, terminal_weight, u_target

    @classmethod
    def bryson(
        cls, target: Sequence[float], state_span, action_span, action_weight: float = 0.1, terminal_factor: float = 10.0,
        u_target: Sequence[float] | None = None,
    ) -> QuadraticCost:
        """Weights by Bryson's rule: ``Q = diag(1 / span_x^2)``, ``R = action_weight * diag(1 / span_u^2)``.

        Spans are the ranges the variables take (e.g. from the collected data),
        so the cost does not depend on the units; the terminal weight is
        ``terminal_factor * Q``. ``u_target`` is the action that holds the target
        (default zero: a steady state away from the origin needs its own).
        """
        sx = np.asarray(state_span, dtype=np.float64).reshape(-1)
        su = np.asarray(action_span, dtype=np.float64).reshape(-1)
        if np.any(~np.isfinite(sx)) or np.any(sx <= 0) or np.any(~np.isfinite(su)) or np.any(su <= 0):
            raise ValueError(f"QuadraticCost.bryson: spans must be finite and > 0, got {sx} and {su}")
        Q = 1.0 / sx**2
        return cls(target, Q=Q, R=action_weight / su**2, terminal_weight=terminal_factor * Q, u_target=u_target)

    def describe(self) -> str:
        held = "" if self.u_target_in is None else f" at u={np.round(np.asarray(self.u_target_in), 4).tolist()}"
        return f"quadratic tracking of {np.round(self.target, 4).tolist()}{held}"

    def bind(self, n_x: int, n_u: int) -> None:
        if self.target.shape != (n_x,):
            raise ValueError(f"QuadraticCost target has shape {self.target.shape}, expected ({n_x},)")
        self.Q = _as_weight(self.Q_in, n_x, "QuadraticCost Q")
        self.R = _as_weight(self.R_in, n_u, "QuadraticCost R")
        self.P = 10.0 * self.Q if self.P_in is None else _as_weight(self.P_in, n_x, "QuadraticCost terminal_weight")
        ut = np.zeros(n_u) if self.u_target_in is None else np.asarray(self.u_target_in, dtype=np.float64).reshape(-1)
        if ut.shape != (n_u,):
            raise ValueError(f"QuadraticCost u_target has shape {ut.shape}, expected ({n_u},)")
        self.u_target = ut

    def stage(self, x, u):
        dx = x - self.target
        du = u - self.u_target
        return ca.bilin(ca.DM(self.Q), dx, dx) + ca.bilin(ca.DM(self.R), du, du)

    def terminal(self, x):
        dx = x - self.target
        return ca.bilin(ca.DM(self.P), dx, dx)


class RewardCost(Cost):
    """Negative reward as stage cost: ``stage(x, u) = -scale * r(x, u)``.

    Parameters
    ----------
    reward : SparseModel or callable
        A reward model with inputs state + action names and one output, or a
        callable ``r(x, u)`` that builds a CasADi scalar from CasADi columns
        (use ``casadi`` functions such as ``ca.atan2``, not numpy).
    terminal : callable, optional
        ``V(x)`` -> CasADi scalar, a terminal cost (default none).
    scale : float, default 1.0
        Multiplies the reward (keeps the NLP well scaled).
    """

    def __init__(
        self,
        reward: SparseModel | Callable,
        terminal: Callable | None = None,
        scale: float = 1.0,
    ) -> None:
        if not (isinstance(reward, SparseModel) or callable(reward)):
            raise TypeError(f"RewardCost reward must be a SparseModel or a callable, got {type(reward).__name__}")
        if isinstance(reward, SparseModel) and reward.n_outputs != 1:
            raise ValueError(f"RewardCost: reward model {reward.name!r} has {reward.n_outputs} outputs, expected 1")
        if terminal is not None and not callable(terminal):
            raise TypeError("RewardCost terminal must be a callable V(x) or None")
        self.reward = reward
        self.terminal_fn = terminal
        self.scale = float(scale)

    def bind(self, n_x: int, n_u: int) -> None:
        if isinstance(self.reward, SparseModel) and self.reward.n_inputs != n_x + n_u:
            raise ValueError(
                f"RewardCost: reward model {self.reward.name!r} has {self.reward.n_inputs} inputs, "
                f"expected {n_x + n_u} (state + action)"
            )

    def stage(self, x, u):
        if isinstance(self.reward, SparseModel):
            r = casadi_expr(self.reward, ca.vertcat(x, u))[0]
        else:
            r = self.reward(x, u)
        return -self.scale * r

    def terminal(self, x):
        return ca.SX(0) if self.terminal_fn is None else self.terminal_fn(x)

    def describe(self) -> str:
        if isinstance(self.reward, SparseModel):
            return f"negative learned reward model {self.reward.name!r}"
        return f"negative reward {getattr(self.reward, '__name__', type(self.reward).__name__)}"


def pendulum_reward(x, u):
    """Pendulum-v1's reward ``-(th^2 + 0.1 th_dot^2 + 0.001 u^2)`` in CasADi, on (cos th, sin th, th_dot), u."""
    return -(ca.atan2(x[1], x[0]) ** 2 + 0.1 * x[2] ** 2 + 0.001 * u[0] ** 2)


#: CasADi versions of sindyrl's built-in known rewards (by name and env id).
CASADI_REWARDS: dict[str, Callable] = {"pendulum": pendulum_reward, "Pendulum-v1": pendulum_reward}

#: The state each built-in reward is maximal at (the LQR equilibrium guess, the tracking target).
KNOWN_TARGETS: dict[str, list[float]] = {"pendulum": [1.0, 0.0, 0.0], "Pendulum-v1": [1.0, 0.0, 0.0]}
