"""Benchmark: MPC compute time per step with ipopt, sqpmethod/qrqp, and the generated C of sqpmethod/qrqp.

One run, one machine: a Pendulum-v1 dynamics model is fitted from real random
transitions (or read from a run directory), the same MPC problem (horizon,
cost, bounds) is solved by the three solvers in closed loop on the real env
over the same reset seeds, and the per-step solve times are reported as
ratios against ipopt measured in the same run. Writes results/controllers.json
and, with --write-docs, the ``controllers`` section of docs/benchmarks.md and
docs/results/controllers.json.

    .venv/bin/python benchmarks/controllers.py --episodes 5 --write-docs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import casadi as ca
import gymnasium as gym
import numpy as np
import pysindy as ps

ROOT = Path(__file__).resolve().parents[1]
# run as a script, this file's directory comes first on sys.path and its name would hide the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from benchmarks.docs_output import write_results, write_section  # noqa: E402
from controllers import MPC, CompiledMPC, QuadraticCost  # noqa: E402
from sindyrl.data import collect  # noqa: E402
from sindyrl.sparse import SparseModel  # noqa: E402

OBS = ["cos_th", "sin_th", "th_dot"]


@dataclass
class Args:
    episodes: int = 5
    """real Pendulum-v1 episodes per solver (reset seeds 0..episodes-1)"""
    steps: int = 200
    """steps per episode"""
    horizon: int = 30
    """MPC horizon"""
    fit_episodes: int = 15
    """random-action episodes for the dynamics fit (ignored with --run)"""
    run: str = ""
    """run directory to read models/dynamics.json from (default: fit one here)"""
    seed: int = 0
    """seed of the random-action data"""
    out: str = "results/controllers.json"
    """where the JSON results go"""
    write_docs: bool = False
    """rewrite the controllers section of docs/benchmarks.md"""


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", help=f.metadata.get("help"))
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    return Args(**vars(p.parse_args()))


def fit_dynamics(n_episodes: int, seed: int) -> SparseModel:
    """Cubic SINDy model of Pendulum-v1 from ``n_episodes`` random-action episodes of 200 steps."""
    buf = collect(gym.make("Pendulum-v1"), 200 * n_episodes, seed=seed)
    fitted = ps.DiscreteSINDy(
        optimizer=ps.STLSQ(threshold=1e-3, alpha=1e-6), feature_library=ps.PolynomialLibrary(degree=3)
    ).fit(buf.obs, t=1, x_next=buf.next_obs, u=buf.actions, feature_names=OBS + ["u"])
    return SparseModel.from_pysindy(fitted, inputs=OBS + ["u"], outputs=OBS, unit_pairs=[(0, 1)], name="dynamics")


def episode(mpc: MPC, env: gym.Env, seed: int, steps: int) -> tuple[list[float], float, int]:
    """One closed-loop episode: per-step solve times (s), return, failed solves."""
    obs, _ = env.reset(seed=seed)
    mpc.reset()
    times, total = [], 0.0
    for _ in range(steps):
        u, st = mpc.act(obs, return_stats=True)
        times.append(st.solve_time)
        obs, r, *_ = env.step(u.astype(np.float32))
        total += float(r)
    return times, total, mpc.failures


def closed_loops(solvers: dict[str, MPC], episodes: int, steps: int) -> dict:
    """Every solver's closed loop over the same seeds, episodes interleaved so machine load hits all alike."""
    env = gym.make("Pendulum-v1")
    acc = {k: {"times": [], "returns": [], "failures": 0} for k in solvers}
    for ep in range(episodes):
        for name, mpc in solvers.items():
            t, ret, fails = episode(mpc, env, ep, steps)
            acc[name]["times"] += t
            acc[name]["returns"].append(ret)
            acc[name]["failures"] += fails
    env.close()
    res = {}
    for name, a in acc.items():
        t = np.asarray(a["times"]) * 1e3
        res[name] = {"ms_mean": float(t.mean()), "ms_median": float(np.median(t)),
                     "ms_p95": float(np.percentile(t, 95)), "ms_max": float(t.max()),
                     "return_mean": float(np.mean(a["returns"])), "return_std": float(np.std(a["returns"])),
                     "failures": int(a["failures"]), "steps": int(t.size)}
    return res


def main() -> None:
    args = parse_args()
    t0 = time.time()
    dyn = SparseModel.from_json(Path(args.run) / "models" / "dynamics.json") if args.run else fit_dynamics(
        args.fit_episodes, args.seed)
    cost = QuadraticCost([1.0, 0.0, 0.0], Q=[1.0, 1.0, 0.1], R=0.001, terminal_weight=[10.0, 10.0, 1.0])
    common = dict(horizon=args.horizon, action_bounds=([-2.0], [2.0]))
    solvers = {
        "ipopt": MPC(dyn, cost, solver="ipopt", **common),
        "sqpmethod_qrqp": MPC(dyn, cost, solver="sqpmethod", **common),
    }
    tb = time.time()
    solvers["generated_c"] = CompiledMPC.from_mpc(solvers["sqpmethod_qrqp"])
    build_s = time.time() - tb
    c_lines = sum(1 for _ in solvers["generated_c"].source_path.open())
    res = closed_loops(solvers, args.episodes, args.steps)
    for r in res.values():
        r["ratio_to_ipopt"] = r["ms_mean"] / res["ipopt"]["ms_mean"]
        r["median_ratio_to_ipopt"] = r["ms_median"] / res["ipopt"]["ms_median"]
    doc = {
        "command": "python benchmarks/controllers.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in dataclasses.asdict(args).items()
            if not isinstance(v, bool) and v != "" and k != "out") + (" --write-docs" if args.write_docs else ""),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "casadi": ca.__version__, "horizon": args.horizon, "episodes": args.episodes, "steps": args.steps,
        "dynamics_source": f"models/dynamics.json of {args.run}" if args.run else (
            f"cubic SINDy model fitted on {args.fit_episodes * 200:,} random real steps"),
        "dynamics_nnz": dyn.nnz, "dynamics_hash": dyn.content_hash(), "c_build_seconds": build_s,
        "c_source_lines": c_lines, "results": res, "wall_seconds": time.time() - t0,
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    table = markdown(doc)
    print(table)
    if args.write_docs:
        write_section("controllers", table)
        write_results("controllers", figures(doc), doc["command"])


def figures(doc: dict) -> dict:
    """The headline figures for docs/results/controllers.json: per solver time, ratio to ipopt, return."""
    keep = ("ms_mean", "ms_median", "ms_p95", "ratio_to_ipopt", "median_ratio_to_ipopt", "return_mean", "failures")
    return {"dynamics_nnz": doc["dynamics_nnz"], "c_source_lines": doc["c_source_lines"],
            "c_build_seconds": doc["c_build_seconds"],
            **{solver: {k: r[k] for k in keep} for solver, r in doc["results"].items()}}


def markdown(doc: dict) -> str:
    rows = [
        "## Controllers: MPC compute time per step",
        "",
        f"`{doc['command']}` (CasADi {doc['casadi']}; {doc['machine']}). Pendulum-v1 MPC, multiple shooting, "
        f"horizon {doc['horizon']}, input bounds ±2, quadratic tracking cost, warm starts; dynamics: "
        f"{doc['dynamics_source']} ({doc['dynamics_nnz']} nonzero coefficients). Each solver "
        f"runs its own closed loop on the real env, reset seeds 0..{doc['episodes'] - 1}, {doc['steps']} steps "
        "each, episodes interleaved between solvers; times are the solve call only (for the generated C: the "
        "ctypes call into the gcc -O2 library). A failed solve is one the solver did not report as converged "
        "(the generated C reports no status: there a plan counts when it is finite and meets the dynamics); the "
        "controller then applies the previous plan's next action.",
        "",
        "| solver | ms per step (mean / median / p95 / max) | ratio to ipopt (mean / median) | return (mean ± std) "
        "| failed solves |",
        "|---|---|---|---|---|",
    ]
    names = {"ipopt": "ipopt (CasADi nlpsol)", "sqpmethod_qrqp": "sqpmethod + qrqp (CasADi nlpsol)",
             "generated_c": "sqpmethod + qrqp, generated C"}
    for k, r in doc["results"].items():
        rows.append(
            f"| {names.get(k, k)} | {r['ms_mean']:.2f} / {r['ms_median']:.2f} / {r['ms_p95']:.2f} / {r['ms_max']:.1f} "
            f"| {r['ratio_to_ipopt']:.2f} / {r['median_ratio_to_ipopt']:.2f} | {r['return_mean']:.1f} ± {r['return_std']:.1f} | {r['failures']} |"
        )
    rows += [
        "",
        f"The generated C is {doc['c_source_lines']:,} lines, self-contained (no malloc), built in "
        f"{doc['c_build_seconds']:.1f} s. Absolute times are for orientation only (shared 2-core machine).",
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
