"""The steady state a reward prefers: ``f(x*, u*) = x*`` on the learned model, best by the reward, in the data box.

With no target state given, LQR needs an equilibrium and a tracking MPC a
target. :func:`best_steady_state` looks for the steady state of the learned
dynamics that the run's reward (a numpy function or a reward model) likes most
and that the data support:

1. candidates: the ``n_candidates`` stored transitions with the highest reward
   (plus the median stored state at zero action);
2. an equilibrium solve near each (:func:`controllers.lqr.find_equilibrium`, the
   candidate's action held fixed, then zero action);
3. a local refinement: maximise ``r(x, u, x)`` subject to ``f(x, u) = x``, the
   data box and the action bounds (SLSQP, reward gradient by finite differences,
   so the numpy reward is used as it is), from each equilibrium found (or from
   the candidate itself when the solve found none);
4. the best feasible point by the reward; ties go to the point nearest the
   median stored state (in units of the data's spans).

A steady state must have residual ``max |f(x, u) - x| <= tol`` and lie in the
box and the action bounds; when none does (a swing-up whose model has no fixed
point in the data), :class:`NoSteadyState` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import casadi as ca
import numpy as np
import scipy.optimize

from sindyrl.sparse import SparseModel

from .casadi_backend import casadi_expr
from .lqr import find_equilibrium
from .mpc import check_bounds, dynamics_split

__all__ = ["SteadyState", "NoSteadyState", "best_steady_state", "N_CANDIDATES"]

#: stored transitions with the highest reward that seed the search
N_CANDIDATES = 10


class NoSteadyState(ValueError):
    """The learned model has no steady state within the data box and the action bounds."""


@dataclass
class SteadyState:
    """A steady state ``f(x, u) = x`` (up to ``residual``) and its reward ``r(x, u, x)``."""

    x: np.ndarray
    u: np.ndarray
    reward: float
    residual: float
    #: candidates tried, and how many of them led to a feasible steady state
    n_candidates: int = 0
    n_feasible: int = 0
    #: the best stored transition's reward, for comparison
    best_data_reward: float = float("nan")
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"x": self.x.tolist(), "u": self.u.tolist(), "reward": self.reward, "residual": self.residual,
                "n_candidates": self.n_candidates, "n_feasible": self.n_feasible,
                "best_data_reward": self.best_data_reward}

    @classmethod
    def from_dict(cls, d: dict) -> SteadyState:
        return cls(np.asarray(d["x"], dtype=np.float64), np.asarray(d["u"], dtype=np.float64), float(d["reward"]),
                   float(d["residual"]), int(d.get("n_candidates", 0)), int(d.get("n_feasible", 0)),
                   float(d.get("best_data_reward", float("nan"))))


def best_steady_state(
    model: SparseModel,
    reward: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    obs: np.ndarray,
    actions: np.ndarray,
    state_bounds,
    action_bounds,
    n_candidates: int = N_CANDIDATES,
    tol: float = 1e-4,
) -> SteadyState:
    """The steady state of ``model`` with the highest ``reward`` in ``state_bounds`` (see the module docstring).

    Parameters
    ----------
    model : SparseModel
        Discrete dynamics ``x[k+1] = f(x[k], u[k])``.
    reward : callable
        Batched ``(obs, action, next_obs) -> (N,)``; a steady state is scored with ``next_obs = obs``.
    obs, actions : arrays (N, n_x), (N, n_u)
        Stored real states and actions (the candidates come from them).
    state_bounds, action_bounds : (low, high)
        The data box (e.g. ``TransitionBuffer.state_bounds()``) and the action bounds.
    n_candidates : int, default 10
        Highest-reward stored transitions to start from.
    tol : float, default 1e-4
        Largest accepted residual ``max |f(x, u) - x|``.

    Raises
    ------
    NoSteadyState
        When no candidate leads to a steady state inside the box and the bounds.
    """
    n_x, n_u = dynamics_split(model)
    lo, hi = check_bounds(state_bounds, n_x, "steady state state_bounds")
    ulo, uhi = check_bounds(action_bounds, n_u, "steady state action_bounds")
    X = np.asarray(obs, dtype=np.float64).reshape(-1, n_x)
    U = np.asarray(actions, dtype=np.float64).reshape(-1, n_u)
    if len(X) == 0 or len(X) != len(U):
        raise ValueError(f"best_steady_state: need matching, non-empty states and actions, got {X.shape} and {U.shape}")
    span = np.where(np.isfinite(hi - lo) & (hi - lo > 1e-9), hi - lo, 1.0)
    centre = np.median(X, axis=0)

    def score(x: np.ndarray, u: np.ndarray) -> float:
        r = float(np.asarray(reward(x[None], u[None], x[None]), dtype=np.float64).reshape(-1)[0])
        return r if np.isfinite(r) else -np.inf

    z = ca.SX.sym("z", n_x + n_u)
    y = casadi_expr(model, z)
    g = ca.Function("steady_residual", [z], [y - z[:n_x]])
    dg = ca.Function("steady_residual_jac", [z], [ca.jacobian(y - z[:n_x], z)])

    def residual(x: np.ndarray, u: np.ndarray) -> float:
        r = np.asarray(g(np.concatenate([x, u]))).reshape(-1)
        return float(np.max(np.abs(r))) if np.all(np.isfinite(r)) else np.inf

    def feasible(x: np.ndarray, u: np.ndarray) -> bool:
        eps = 1e-7 * span
        return bool(residual(x, u) <= tol and np.all(x >= lo - eps) and np.all(x <= hi + eps)
                    and np.all(u >= ulo - 1e-9) and np.all(u <= uhi + 1e-9))

    r_data = np.asarray(reward(X, U, X), dtype=np.float64).reshape(-1)
    r_data = np.where(np.isfinite(r_data), r_data, -np.inf)
    r_scale = float(np.std(r_data[np.isfinite(r_data)])) if np.isfinite(r_data).any() else 1.0
    r_scale = r_scale if r_scale > 1e-12 else 1.0
    order = np.argsort(-r_data, kind="stable")[: max(int(n_candidates), 1)]
    starts = [(X[i], np.clip(U[i], ulo, uhi)) for i in order]
    starts.append((centre, np.clip(np.zeros(n_u), ulo, uhi)))

    bounds = list(zip(np.concatenate([lo, ulo]), np.concatenate([hi, uhi]), strict=True))
    bounds = [(None if not np.isfinite(a) else a, None if not np.isfinite(b) else b) for a, b in bounds]
    width = np.concatenate([span, np.where(np.isfinite(uhi - ulo) & (uhi - ulo > 0), uhi - ulo, 1.0)])

    def refine(x0: np.ndarray, u0: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        # in units of the spans, so that SLSQP's steps and finite differences suit every state
        z0 = np.concatenate([x0, u0]) / width
        res = scipy.optimize.minimize(
            lambda s: -score(s[:n_x] * width[:n_x], s[n_x:] * width[n_x:]) / r_scale, z0, method="SLSQP",
            bounds=[(None if a is None else a / w, None if b is None else b / w) for (a, b), w in zip(bounds, width,
                                                                                                        strict=True)],
            constraints=[{"type": "eq", "fun": lambda s: np.asarray(g(s * width)).reshape(-1),
                          "jac": lambda s: np.asarray(dg(s * width)) * width[None, :]}],
            options={"maxiter": 200, "ftol": 1e-10},
        )
        s = res.x * width
        return (s[:n_x], s[n_x:]) if np.all(np.isfinite(s)) else None

    found: list[tuple[float, float, np.ndarray, np.ndarray]] = []
    for xc, uc in starts:
        eq = None
        for u0 in (uc, np.clip(np.zeros(n_u), ulo, uhi)):
            try:
                e = find_equilibrium(model, x_guess=xc, u=u0, action_bounds=(ulo, uhi), tol=tol)
            except ValueError:
                continue
            if feasible(e.x, e.u):
                eq = e
                break
        points = [] if eq is None else [(eq.x, eq.u)]
        with np.errstate(all="ignore"):
            ref = refine(eq.x, eq.u) if eq is not None else refine(xc, uc)
        if ref is not None:
            points.append(ref)
        for x, u in points:
            if feasible(x, u):
                found.append((score(x, u), float(np.linalg.norm((x - centre) / span)), x, u))
    if not found:
        raise NoSteadyState(
            f"{model.name}: no steady state f(x, u) = x (residual <= {tol:g}) within the data box "
            f"[{np.round(lo, 3).tolist()}, {np.round(hi, 3).tolist()}] and the action bounds, from "
            f"{len(starts)} candidates (the {len(starts) - 1} highest-reward stored states and the median state)"
        )
    best_r = max(f[0] for f in found)
    close = [f for f in found if f[0] >= best_r - 1e-6 * max(r_scale, abs(best_r))]
    r, _, x, u = min(close, key=lambda f: f[1])
    return SteadyState(np.asarray(x, dtype=np.float64), np.asarray(u, dtype=np.float64), float(r), residual(x, u),
                       n_candidates=len(starts), n_feasible=len(found),
                       best_data_reward=float(r_data.max()))
