"""Classical control design on a learned sparse model: LQR, nonlinear MPC (CasADi), and generated C of the MPC.

What a controller needs and a new system does not say (a differentiable cost, an equilibrium, the
states where episodes end) comes from the run: :func:`fit_known_reward`, :func:`best_steady_state`,
:func:`termination_box`.

Everything here reads a :class:`sindyrl.sparse.SparseModel`; the CasADi backend
(:func:`casadi_function`) is the symbolic twin of ``SparseModel.evaluate``.
Top-level names are imported lazily, so the CLI can register the ``control``
command without importing CasADi.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "casadi_expr": "controllers.casadi_backend",
    "casadi_function": "controllers.casadi_backend",
    "Cost": "controllers.costs",
    "QuadraticCost": "controllers.costs",
    "RewardCost": "controllers.costs",
    "pendulum_reward": "controllers.costs",
    "CASADI_REWARDS": "controllers.costs",
    "KNOWN_TARGETS": "controllers.costs",
    "LQR": "controllers.lqr",
    "Equilibrium": "controllers.lqr",
    "find_equilibrium": "controllers.lqr",
    "linearise": "controllers.lqr",
    "MPC": "controllers.mpc",
    "MPCStats": "controllers.mpc",
    "CompiledMPC": "controllers.codegen",
    "generate_solver_c": "controllers.codegen",
    "compile_shared": "controllers.codegen",
    "RewardFit": "controllers.reward_fit",
    "fit_known_reward": "controllers.reward_fit",
    "SteadyState": "controllers.steady_state",
    "NoSteadyState": "controllers.steady_state",
    "best_steady_state": "controllers.steady_state",
    "TerminationBox": "controllers.termination_box",
    "termination_box": "controllers.termination_box",
    "BUILTIN_BOXES": "controllers.termination_box",
    "control": "controllers.stage",
    "compare_policies": "controllers.stage",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'controllers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
