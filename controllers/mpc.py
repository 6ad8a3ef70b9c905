"""Nonlinear model predictive control on a learned discrete dynamics ``SparseModel``.

Multiple shooting: the decision variables are the predicted states
``X_0 .. X_N`` and actions ``U_0 .. U_{N-1}``; the model enters as equality
constraints ``X_{k+1} = f(X_k, U_k)`` and ``X_0`` is pinned to the observation.
Each step is warm-started from the previous plan shifted by one step. ipopt
(bundled with CasADi) is the default solver; ``sqpmethod`` with the ``qrqp``
QP solver is the embedded-friendly option whose solver can be generated as
self-contained C (see :mod:`controllers.codegen`).

When a solve fails (solver status, non-finite numbers, or dynamics residual
above ``feasibility_tol``), :meth:`MPC.act` applies the next action of the last
good plan instead and counts the failure, so the control loop never stops on
an infeasible problem.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import casadi as ca
import numpy as np

from sindyrl.sparse import SparseModel

from .casadi_backend import casadi_expr
from .costs import Cost, QuadraticCost

__all__ = ["MPC", "MPCStats", "dynamics_split", "check_bounds"]

SOLVERS = ("ipopt", "sqpmethod")


def dynamics_split(model: SparseModel) -> tuple[int, int]:
    """``(n_x, n_u)`` of a dynamics model ``x[k+1] = f(x[k], u[k])`` (inputs = state names + action names)."""
    if not isinstance(model, SparseModel):
        raise TypeError(f"expected a sindyrl.sparse.SparseModel, got {type(model).__name__}")
    n_x = model.n_outputs
    n_u = model.n_inputs - n_x
    if n_u < 1 or model.inputs[:n_x] != model.outputs:
        raise ValueError(
            f"{model.name}: not a dynamics model x[k+1] = f(x[k], u[k]); need inputs = outputs + action names, "
            f"got inputs {model.inputs} and outputs {model.outputs}"
        )
    return n_x, n_u


def check_bounds(bounds, n: int, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Validate ``(low, high)`` with two arrays of shape ``(n,)``; ±inf allowed, NaN not."""
    if bounds is None:
        return None
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a pair (low, high), got {bounds!r}") from None
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if lo.ndim == 0:
        lo = np.full(n, float(lo))
    if hi.ndim == 0:
        hi = np.full(n, float(hi))
    if lo.shape != (n,) or hi.shape != (n,):
        raise ValueError(f"{key}: low and high must have shape ({n},), got {lo.shape} and {hi.shape}")
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)) or np.any(lo > hi):
        raise ValueError(f"{key}: need low <= high elementwise and no NaN, got {lo} and {hi}")
    return lo, hi


@dataclass
class MPCStats:
    """Statistics of one :meth:`MPC.act` call.

    Attributes
    ----------
    action : array (n_u,)
        The action applied (first planned action, or the fallback).
    success : bool
        Whether this solve produced an accepted plan.
    status : str
        The solver's return status.
    iterations : int
        Solver iterations (-1 when unknown, e.g. generated C).
    solve_time : float
        Wall time of the solve in seconds.
    cost : float
        Optimal cost of the plan (NaN on failure).
    fallback : bool
        True when the action comes from the previous plan.
    failures : int
        Failed solves since the last :meth:`MPC.reset`.
    plan_u : array (N, n_u)
        The plan the action comes from (on failure: the last good plan).
    plan_x : array (N + 1, n_x)
        Predicted states of this solve (NaN on failure).
    """

    action: np.ndarray
    success: bool
    status: str
    iterations: int
    solve_time: float
    cost: float
    fallback: bool
    failures: int
    plan_u: np.ndarray = field(repr=False)
    plan_x: np.ndarray = field(repr=False)


class MPC:
    """Multiple-shooting nonlinear MPC over a learned dynamics ``SparseModel``.

    Parameters
    ----------
    model : SparseModel
        Discrete dynamics, inputs = state names + action names, outputs = state names.
    cost : Cost
        Stage and terminal cost (:class:`~controllers.costs.QuadraticCost` or
        :class:`~controllers.costs.RewardCost`).
    horizon : int, default 30
        Prediction horizon ``N`` in steps (> 0).
    action_bounds : (low, high), optional
        Bounds on every ``U_k``, arrays of shape (n_u,). Strongly advised: a real
        actuator saturates, and the plan must know it.
    state_bounds : (low, high), optional
        Hard bounds on ``X_1 .. X_N``, arrays of shape (n_x,); ±inf for free components.
    soft_state_bounds : (low, high), optional
        Soft bounds on ``X_1 .. X_N`` (e.g. where episodes end): the stage cost gets
        ``soft_state_weight * sum(((violation) / soft_state_scale)^2)``, so a plan that
        cannot stay inside is still feasible, only expensive. ±inf for free components.
    soft_state_scale : array (n_x,), optional
        Units the violation is measured in (default 1; e.g. the data's spans).
    soft_state_weight : float, default 1e4
        Penalty weight; large against the stage cost, so the plan leaves the box only
        when it cannot help it.
    solver : {"ipopt", "sqpmethod"}, default "ipopt"
        ``"sqpmethod"`` uses the ``qrqp`` QP solver and can be code-generated.
    max_iter : int, default 100
        Iteration limit per solve.
    solver_options : dict, optional
        Extra options merged into the CasADi ``nlpsol`` options.
    feasibility_tol : float, default 1e-4
        Largest dynamics residual accepted as a solved plan.
    warm_start : bool, default True
        Start each solve from the previous plan shifted by one step (and its
        multipliers); otherwise from a zero-action rollout of the model.
    hessian : {"auto", "exact", "gauss-newton"}, default "auto"
        Hessian used by the solver. ``"gauss-newton"`` keeps only the cost's
        Hessian (the constraint curvature is dropped), which is positive
        semidefinite for a quadratic cost, as ``qrqp`` needs; ``"auto"`` means
        exact for ipopt and Gauss-Newton for sqpmethod.
    name : str, default "sindyrl_mpc"
        Name of the CasADi solver function (and the prefix of generated C).
    """

    def __init__(
        self,
        model: SparseModel,
        cost: Cost,
        horizon: int = 30,
        action_bounds=None,
        state_bounds=None,
        soft_state_bounds=None,
        soft_state_scale=None,
        soft_state_weight: float = 1e4,
        solver: str = "ipopt",
        max_iter: int = 100,
        solver_options: dict | None = None,
        feasibility_tol: float = 1e-4,
        warm_start: bool = True,
        hessian: str = "auto",
        name: str = "sindyrl_mpc",
    ) -> None:
        self.init_args = dict(
            model=model, cost=cost, horizon=horizon, action_bounds=action_bounds, state_bounds=state_bounds,
            soft_state_bounds=soft_state_bounds, soft_state_scale=soft_state_scale,
            soft_state_weight=soft_state_weight, solver=solver, max_iter=max_iter, solver_options=solver_options, feasibility_tol=feasibility_tol,
            warm_start=warm_start, hessian=hessian, name=name,
        )
        self.n_x, self.n_u = dynamics_split(model)
        if not isinstance(horizon, (int, np.integer)) or isinstance(horizon, bool) or horizon <= 0:
            raise ValueError(f"MPC horizon must be a positive integer, got {horizon!r}")
        if solver not in SOLVERS:
            raise ValueError(f"MPC solver must be one of {SOLVERS}, got {solver!r}")
        if not isinstance(cost, Cost):
            raise TypeError(f"MPC cost must be a controllers.costs.Cost, got {type(cost).__name__}")
        if max_iter < 1:
            raise ValueError(f"MPC max_iter must be >= 1, got {max_iter}")
        if hessian not in ("auto", "exact", "gauss-newton"):
            raise ValueError(f"MPC hessian must be 'auto', 'exact' or 'gauss-newton', got {hessian!r}")
        if hessian == "auto":
            hessian = "exact" if solver == "ipopt" else "gauss-newton"
        self.hessian = hessian
        self.name = str(name)
        cost.bind(self.n_x, self.n_u)
        self.model = model
        self.cost = cost
        self.horizon = int(horizon)
        self.solver_name = solver
        self.max_iter = int(max_iter)
        self.feasibility_tol = float(feasibility_tol)
        self.warm_start = bool(warm_start)
        self.action_bounds = check_bounds(action_bounds, self.n_u, "MPC action_bounds")
        self.state_bounds = check_bounds(state_bounds, self.n_x, "MPC state_bounds")
        self.soft_state_bounds = check_bounds(soft_state_bounds, self.n_x, "MPC soft_state_bounds")
        scale = np.ones(self.n_x) if soft_state_scale is None else np.asarray(soft_state_scale, dtype=np.float64)
        if scale.shape != (self.n_x,) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(f"MPC soft_state_scale must be {self.n_x} finite values > 0, got {soft_state_scale!r}")
        if not np.isfinite(soft_state_weight) or soft_state_weight <= 0:
            raise ValueError(f"MPC soft_state_weight must be finite and > 0, got {soft_state_weight!r}")
        self.soft_state_scale = scale
        self.soft_state_weight = float(soft_state_weight)
        self._build(solver_options or {})
        self.reset()

    # ----------------------------------------------------------------- NLP
    def _build(self, extra: dict) -> None:
        N, nx, nu = self.horizon, self.n_x, self.n_u
        z = ca.SX.sym("z", nx + nu)
        self.f = ca.Function("f", [z[:nx], z[nx:]], [casadi_expr(self.model, z)], ["x", "u"], ["x_next"])
        X = ca.SX.sym("X", nx, N + 1)
        U = ca.SX.sym("U", nu, N)
        x_init = ca.SX.sym("x_init", nx)
        J = 0
        g = [X[:, 0] - x_init]
        for k in range(N):
            J += self.cost.stage(X[:, k], U[:, k])
            g.append(self.f(X[:, k], U[:, k]) - X[:, k + 1])
        J += self.cost.terminal(X[:, N])
        J += self._soft_penalty(X)
        # decision vector ordered per stage (x0, u0, x1, u1, ..., xN): banded KKT for sparse solvers
        w = []
        for k in range(N):
            w += [X[:, k], U[:, k]]
        w.append(X[:, N])
        w = ca.vertcat(*w)
        self._nlp = {"x": w, "p": x_init, "f": J, "g": ca.vertcat(*g)}
        self._n_w = int(w.shape[0])
        self._n_g = int(self._nlp["g"].shape[0])
        stride = nx + nu
        self._ix = np.array([[k * stride + i for i in range(nx)] for k in range(N + 1)])
        self._iu = np.array([[k * stride + nx + i for i in range(nu)] for k in range(N)])
        lbw = np.full(self._n_w, -np.inf)
        ubw = np.full(self._n_w, np.inf)
        if self.action_bounds is not None:
            lbw[self._iu] = self.action_bounds[0]
            ubw[self._iu] = self.action_bounds[1]
        if self.state_bounds is not None:
            lbw[self._ix[1:]] = self.state_bounds[0]
            ubw[self._ix[1:]] = self.state_bounds[1]
        self.lbw, self.ubw = lbw, ubw
        self.solver_options = self._options(extra)
        self._solver = ca.nlpsol(self.name, self.solver_name, self._nlp, self.solver_options)

    def _soft_penalty(self, X: ca.SX) -> ca.SX:
        """Squared violation of the soft state box by the predicted states ``X_1 .. X_N``, weighted."""
        if self.soft_state_bounds is None:
            return ca.SX(0)
        lo, hi = self.soft_state_bounds
        pen = ca.SX(0)
        for i in range(self.n_x):
            s = self.soft_state_scale[i]
            for k in range(1, self.horizon + 1):
                if np.isfinite(hi[i]):
                    pen += ca.fmax(0, (X[i, k] - hi[i]) / s) ** 2
                if np.isfinite(lo[i]):
                    pen += ca.fmax(0, (lo[i] - X[i, k]) / s) ** 2
        return self.soft_state_weight * pen

    def describe(self) -> str:
        """One line for reports: horizon, cost and constraints."""
        parts = [f"horizon {self.horizon}", self.cost.describe()]
        if self.action_bounds is not None:
            parts.append("action bounds")
        if self.state_bounds is not None:
            parts.append("hard state bounds")
        if self.soft_state_bounds is not None:
            lo, hi = self.soft_state_bounds
            names = self.model.outputs
            box = [f"{names[i]} in [{lo[i]:.4g}, {hi[i]:.4g}]" for i in range(self.n_x)
                   if np.isfinite(lo[i]) or np.isfinite(hi[i])]
            parts.append(f"soft state box {', '.join(box)} (penalty {self.soft_state_weight:g} on the squared "
                         "violation)")
        return "; ".join(parts)

    def _options(self, extra: dict) -> dict:
        if self.solver_name == "ipopt":
            opts = {
                "print_time": False,
                "ipopt": {
                    "print_level": 0,
                    "sb": "yes",
                    "max_iter": self.max_iter,
                    "tol": 1e-6,
                    "acceptable_tol": 1e-4,
                    # warm starts only pay off if ipopt does not push the guess back into the interior
                    "warm_start_init_point": "yes" if self.warm_start else "no",
                    "mu_init": 1e-3 if self.warm_start else 0.1,
                },
            }
        else:
            opts = {
                "qpsol": "qrqp",
                "qpsol_options": {"print_iter": False, "print_header": False, "print_info": False,
                                  "error_on_fail": False},
                "print_header": False,
                "print_iteration": False,
                "print_status": False,
                "print_time": False,
                "max_iter": self.max_iter,
                "error_on_fail": False,
            }
        if self.hessian == "gauss-newton":
            w, p, J = self._nlp["x"], self._nlp["p"], self._nlp["f"]
            lam_f = ca.SX.sym("lam_f")
            lam_g = ca.SX.sym("lam_g", self._n_g)
            H = lam_f * ca.hessian(J, w)[0]
            if self.solver_name == "ipopt":
                H = ca.triu(H)  # ipopt reads the upper triangle; sqpmethod's convexification needs the full matrix
            opts["hess_lag"] = ca.Function("nlp_hess_l", [w, p, lam_f, lam_g], [H],
                                           ["x", "p", "lam_f", "lam_g"], ["hess_gamma_x_x"])
            if not isinstance(self.cost, QuadraticCost) and self.solver_name == "sqpmethod":
                # a reward's Hessian may be indefinite: clip its negative eigenvalues for qrqp
                opts["convexify_strategy"] = "eigen-clip"
        elif self.solver_name == "sqpmethod":
            # the exact Hessian of a nonconvex plan is indefinite; qrqp needs it convex
            opts["convexify_strategy"] = "eigen-clip"
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(opts.get(k), dict):
                opts[k] = {**opts[k], **v}
            else:
                opts[k] = v
        return opts

    # -------------------------------------------------------------- helpers
    def reset(self) -> None:
        """Forget the previous plan (call between episodes) and the failure count."""
        self._w = None
        self._lam_x = None
        self._lam_g = None
        self._plan_u: np.ndarray | None = None
        self._plan_pos = 0
        self.failures = 0
        self.steps = 0
        self.last_stats: MPCStats | None = None

    def _check_obs(self, obs) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64).reshape(-1)
        if x.shape != (self.n_x,):
            raise ValueError(f"MPC observation has shape {np.shape(obs)}, expected ({self.n_x},) {self.model.outputs}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"MPC observation contains NaN or inf: {x}")
        return x

    def clip_action(self, u: np.ndarray) -> np.ndarray:
        """``u`` clipped to the action bounds (unchanged without bounds)."""
        if self.action_bounds is None:
            return u
        return np.clip(u, self.action_bounds[0], self.action_bounds[1])

    def rollout_guess(self, x: np.ndarray, U: np.ndarray | None = None) -> np.ndarray:
        """A decision vector from simulating the model from ``x`` under ``U`` (default zero, clipped).

        The simulated states are held inside the model's data box (its ``input_bounds``, when it has them):
        an unstable system left open-loop (InvertedDoublePendulum under zero force) carries a cubic model
        far outside its data within the horizon, to values whose constraint residuals are inf - inf = NaN,
        and ipopt stops at its first iterate ("Invalid_Number_Detected"). It is only the starting guess:
        multiple shooting does not need it to be feasible.
        """
        N = self.horizon
        if U is None:
            U = np.tile(self.clip_action(np.zeros(self.n_u)), (N, 1))
        box = self.model.input_bounds
        lo, hi = (None, None) if box is None else (np.asarray(box[0])[: self.n_x], np.asarray(box[1])[: self.n_x])
        w = np.zeros(self._n_w)
        xk = x.copy()
        for k in range(N):
            w[self._ix[k]] = xk
            w[self._iu[k]] = U[k]
            with np.errstate(all="ignore"):
                xk = np.asarray(self.f(xk, U[k]), dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(xk)):
                xk = w[self._ix[k]]
            elif lo is not None:
                xk = np.clip(xk, lo, hi)
        w[self._ix[N]] = xk
        return w

    def initial_guess(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Primal guess and multipliers for a solve at state ``x``: the shifted previous plan, or a rollout."""
        if not self.warm_start or self._w is None:
            return self.rollout_guess(x), None, None
        N, nx = self.horizon, self.n_x
        ix, iu = self._ix, self._iu

        def shift(v: np.ndarray) -> np.ndarray:
            # stage k takes stage k + 1; the last action and the final state are held
            s = v.copy()
            s[ix[:N]] = v[ix[1:]]
            s[iu[: N - 1]] = v[iu[1:]]
            return s

        w = shift(self._w)
        # extend the plan by one model step with the held last action, so the guess obeys the dynamics
        x_end = np.asarray(self.f(w[ix[N - 1]], w[iu[N - 1]])).reshape(-1)
        if np.all(np.isfinite(x_end)):
            w[ix[N]] = x_end
        w[ix[0]] = x
        lam_x = shift(self._lam_x)
        # constraint blocks: [initial state, dynamics 0 .. N-1]; each takes its successor's multiplier
        lam_g = np.concatenate([self._lam_g[nx:], self._lam_g[-nx:]])
        return w, lam_x, lam_g

    # ----------------------------------------------------------------- act
    def solve(self, obs) -> MPCStats:
        """Solve the MPC problem at ``obs`` and return its statistics (the plan included)."""
        x = self._check_obs(obs)
        w0, lam_x0, lam_g0 = self.initial_guess(x)
        t0 = time.perf_counter()
        sol, status, ok, iters = self._run_solver(x, w0, lam_x0, lam_g0)
        dt = time.perf_counter() - t0
        return self._accept(x, sol, dt, status, ok, iters)

    def _run_solver(self, x, w0, lam_x0, lam_g0) -> tuple[dict | None, str, bool, int]:
        """One NLP solve: (solution arrays x, f, g, lam_x, lam_g or None, status, solver success, iterations)."""
        args = dict(x0=w0, p=x, lbx=self.lbw, ubx=self.ubw, lbg=0.0, ubg=0.0)
        if lam_x0 is not None:
            args.update(lam_x0=lam_x0, lam_g0=lam_g0)
        try:
            out = self._solver(**args)
        except RuntimeError as e:  # CasADi raises on evaluation errors (e.g. NaN in the model)
            return None, f"error: {e}".splitlines()[0], False, -1
        st = self._solver.stats()
        sol = {k: np.asarray(out[k], dtype=np.float64).reshape(-1) for k in ("x", "f", "g", "lam_x", "lam_g")}
        return sol, str(st.get("return_status", "")), bool(st.get("success", False)), int(st.get("iter_count", -1))

    def _accept(self, x, sol, dt: float, status: str, ok: bool, iters: int) -> MPCStats:
        self.steps += 1
        if sol is not None:
            w, g = sol["x"], sol["g"]
            cost = float(sol["f"][0])
            ok = ok and np.all(np.isfinite(w)) and np.isfinite(cost) and np.max(np.abs(g), initial=0.0) <= self.feasibility_tol
        else:
            ok = False
        if ok:
            self._w = w
            self._lam_x = sol["lam_x"]
            self._lam_g = sol["lam_g"]
            self._plan_u = w[self._iu].copy()
            self._plan_pos = 0
            u = self.clip_action(self._plan_u[0])
            plan_x = w[self._ix].copy()
        else:
            self.failures += 1
            u = self._fallback_action()
            plan_x = np.full((self.horizon + 1, self.n_x), np.nan)
            cost = float("nan")
            # the next solve must not start from a plan that led to failure
            self._w = None
        stats = MPCStats(
            action=u, success=bool(ok), status=str(status), iterations=iters, solve_time=dt, cost=cost,
            fallback=not ok, failures=self.failures,
            plan_u=self._plan_u.copy() if self._plan_u is not None else np.zeros((0, self.n_u)), plan_x=plan_x,
        )
        self.last_stats = stats
        return stats

    def _fallback_action(self) -> np.ndarray:
        """Next action of the last good plan (its last action once exhausted); zero clipped if none."""
        if self._plan_u is None:
            return self.clip_action(np.zeros(self.n_u))
        self._plan_pos = min(self._plan_pos + 1, self.horizon - 1)
        return self.clip_action(self._plan_u[self._plan_pos])

    def act(self, obs, return_stats: bool = False) -> np.ndarray | tuple[np.ndarray, MPCStats]:
        """First action of the plan at ``obs`` (shape (n_u,)); with ``return_stats`` also the :class:`MPCStats`."""
        stats = self.solve(obs)
        return (stats.action.copy(), stats) if return_stats else stats.action.copy()

    __call__ = act
