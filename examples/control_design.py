"""Control design on a learned sparse model: LQR and MPC for Pendulum-v1, then generated C of the MPC.

The steps a control engineer would take with sindyrl:

1. get a model: collect random real transitions and fit sparse (E-SINDy) dynamics,
   or load ``models/dynamics.json`` from a run (``--run runs/<name>``);
2. read the equations, find the upright equilibrium of the learned map and
   linearise there; design an LQR and check its closed-loop eigenvalues;
3. try the LQR on the real pendulum near upright;
4. design a nonlinear MPC on the same model (input bounds, reward as cost) and
   swing the real pendulum up from the evaluation's initial states;
5. generate C for the MPC solver (sqpmethod + qrqp), compile it with gcc and
   check it plans the same actions as the Python MPC.

    .venv/bin/python examples/control_design.py --episodes 3
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from controllers import LQR, MPC, CompiledMPC, RewardCost, pendulum_reward
from sindyrl.config import LibraryConfig
from sindyrl.data import collect
from sindyrl.dynamics import SINDyDynamics
from sindyrl.evaluation import evaluate_policy
from sindyrl.sparse import SparseModel


@dataclass
class Args:
    run: str = ""
    """run directory to take models/dynamics.json from (default: collect data and fit here)"""
    random_steps: int = 3000
    """random-action real steps for the fit"""
    episodes: int = 5
    """real evaluation episodes for the MPC (reset seeds 0..episodes-1)"""
    max_steps: int = 200
    """steps per episode (Pendulum-v1 has 200)"""
    horizon: int = 30
    """MPC horizon (steps of 0.05 s)"""
    lqr_starts: int = 100
    """LQR trials from random angles within 0.2 rad of upright"""
    codegen: bool = True
    """build the generated C of the MPC (needs gcc)"""
    seed: int = 0
    """seed of data collection and of the ensemble fit"""


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        if f.type in ("bool", bool):
            p.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false")
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return Args(**vars(p.parse_args()))


args = parse_args()
obs_names, action_names = ["cos_th", "sin_th", "th_dot"], ["u"]
bounds = ([-2.0], [2.0])

# ---- 1. the learned model
if args.run:
    dyn = SparseModel.from_json(f"{args.run}/models/dynamics.json")
else:
    data = collect(gym.make("Pendulum-v1"), args.random_steps, seed=args.seed)
    dyn = SINDyDynamics(obs_names, action_names, library=LibraryConfig(degree=3), n_models=10,
                        unit_pairs=[(0, 1)], seed=args.seed).fit(data).model_
print(f"learned dynamics: {dyn.nnz} nonzero coefficients")
for line in dyn.equations(precision=3, lhs=[n + "[k+1]" for n in obs_names]):
    print("  ", line)

# ---- 2. equilibrium, linearisation, LQR
lqr = LQR(dyn, Q=[1.0, 1.0, 0.1], R=0.1, x_guess=[1.0, 0.0, 0.0], action_bounds=bounds)
print(f"equilibrium of the learned map: x* = {np.round(lqr.x_eq, 5)}, u* = {np.round(lqr.u_eq, 5)} "
      f"(residual {lqr.equilibrium.residual:.1e})")
print(f"open-loop |eig(A)| = {np.round(np.abs(np.linalg.eigvals(lqr.A)), 3)}  (> 1: upright is unstable)")
print(f"LQR gain K = {np.round(lqr.K, 3)}, closed-loop |eig(A - BK)| = {np.round(np.abs(lqr.closed_loop_eigenvalues), 3)}")

# ---- 3. LQR on the real pendulum near upright
env = gym.make("Pendulum-v1").unwrapped
rng = np.random.default_rng(args.seed)
final = []
for i in range(args.lqr_starts):
    env.reset(seed=i)
    env.state = np.array([rng.uniform(-0.2, 0.2), 0.0])  # angle within 0.2 rad of upright, at rest
    obs = env._get_obs()
    for _ in range(args.max_steps):
        obs, *_ = env.step(lqr.act(obs).astype(np.float32))
    final.append(abs(np.arctan2(obs[1], obs[0])))
print(f"LQR from {args.lqr_starts} starts within 0.2 rad: {np.mean(np.asarray(final) < 0.05):.0%} end within 0.05 rad")

# ---- 4. nonlinear MPC with the real reward as stage cost
mpc = MPC(dyn, RewardCost(pendulum_reward), horizon=args.horizon, action_bounds=bounds)
times: list[float] = []


def mpc_act(obs: np.ndarray) -> np.ndarray:
    u, stats = mpc.act(obs, return_stats=True)
    times.append(stats.solve_time)
    return u


class ResetPlan(gym.Wrapper):
    """Start every episode without the previous episode's plan."""

    def reset(self, **kwargs):
        mpc.reset()
        return self.env.reset(**kwargs)


returns = evaluate_policy(mpc_act, lambda: ResetPlan(gym.make("Pendulum-v1")), n_episodes=args.episodes, seed=0,
                          max_steps=args.max_steps)
print(f"MPC (ipopt, horizon {args.horizon}) on the real pendulum: return {returns.mean():.1f} ± {returns.std():.1f} "
      f"over {args.episodes} episodes, {1e3 * np.mean(times):.2f} ms per step, {mpc.failures} failed solves "
      "in the last episode")

# ---- 5. generated C of the sqpmethod/qrqp MPC, checked against the Python solver
if args.codegen:
    py = MPC(dyn, RewardCost(pendulum_reward), horizon=args.horizon, action_bounds=bounds, solver="sqpmethod")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="sindyrl_mpc_") as build:
        c = CompiledMPC.from_mpc(py, build_dir=build)
        print(f"generated {c.source_path.name} and built {c.library_path.name} in {time.time() - t0:.1f} s")
        env = gym.make("Pendulum-v1")
        obs, _ = env.reset(seed=0)
        diff, t_py, t_c = 0.0, [], []
        for _ in range(min(args.max_steps, 50)):
            u_py, s_py = py.act(obs, return_stats=True)
            u_c, s_c = c.act(obs, return_stats=True)
            diff = max(diff, float(np.max(np.abs(u_py - u_c))))
            t_py.append(s_py.solve_time)
            t_c.append(s_c.solve_time)
            obs, *_ = env.step(u_py.astype(np.float32))
        print(f"generated C vs Python sqpmethod on the same states: max |du| = {diff:.1e}; "
              f"{1e3 * np.mean(t_py):.2f} ms (Python) vs {1e3 * np.mean(t_c):.2f} ms (C) per step")
