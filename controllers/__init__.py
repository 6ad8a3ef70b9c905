"""Classical control design on a learned sparse model: LQR, nonlinear MPC (CasADi), and generated C of the MPC.

Everything here reads a :class:`sindyrl.sparse.SparseModel`; the CasADi backend
(:func:`casadi_function`) is the symbolic twin of ``SparseModel.evaluate``.
"""

from .casadi_backend import casadi_expr, casadi_function
from .codegen import CompiledMPC, compile_shared, generate_solver_c
from .costs import CASADI_REWARDS, KNOWN_TARGETS, Cost, QuadraticCost, RewardCost, pendulum_reward
from .lqr import LQR, Equilibrium, find_equilibrium, linearise
from .mpc import MPC, MPCStats

__all__ = [
    "casadi_expr",
    "casadi_function",
    "Cost",
    "QuadraticCost",
    "RewardCost",
    "pendulum_reward",
    "CASADI_REWARDS",
    "KNOWN_TARGETS",
    "LQR",
    "Equilibrium",
    "find_equilibrium",
    "linearise",
    "MPC",
    "MPCStats",
    "CompiledMPC",
    "generate_solver_c",
    "compile_shared",
]
