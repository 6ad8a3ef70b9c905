"""The ``robust`` stage of ``sindyrl run``: non-dominated policies and test-time selection for a run.

Policies and attackers train on the run's sparse surrogate and everything is
evaluated on the real env (``run.make_env()``). Options: ``stages.robust`` in
the config (:class:`sindyrl.stage_options.RobustOptions`); ``sindyrl robust
CONFIG|RUN`` (in :mod:`sindyrl.cli`) overrides them with its flags and trains
the run first when given a config. Outputs, in the run directory:
``robust/payoff.csv``, ``robust/adaptation.json``, ``robust/policies/*.zip``,
``robust/attackers/*.zip``, ``plots/robust_payoff.png``,
``plots/robust_regret.png``; the stage returns the ``robust_*`` figures and
``real_steps_robust``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..stage_options import RobustOptions

__all__ = ["RobustOptions", "stage", "run_robust", "run_factories"]


# --------------------------------------------------------------------- run glue
def run_factories(run: Any, n_envs: int | None = None, seed: int = 0) -> tuple[Callable, Callable, np.ndarray]:
    """Training env factories on the run's surrogate, and the run's real observations.

    Returns ``(make_vec, make_single, obs)``: a :class:`~sindyrl.surrogate.SurrogateVecEnv`
    factory (``n_envs`` copies, default the config's) for policy training, a
    :class:`~sindyrl.surrogate.SurrogateEnv` factory for attacker training, and
    every real observation of the run (for the attack scale).
    """
    from ..dyna import build_surrogate
    from ..surrogate import SurrogateEnv

    cfg = run.config
    buffer = run.load_data()
    dynamics = run.load_model("dynamics")
    spec = run.spec
    reward = run.load_reward()
    counter = {"k": 0}

    def make_vec():
        counter["k"] += 1
        return build_surrogate(cfg, dynamics, reward, buffer, spec, seed + 7 * counter["k"], n_envs=n_envs)

    def make_single():
        counter["k"] += 1
        return SurrogateEnv.from_vec(build_surrogate(cfg, dynamics, reward, buffer, spec, seed + 7 * counter["k"],
                                                     n_envs=1))

    return make_vec, make_single, np.asarray(buffer.obs, dtype=np.float64)


def run_robust(natural: Any, make_train_env: Callable, make_attacker_env: Callable, make_eval_env: Callable,
               obs_data: np.ndarray, options: RobustOptions, out_dir: str | Path, plots_dir: str | Path | None = None,
               echo: Callable[..., None] = print) -> dict:
    """Discovery, payoff matrix, bandit evaluation and plots; returns the flat summary figures.

    The Python form of ``sindyrl robust`` for any natural SB3 policy and env factories.
    """
    from .adaptation import evaluate_adaptation, plot_regret
    from .attacks import observation_scale
    from .bandits import switching_schedule
    from .discovery import discover

    o = options
    seed = int(o.seed or 0)
    out_dir = Path(out_dir)
    plots_dir = Path(plots_dir) if plots_dir is not None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    scale = observation_scale(obs_data, o.scale)
    echo(f"[robust] epsilon {o.epsilon:g} x {o.scale} scale {np.array2string(scale, precision=3)}")
    res = discover(natural, make_train_env, make_eval_env, epsilon=o.epsilon, scale=scale,
                   attack_kinds=tuple(o.attacks), iterations=o.iterations, rounds=o.rounds,
                   min_improvement=o.min_improvement, attacker_steps=o.attacker_steps, policy_steps=o.policy_steps,
                   eval_episodes=o.eval_episodes, mad_steps=o.mad_steps, mad_step_size=o.mad_step_size,
                   make_attacker_env=make_attacker_env, seed=seed, log=lambda s: echo(f"[robust] {s}"))
    t_disc = time.time() - t0
    payoff = res.payoff
    payoff.to_csv(out_dir / "payoff.csv")
    payoff.heatmap(plots_dir / "robust_payoff.png", title=f"Payoff (epsilon {o.epsilon:g})", kept=res.kept)
    (out_dir / "policies").mkdir(exist_ok=True)
    (out_dir / "attackers").mkdir(exist_ok=True)
    for name, p in res.policies.items():
        if name != "natural":
            p.save(out_dir / "policies" / f"{name}.zip")
    for name, a in res.attacks.items():
        if hasattr(a, "model"):
            a.model.save(out_dir / "attackers" / f"{name}.zip")
    # ---- test-time selection under a switching schedule
    missing = [s for s in o.schedule if s not in res.attacks]
    if missing:
        raise ValueError(f"stages.robust.schedule: {missing[0]!r} is not among this run's attacks {list(res.attacks)}")
    schedule = switching_schedule(o.schedule, o.bandit_episodes, o.segment)
    rng = res.return_range
    bounds = tuple(o.return_bounds) if o.return_bounds else (res.random_return, float(payoff.values.max()))
    switches = o.exp3s_switches if o.exp3s_switches is not None else max(0, -(-o.bandit_episodes // o.segment) - 1)
    arms = {k: res.policies[k] for k in res.kept}
    echo(f"[robust] bandits over {list(arms)} for {o.bandit_episodes} real episodes (schedule {o.schedule}, "
         f"segments of {o.segment})")
    ad = evaluate_adaptation(arms, res.attacks, schedule, make_eval_env, bounds, return_range=rng,
                             bandits=[*o.bandits, *o.extra_bandits], n_seeds=o.bandit_seeds, seed=seed + 50_000,
                             bandit_options={"exp3ix": {"c": o.c}, "discounted_exp3ix": {"c": o.c, "discount": o.discount},
                                             "exp3s": {"switches": switches}, **o.extra_bandits})
    plot_regret(ad, plots_dir / "robust_regret.png", title=f"Test-time selection (epsilon {o.epsilon:g})")
    np.savez_compressed(out_dir / "returns_table.npz", table=ad.table, schedule=np.asarray(schedule),
                        policies=np.asarray(ad.policies), **{f"arms_{k}": v for k, v in ad.arms.items()})
    mad_drop = None
    if "mad" in payoff.attacks:
        mad_drop = (res.natural_return - payoff.value("natural", "mad")) / rng
    report = {
        "options": dataclasses.asdict(o), "scale": scale.tolist(), "kept": res.kept,
        "random_return": res.random_return, "natural_return": res.natural_return,
        "mad_advantage_removed": mad_drop, "history": res.history,
        "payoff": {"policies": payoff.policies, "attacks": payoff.attacks, "values": payoff.values.tolist()},
        "adaptation": ad.metrics, "discovery_seconds": t_disc, "seconds": time.time() - t0,
    }
    tmp = out_dir / ".adaptation.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, default=float))
    tmp.replace(out_dir / "adaptation.json")
    m = ad.metrics
    summary = {
        "robust_epsilon": o.epsilon, "robust_policies": len(res.policies), "robust_non_dominated": len(res.kept),
        "robust_kept": ",".join(res.kept), "robust_mad_advantage_removed": mad_drop,
        "robust_natural_return_schedule": m.get("natural_mean_return"),
        "robust_best_fixed_return_schedule": m["best_fixed_mean_return"],
        "robust_best_fixed_policy": m["best_fixed_policy"],
    }
    for k in [*o.bandits, *o.extra_bandits]:
        summary[f"robust_{k}_return_schedule"] = m[f"{k}_mean_return"]
        summary[f"robust_{k}_gap_to_best_rel"] = m[f"{k}_gap_to_best_rel"]
        summary[f"robust_{k}_regret_exponent"] = m[f"{k}_regret_exponent"]
    summary["robust_seconds"] = time.time() - t0
    for line in _summary_lines(report):
        echo(line)
    return summary


def _summary_lines(report: dict) -> list[str]:
    m = report["adaptation"]
    lines = [f"[robust] non-dominated set: {report['kept']}"]
    if report["mad_advantage_removed"] is not None:
        lines.append(f"[robust] MAD removes {report['mad_advantage_removed']:.0%} of the natural policy's advantage "
                     "over a random policy")
    lines.append(f"[robust] schedule mean return: natural {m.get('natural_mean_return', float('nan')):.1f}, "
                 f"best fixed ({m['best_fixed_policy']}) {m['best_fixed_mean_return']:.1f}")
    for k in [*report["options"]["bandits"], *report["options"]["extra_bandits"]]:
        lines.append(f"[robust]   {k:18s} {m[f'{k}_mean_return']:.1f} (gap to best {m[f'{k}_gap_to_best_rel']:+.1%} "
                     f"of range, final regret {m[f'{k}_final_regret']:.0f}, exponent {m[f'{k}_regret_exponent']:.2f})")
    return lines


def stage(run: Any, echo: Callable[..., None] = print, **options: Any) -> dict:
    """The ``robust`` stage: :func:`run_robust` on a trained run; returns the ``robust_*`` figures.

    ``options`` are the ``stages.robust`` keys of :class:`RobustOptions`. Real steps (payoff cells,
    the random policy's return, the bandit schedule) are counted in ``real_steps_robust``.
    """
    from ..evaluation import StepCounter

    o = RobustOptions.from_dict(options)
    if o.seed is None:
        o.seed = int(run.config.seed)
    natural = run.load_agent()
    make_vec, make_single, obs = run_factories(run, seed=o.seed)
    real = StepCounter(run.make_env)
    out = run_robust(natural, make_vec, make_single, real, obs, o, run.path / "robust", run.plots_dir, echo)
    out["real_steps_robust"] = real.steps
    return out
