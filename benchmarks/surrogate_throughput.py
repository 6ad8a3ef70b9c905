"""Surrogate throughput: env-steps per second of the batched SurrogateVecEnv against the real env and a
per-step pysindy ``predict`` loop, measured in one run.

    python benchmarks/surrogate_throughput.py [--n-envs 256] [--seconds 3] [--write-docs]

The figures that matter are the ratios (same machine, same minute). Writes
results/surrogate_throughput.json and, with --write-docs, the `surrogate`
section of docs/benchmarks.md and docs/results/surrogate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pysindy as ps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.docs_output import write_results, write_section  # noqa: E402
from sindyrl.config import LibraryConfig  # noqa: E402
from sindyrl.data import collect  # noqa: E402
from sindyrl.dynamics import SINDyDynamics  # noqa: E402
from sindyrl.regression import build_library  # noqa: E402
from sindyrl.reward import known_reward  # noqa: E402
from sindyrl.surrogate import SurrogateVecEnv  # noqa: E402


@dataclass
class Args:
    n_envs: int = 256
    """parallel copies in the batched surrogate"""
    seconds: float = 3.0
    """minimum time per measurement"""
    degree: int = 3
    """polynomial degree of the dynamics model"""
    seed: int = 0
    write_docs: bool = False


def rate(step, batch: int, seconds: float) -> float:
    """env-steps per second of ``step()`` that advances ``batch`` env-steps per call."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main(args: Args) -> dict:
    env = gym.make("Pendulum-v1")
    buf = collect(env, 2000, seed=args.seed)
    names, acts = ["cos_th", "sin_th", "th_dot"], ["u"]
    lib = LibraryConfig(degree=args.degree)
    dyn = SINDyDynamics(names, acts, library=lib, n_models=20, unit_pairs=[(0, 1)], seed=args.seed).fit(buf)
    rng = np.random.default_rng(args.seed)

    # 1. batched surrogate (one numpy evaluation for all copies per step)
    venv = SurrogateVecEnv(dyn.model_, known_reward("pendulum"), buf.obs, env.observation_space, env.action_space,
                           horizon=200, n_envs=args.n_envs, seed=args.seed)
    venv.reset()
    acts_batch = rng.uniform(-2, 2, size=(args.n_envs, 1)).astype(np.float32)
    batched = rate(lambda: venv.step(acts_batch), args.n_envs, args.seconds)

    # 2. the real env, one step at a time
    env.reset(seed=args.seed)
    a1 = np.array([0.5], np.float32)

    def real_step():
        _, _, term, trunc, _ = env.step(a1)
        if term or trunc:
            env.reset()

    real = rate(real_step, 1, args.seconds)

    # 3. the same kind of model through pysindy's predict, one state per call (how the reference steps its surrogate)
    m = ps.DiscreteSINDy(optimizer=ps.STLSQ(threshold=1e-3, alpha=1e-5), feature_library=build_library(lib, 3, 1))
    m.fit(buf.obs, t=1, x_next=buf.next_obs, u=buf.actions)
    x = buf.obs[:1].copy()
    u = np.array([[0.5]])

    def pysindy_step():
        nonlocal x
        x = np.asarray(m.predict(x, u))

    per_step = rate(pysindy_step, 1, args.seconds)
    res = {
        "args": asdict(args), "machine": platform.platform(), "cpus": os.cpu_count(),
        "surrogate_vecenv_steps_per_s": batched, "real_env_steps_per_s": real, "pysindy_predict_steps_per_s": per_step,
        "ratio_vs_pysindy": batched / per_step, "ratio_vs_real_env": batched / real,
        "dynamics_nnz": dyn.model_.nnz, "dynamics_members": dyn.model_.n_models,
    }
    out = ROOT / "results" / "surrogate_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    command = f"python benchmarks/surrogate_throughput.py --n-envs {args.n_envs} --write-docs"
    table = (
        f"Command: `{command}` "
        f"(Pendulum-v1, degree-{args.degree} E-SINDy model with {dyn.model_.nnz} nonzero terms, "
        f"{dyn.model_.n_models} members, median aggregate).\n\n"
        "| path | env-steps/s | ratio (batched surrogate / this) |\n|---|---|---|\n"
        f"| SurrogateVecEnv, {args.n_envs} envs, one batched evaluation per step | {batched:,.0f} | 1 |\n"
        f"| real Pendulum-v1, one step per call | {real:,.0f} | {batched / real:.1f}× |\n"
        f"| pysindy `DiscreteSINDy.predict`, one state per call | {per_step:,.0f} | {batched / per_step:.0f}× |\n"
    )
    print(table)
    if args.write_docs:
        write_section("surrogate", f"## Surrogate throughput\n\n{table}")
        write_results("surrogate", {k: res[k] for k in (
            "surrogate_vecenv_steps_per_s", "real_env_steps_per_s", "pysindy_predict_steps_per_s", "ratio_vs_pysindy",
            "ratio_vs_real_env", "dynamics_nnz", "dynamics_members")} | {"n_envs": args.n_envs}, command)
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f, v in asdict(Args()).items():
        if isinstance(v, bool):
            p.add_argument(f"--{f.replace('_', '-')}", action="store_true")
        else:
            p.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    main(Args(**vars(p.parse_args())))
