"""Robust RL benchmark: non-dominated policies and test-time bandit selection on Pendulum.

    .venv/bin/python benchmarks/robust.py [--run runs/pendulum-...] [--quick]

1. The natural policy: the PPO agent of a Pendulum run (trained here with
   examples/configs/pendulum.yaml when ``--run`` is not given).
2. epsilon: the smallest value of a grid for which MAD (on the real env) takes
   away at least ``target_mad_drop`` of the natural policy's advantage over a
   random policy.
3. ``run_robust``: attackers and robust policies trained on the run's sparse
   surrogate, payoff matrix on the real env, EXP3-IX / EXP3.S / discounted
   EXP3-IX over the non-dominated set for ``bandit_episodes`` real episodes of
   a switching schedule (none -> MAD -> learned adversary -> none ...).
4. Checks of the issue's done-when list; results/robust.json and the
   ``robust`` section of docs/benchmarks.md.

Every figure is relative to baselines measured in the same run (the random
policy, the natural policy, the best fixed policy in hindsight).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.docs_output import write_results, write_section  # noqa: E402
from sindyrl.pipeline import record_summary, run_stage  # noqa: E402
from sindyrl.robust import MADAttack, episode_returns, observation_scale, random_policy  # noqa: E402
from sindyrl.robust.stage import RobustOptions, run_factories, run_robust  # noqa: E402
from sindyrl.runs import Run  # noqa: E402


@dataclass
class Args:
    run: str | None = None
    """Pendulum run directory with a trained agent (default: train one from examples/configs/pendulum.yaml)."""
    config: str = "examples/configs/pendulum.yaml"
    """Config used when --run is not given."""
    dyna_iterations: int = 3
    """Dyna iterations when training the run here (the example config's other settings are kept)."""
    eps_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
    """Candidate epsilons (units of the data's standard deviation per dimension)."""
    target_mad_drop: float = 0.3
    """MAD must take away at least this fraction of the natural policy's advantage over a random policy."""
    iterations: int = 3
    """K: at most this many new policies."""
    attacker_steps: int = 30_000
    """Surrogate steps per attacker training."""
    policy_steps: int = 50_000
    """Surrogate steps per robust policy training (PPO, warm-started)."""
    eval_episodes: int = 20
    """Real episodes per payoff cell."""
    bandit_episodes: int = 1200
    """Real episodes of the switching schedule (>= 200; 8 periods of none/MAD/adversary at 50 each)."""
    segment: int = 50
    """Episodes per attack in the schedule."""
    bandit_seeds: int = 50
    """Bandit runs on the same returns table."""
    c_large: float = 8.0
    """A second EXP3-IX learning-rate constant reported next to the theory's sqrt(2)."""
    seed: int = 0
    out: str = "results/robust.json"
    docs: str = "docs/benchmarks.md"
    quick: bool = False
    """Tiny budgets: checks that the script runs, figures meaningless."""
    docs_only: bool = False
    """Only rewrite the docs section from an existing results file (--out)."""


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action="store_true")
        elif f.name == "eps_grid":
            p.add_argument(flag, type=float, nargs="+", default=f.default)
        else:
            typ = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=typ, default=f.default)
    a = Args(**{k.replace("-", "_"): v for k, v in vars(p.parse_args()).items()})
    if a.quick:
        a = dataclasses.replace(a, dyna_iterations=1, eps_grid=(0.2, 0.4), iterations=1,
                                attacker_steps=512, policy_steps=1024, eval_episodes=3, bandit_episodes=20,
                                segment=5, bandit_seeds=3, out="results/robust_quick.json", docs="")
    return a


def get_run(a: Args) -> Run:
    if a.run:
        return Run.open(a.run)
    from sindyrl.config import load_config

    cfg = load_config(ROOT / a.config, [f"dyna.iterations={a.dyna_iterations}"])
    run = Run.create(cfg, root=ROOT / "runs", name=f"robust-bench-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"training the natural policy: {run.path}", flush=True)
    run_stage(run, "train", echo=print, skip_ok=False, progress_bar=False)
    return run


def calibrate_epsilon(a: Args, run: Run, natural, scale: np.ndarray) -> tuple[float, dict]:
    """Smallest epsilon of the grid where MAD removes >= target of the natural-minus-random advantage.

    Measured on the payoff matrix's episodes (same count, same reset seeds), so
    the figure is the one the payoff matrix then reports.
    """
    env = run.make_env()
    space = env.observation_space
    n = a.eval_episodes
    clean = episode_returns(natural, run.make_env, None, n, seed=a.seed).mean()
    rnd = episode_returns(random_policy(env.action_space, a.seed), run.make_env, None, n, seed=a.seed).mean()
    table = {}
    for eps in a.eps_grid:
        mad = episode_returns(natural, run.make_env, MADAttack(eps, scale, space.low, space.high), n,
                              seed=a.seed).mean()
        drop = (clean - mad) / (clean - rnd)
        table[eps] = {"mad_return": float(mad), "advantage_removed": float(drop)}
        print(f"  epsilon {eps:g}: natural under MAD {mad:.1f} (clean {clean:.1f}, random {rnd:.1f}): "
              f"{drop:.0%} of the advantage removed", flush=True)
        if drop >= a.target_mad_drop:
            return eps, {"clean": float(clean), "random": float(rnd), "grid": table}
    raise RuntimeError(f"no epsilon in {a.eps_grid} lets MAD remove {a.target_mad_drop:.0%} of the advantage")


def write_docs(a: Args, res: dict) -> None:
    m = res["adaptation"]
    P = res["payoff"]
    lines = ["## Robust RL: non-dominated set and test-time bandit", "",
             f"Command: `{res['command']}` ({res['seconds'] / 60:.0f} min on the shared 2-core machine). "
             f"Run: `{res['run']}` (PPO natural policy trained on the sparse surrogate); "
             "attackers and robust policies trained on the same surrogate, every return below measured on the "
             "real Pendulum-v1.", "",
             f"epsilon = {res['epsilon']:g} x the per-dimension standard deviation of the run's real observations "
             f"(smallest of {list(a.eps_grid)} where MAD removes >= {a.target_mad_drop:.0%} of the natural "
             f"policy's advantage over a random policy: {res['calibration']['grid'][str(res['epsilon'])]['advantage_removed']:.0%} "
             f"in calibration, {res['mad_advantage_removed']:.0%} in the payoff matrix). "
             f"Random policy {res['random_return']:.0f}, natural policy {res['natural_return']:.0f} "
             "(mean return, no attack).", "",
             f"Payoff matrix (mean return over {a.eval_episodes} real episodes per cell, same initial states; "
             "`*` = non-dominated):", "",
             "| policy | " + " | ".join(P["attacks"]) + " |", "|---|" + "---:|" * len(P["attacks"])]
    for p, row in zip(P["policies"], P["values"]):
        star = " *" if p in res["kept"] else ""
        lines.append(f"| {p}{star} | " + " | ".join(f"{v:.0f}" for v in row) + " |")
    # Why each kept policy is kept: the column where it leads the other kept policies most, with standard errors.
    from sindyrl.robust.payoff import PayoffMatrix

    pm = PayoffMatrix.from_csv(ROOT / res["run"] / "robust" / "payoff.csv")
    notes = []
    for p in res["kept"]:
        others = [q for q in res["kept"] if q != p]
        if not others:
            continue
        i = pm.policies.index(p)
        rows = [pm.policies.index(q) for q in others]
        lead = pm.values[i] - pm.values[rows].max(axis=0)
        j = int(np.argmax(lead))
        se = float(np.hypot(pm.stderr[i, j], pm.stderr[rows, j].max()))
        notes.append(f"{p} leads under `{pm.attacks[j]}` by {lead[j]:.0f} (standard error of the difference "
                     f"about {se:.0f})")
    if notes:
        from sindyrl.robust.payoff import non_dominated

        tol = 2 * float(np.median(pm.stderr))
        robust_set = [pm.policies[i] for i in non_dominated(pm, tol=tol)]
        lines += ["", "Why each kept policy is non-dominated: " + "; ".join(notes) + ". "
                  f"With a tolerance of two median standard errors ({tol:.0f}) the non-dominated set would be "
                  f"{robust_set}."]
    lines += ["", f"Test-time selection over {m['policies']} for {m['episodes']} real episodes "
              f"(schedule {res['options']['schedule']} in segments of {res['options']['segment']}; "
              f"mean over {m['bandit_seeds']} bandit runs on one measured returns table):", "",
              "| selector | mean return | gap to best fixed (share of random-to-natural range) | final regret | "
              "regret exponent (log-log slope at period ends) | R(T)/R(T/2) | dynamic regret |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines.append(f"| natural policy alone | {m['natural_mean_return']:.1f} | "
                 f"{(m['best_fixed_mean_return'] - m['natural_mean_return']) / m['return_range']:+.1%} | | | | |")
    lines.append(f"| best fixed in hindsight ({m['best_fixed_policy']}) | {m['best_fixed_mean_return']:.1f} | 0 | 0 | | | |")
    lines.append(f"| best policy per segment (oracle) | {m['segment_best_mean_return']:.1f} | "
                 f"{(m['best_fixed_mean_return'] - m['segment_best_mean_return']) / m['return_range']:+.1%} | | | | |")
    for k in [*res["options"]["bandits"], *res["options"]["extra_bandits"]]:
        lines.append(f"| {k} | {m[f'{k}_mean_return']:.1f} | {m[f'{k}_gap_to_best_rel']:+.1%} | "
                     f"{m[f'{k}_final_regret']:.0f} | {m[f'{k}_regret_exponent']:.2f} | "
                     f"{m[f'{k}_regret_half_ratio']:.2f} | {m[f'{k}_dynamic_regret']:.0f} |")
    lines += ["", "Done-when checks: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in res["checks"].items())
              + ".", "", f"Plots: `{res['run']}/plots/robust_payoff.png`, `{res['run']}/plots/robust_regret.png`."]
    write_section("robust", "\n".join(lines), ROOT / a.docs)
    write_results("robust", figures(res), res["command"], ROOT / a.docs)


def figures(res: dict) -> dict:
    """The headline figures for docs/results/robust.json: baselines, set size, each selector's return and regret."""
    m = res["adaptation"]
    per_bandit = ("mean_return", "gap_to_best_rel", "final_regret", "regret_exponent", "regret_half_ratio",
                  "dynamic_regret")
    return {
        "epsilon": res["epsilon"], "random_return": res["random_return"], "natural_return": res["natural_return"],
        "mad_advantage_removed": res["mad_advantage_removed"], "kept_policies": len(res["kept"]),
        "natural_mean_return": m["natural_mean_return"], "best_fixed_mean_return": m["best_fixed_mean_return"],
        "segment_best_mean_return": m["segment_best_mean_return"], "schedule_episodes": m["episodes"],
        "checks_passed": sum(bool(v) for v in res["checks"].values()), "checks_total": len(res["checks"]),
        **{k: {f: m[f"{k}_{f}"] for f in per_bandit}
           for k in [*res["options"]["bandits"], *res["options"]["extra_bandits"]]},
        "seconds": res["seconds"],
    }


def main() -> None:
    a = parse_args()
    if a.docs_only:
        write_docs(a, json.loads((ROOT / a.out).read_text()))
        print(f"rewrote the robust section of {a.docs} from {a.out}")
        return
    torch.set_num_threads(1)
    t0 = time.time()
    run = get_run(a)
    natural = run.load_agent()
    make_vec, make_single, obs = run_factories(run, seed=a.seed)
    scale = observation_scale(obs, "std")
    print("calibrating epsilon", flush=True)
    eps, calib = calibrate_epsilon(a, run, natural, scale)
    opts = RobustOptions(epsilon=eps, iterations=a.iterations, attacker_steps=a.attacker_steps,
                         policy_steps=a.policy_steps, eval_episodes=a.eval_episodes,
                         bandit_episodes=a.bandit_episodes, segment=a.segment, bandit_seeds=a.bandit_seeds, seed=a.seed,
                         extra_bandits={f"exp3ix@c{a.c_large:g}": {"c": a.c_large}})
    summary = run_robust(natural, make_vec, make_single, run.make_env, obs, opts, run.path / "robust", run.plots_dir,
                         echo=lambda *x: print(*x, flush=True))
    record_summary(run, summary)
    report = json.loads((run.path / "robust" / "adaptation.json").read_text())
    m = report["adaptation"]
    checks = {
        f"MAD removes >= {a.target_mad_drop:.0%} of the advantage": report["mad_advantage_removed"] >= a.target_mad_drop,
        ">= 2 non-dominated policies": len(report["kept"]) >= 2,
        f">= 200 schedule episodes ({m['episodes']})": m["episodes"] >= 200,
        "EXP3-IX beats the natural policy": bool(m.get("exp3ix_beats_natural")),
        "EXP3-IX within 5% of the best fixed policy": m["exp3ix_gap_to_best_rel"] <= 0.05,
        "EXP3-IX regret sublinear (exponent < 1)": m["exp3ix_regret_exponent"] < 1,
        f"EXP3-IX c={a.c_large:g} regret sublinear": m[f"exp3ix@c{a.c_large:g}_regret_exponent"] < 1,
        "EXP3.S beats EXP3-IX on the switching schedule": m["exp3s_mean_return"] > m["exp3ix_mean_return"],
        "discounted EXP3-IX beats EXP3-IX on the switching schedule":
            m["discounted_exp3ix_mean_return"] > m["exp3ix_mean_return"],
    }
    res = dict(report, epsilon=eps, calibration={"clean": calib["clean"], "random": calib["random"],
                                                 "grid": {str(k): v for k, v in calib["grid"].items()}},
               checks=checks, run=str(run.path.relative_to(ROOT) if run.path.is_relative_to(ROOT) else run.path),
               seconds=time.time() - t0, command="python benchmarks/robust.py " + " ".join(sys.argv[1:]),
               args=dataclasses.asdict(a))
    out = ROOT / a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    for k, v in checks.items():
        print(f"  [{'x' if v else ' '}] {k}")
    if a.docs:
        write_docs(a, res)
        print(f"wrote {out} and the robust section of {a.docs}")
    print(f"{(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
