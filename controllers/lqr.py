"""Discrete-time LQR designed on a learned dynamics ``SparseModel``.

The model is linearised exactly (CasADi derivatives of the sparse terms) at an
equilibrium ``f(x*, u*) = x*``, given or found by a root solve, and the gain
comes from scipy's discrete algebraic Riccati solver. The closed-loop
eigenvalues of ``A - B K`` are reported so the design can be checked before it
touches the real system.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import casadi as ca
import numpy as np
import scipy.linalg
import scipy.optimize

from sindyrl.sparse import SparseModel

from .casadi_backend import casadi_expr
from .costs import _as_weight
from .mpc import check_bounds, dynamics_split

__all__ = ["LQR", "Equilibrium", "find_equilibrium", "linearise"]


@dataclass
class Equilibrium:
    """A fixed point of the learned map: ``f(x, u) = x`` up to ``residual`` (max abs)."""

    x: np.ndarray
    u: np.ndarray
    residual: float


def _functions(model: SparseModel) -> tuple[ca.Function, ca.Function, int, int]:
    n_x, n_u = dynamics_split(model)
    x = ca.SX.sym("x", n_x)
    u = ca.SX.sym("u", n_u)
    y = casadi_expr(model, ca.vertcat(x, u))
    f = ca.Function("f", [x, u], [y])
    jac = ca.Function("f_jacobians", [x, u], [ca.jacobian(y, x), ca.jacobian(y, u)])
    return f, jac, n_x, n_u


def _vec(v, n: int, key: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (n,):
        raise ValueError(f"{key} has shape {np.shape(v)}, expected ({n},)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{key} contains NaN or inf")
    return a


def find_equilibrium(
    model: SparseModel,
    x: Sequence[float] | None = None,
    u: Sequence[float] | None = None,
    x_guess: Sequence[float] | None = None,
    action_bounds=None,
    tol: float = 1e-4,
) -> Equilibrium:
    """Find ``(x*, u*)`` with ``f(x*, u*) = x*`` on a learned dynamics model.

    Exactly one of ``x`` (the state is fixed, the action is solved for in the
    least-squares sense) or ``x_guess`` (the action is fixed to ``u``, default
    zero, and the state is solved for starting from the guess) must be given.

    Parameters
    ----------
    model : SparseModel
        Discrete dynamics ``x[k+1] = f(x[k], u[k])``.
    x : array (n_x,), optional
        The state that should be an equilibrium.
    u : array (n_u,), optional
        The action (fixed when solving for the state; initial guess otherwise).
    x_guess : array (n_x,), optional
        Starting point of the state solve.
    action_bounds : (low, high), optional
        If given, ``u*`` must lie within them.
    tol : float, default 1e-4
        Largest accepted residual ``max |f(x*, u*) - x*|``.

    Returns
    -------
    Equilibrium

    Raises
    ------
    ValueError
        If no equilibrium is found within ``tol`` (or within the action bounds).
    """
    f, jac, n_x, n_u = _functions(model)
    if (x is None) == (x_guess is None):
        raise ValueError("find_equilibrium: give exactly one of x (fixed state) or x_guess (state to solve for)")
    bounds = check_bounds(action_bounds, n_u, "action_bounds")
    u0 = np.zeros(n_u) if u is None else _vec(u, n_u, "equilibrium u")

    def fx(xx, uu):
        return np.asarray(f(xx, uu)).reshape(-1)

    if x is not None:
        xs = _vec(x, n_x, "equilibrium x")
        if bounds is None:
            lb, ub = -np.inf, np.inf
        else:
            lb, ub = bounds
            u0 = np.clip(u0, lb, ub)
        sol = scipy.optimize.least_squares(
            lambda uu: fx(xs, uu) - xs, u0, jac=lambda uu: np.asarray(jac(xs, uu)[1]), bounds=(lb, ub),
            xtol=1e-14, ftol=1e-14, gtol=1e-14,
        )
        us = sol.x
    else:
        xg = _vec(x_guess, n_x, "equilibrium x_guess")
        us = u0
        if bounds is not None and (np.any(us < bounds[0]) or np.any(us > bounds[1])):
            raise ValueError(f"find_equilibrium: fixed action u={us} lies outside the action bounds")
        sol = scipy.optimize.root(
            lambda xx: fx(xx, us) - xx, xg, jac=lambda xx: np.asarray(jac(xx, us)[0]) - np.eye(n_x), method="hybr",
        )
        xs = sol.x
    res = fx(xs, us) - xs
    residual = float(np.max(np.abs(res))) if np.all(np.isfinite(res)) else float("inf")
    if not residual <= tol:
        what = f"at x={np.round(xs, 6).tolist()}" if x is not None else f"near x_guess={np.round(xg, 6).tolist()}"
        raise ValueError(
            f"{model.name}: no equilibrium f(x, u) = x {what} "
            f"(best residual {residual:.3g} > tol {tol:g}, u={np.round(us, 6).tolist()})"
        )
    return Equilibrium(x=np.asarray(xs, dtype=np.float64), u=np.asarray(us, dtype=np.float64), residual=residual)


def linearise(model: SparseModel, x: Sequence[float], u: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Jacobians ``A = df/dx`` (n_x, n_x) and ``B = df/du`` (n_x, n_u) of the learned map at ``(x, u)``."""
    _, jac, n_x, n_u = _functions(model)
    A, B = jac(_vec(x, n_x, "x"), _vec(u, n_u, "u"))
    return np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)


class LQR:
    """Infinite-horizon discrete LQR on a learned model, linearised at an equilibrium.

    The control law is ``u = clip(u* - K (x - x*))`` with ``K`` from the discrete
    algebraic Riccati equation of ``(A, B, Q, R)``.

    Parameters
    ----------
    model : SparseModel
        Discrete dynamics ``x[k+1] = f(x[k], u[k])``.
    Q : float, array (n_x,) or (n_x, n_x), default 1.0
        State weight.
    R : float, array (n_u,) or (n_u, n_u), default 1.0
        Action weight (positive definite).
    x_eq, u_eq : arrays, optional
        The equilibrium. With ``x_eq`` alone, ``u*`` is solved for; with
        ``x_guess`` the state is solved for at ``u_eq`` (default zero).
    x_guess : array, optional
        Where to look for the equilibrium state (see :func:`find_equilibrium`).
    action_bounds : (low, high), optional
        Actions are clipped to them; ``u*`` must lie within them.
    tol : float, default 1e-4
        Equilibrium residual accepted.

    Attributes
    ----------
    equilibrium : Equilibrium
    A, B : arrays
        The linearisation.
    K : array (n_u, n_x)
        Feedback gain.
    P : array (n_x, n_x)
        Riccati solution.
    closed_loop_eigenvalues : array (n_x,), complex
        Eigenvalues of ``A - B K`` (all inside the unit circle for a stabilising design).
    """

    def __init__(
        self,
        model: SparseModel,
        Q=1.0,
        R=1.0,
        x_eq: Sequence[float] | None = None,
        u_eq: Sequence[float] | None = None,
        x_guess: Sequence[float] | None = None,
        action_bounds=None,
        tol: float = 1e-4,
    ) -> None:
        n_x, n_u = dynamics_split(model)
        self.model = model
        self.n_x, self.n_u = n_x, n_u
        self.action_bounds = check_bounds(action_bounds, n_u, "LQR action_bounds")
        self.Q = _as_weight(Q, n_x, "LQR Q")
        self.R = _as_weight(R, n_u, "LQR R")
        if np.linalg.eigvalsh(self.R).min() <= 0:
            raise ValueError("LQR R must be positive definite")
        if x_eq is not None and u_eq is not None:
            eq = find_equilibrium(model, x=x_eq, u=u_eq, action_bounds=action_bounds, tol=tol)
            if np.max(np.abs(eq.u - np.asarray(u_eq, dtype=np.float64))) > tol:
                raise ValueError(f"{model.name}: (x_eq, u_eq) is not an equilibrium; u={eq.u} would be needed")
        elif x_eq is not None:
            eq = find_equilibrium(model, x=x_eq, u=None, action_bounds=action_bounds, tol=tol)
        else:
            if x_guess is None:
                raise ValueError("LQR needs x_eq (a given equilibrium state) or x_guess (where to find one)")
            eq = find_equilibrium(model, x_guess=x_guess, u=u_eq, action_bounds=action_bounds, tol=tol)
        self.equilibrium = eq
        self.A, self.B = linearise(model, eq.x, eq.u)
        try:
            self.P = scipy.linalg.solve_discrete_are(self.A, self.B, self.Q, self.R)
        except (np.linalg.LinAlgError, ValueError) as e:
            raise ValueError(
                f"{model.name}: the Riccati equation has no stabilising solution at x*={eq.x.tolist()} "
                f"(is (A, B) stabilisable?): {e}"
            ) from None
        BtP = self.B.T @ self.P
        self.K = np.linalg.solve(self.R + BtP @ self.B, BtP @ self.A)
        self.closed_loop_eigenvalues = np.linalg.eigvals(self.A - self.B @ self.K)

    @property
    def x_eq(self) -> np.ndarray:
        return self.equilibrium.x

    @property
    def u_eq(self) -> np.ndarray:
        return self.equilibrium.u

    @property
    def stable(self) -> bool:
        """Whether the linearised closed loop is asymptotically stable (spectral radius < 1)."""
        return bool(np.max(np.abs(self.closed_loop_eigenvalues)) < 1.0)

    def act(self, obs) -> np.ndarray:
        """``u = clip(u* - K (x - x*))`` for one observation of shape (n_x,)."""
        x = np.asarray(obs, dtype=np.float64).reshape(-1)
        if x.shape != (self.n_x,):
            raise ValueError(f"LQR observation has shape {np.shape(obs)}, expected ({self.n_x},) {self.model.outputs}")
        u = self.u_eq - self.K @ (x - self.x_eq)
        if self.action_bounds is not None:
            u = np.clip(u, self.action_bounds[0], self.action_bounds[1])
        return u

    __call__ = act
