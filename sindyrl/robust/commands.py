"""``sindyrl robust CONFIG|RUN``: non-dominated policies and test-time selection for a run.

Given a run directory, policies and attackers train on the run's sparse
surrogate and everything is evaluated on the real env (``run.make_env()``).
Given a config file, the run is trained first (the Dyna loop), then the same.

Options come from the config's ``stages.robust`` mapping (see
:class:`RobustOptions`), overridden by the command-line flags. Outputs, in the
run directory: ``robust/payoff.csv``, ``robust/adaptation.json``,
``robust/policies/*.zip``, ``robust/attackers/*.zip``,
``plots/robust_payoff.png``, ``plots/robust_regret.png``; headline figures are
merged into ``summary.json`` under ``robust_*`` keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RobustOptions", "register", "stage", "run_robust", "run_factories"]


@dataclass
class RobustOptions:
    """Settings of ``sindyrl robust`` (``stages.robust`` in a config).

    Attributes
    ----------
    epsilon : float
        Attack radius in units of ``scale`` (per-dimension spread of the run's real data).
    scale : str or list of float
        ``std`` | ``range`` | ``unit`` or explicit per-dimension scales.
    attacks : list of str
        Fixed payoff columns: ``none``, ``random``, ``mad``, ``critic`` (the
        critic attack is dropped for agents without a Q critic).
    mad_steps, mad_step_size
        PGD steps and step size (default epsilon / 10) of MAD and the critic attack.
    iterations, rounds, min_improvement
        Discovery: at most K new policies, attacker/policy alternations per
        iteration, stop when the best improvement over the set is below this
        fraction of the natural-minus-random return range.
    attacker_steps, policy_steps
        Surrogate steps per round for the attacker and for the new policy.
    eval_episodes
        Real episodes per payoff cell.
    schedule, segment, bandit_episodes
        Switching attack schedule for the bandit evaluation: names among the
        payoff columns (``adversary`` is the learned attacker trained against
        the natural policy), each for ``segment`` episodes, in turn.
    bandits, bandit_seeds, c, exp3s_switches, discount
        Bandits to compare, runs per bandit on the same returns table, EXP3-IX
        learning-rate constant, EXP3.S switch count (default: from the
        schedule) and discount of ``discounted_exp3ix``.
    extra_bandits
        More bandit variants played on the same returns table, e.g.
        ``{"exp3ix@c8": {"c": 8}}`` (name before ``@`` is the bandit).
    return_bounds
        Normalisation of returns to [0, 1] (clipped); default (random
        policy's mean return, best payoff cell).
    seed
        Default: the run's seed.
    """

    epsilon: float = 0.2
    scale: str | list[float] = "std"
    attacks: list[str] = field(default_factory=lambda: ["none", "random", "mad", "critic"])
    mad_steps: int = 10
    mad_step_size: float | None = None
    iterations: int = 3
    rounds: int = 1
    min_improvement: float = 0.05
    attacker_steps: int = 20_000
    policy_steps: int = 30_000
    eval_episodes: int = 10
    schedule: list[str] = field(default_factory=lambda: ["none", "mad", "adversary"])
    segment: int = 50
    bandit_episodes: int = 300
    bandits: list[str] = field(default_factory=lambda: ["exp3ix", "exp3s", "discounted_exp3ix"])
    bandit_seeds: int = 20
    c: float = math.sqrt(2)
    exp3s_switches: int | None = None
    discount: float = 0.95
    return_bounds: list[float] | None = None
    extra_bandits: dict = field(default_factory=dict)
    seed: int | None = None

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "stages.robust") -> RobustOptions:
        """Validate a mapping; errors name the key (``stages.robust.epsilon``)."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown key {where}.{unknown[0]} (known keys: {', '.join(sorted(known))})")
        o = cls(**d)
        o._validate(where)
        return o

    def _validate(self, where: str) -> None:
        def num(key, lo=None, integer=False, allow_none=False):
            v = getattr(self, key)
            if v is None and allow_none:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if integer:
                ok = ok and float(v).is_integer()
            if not ok or (lo is not None and v < lo):
                kind = "an integer" if integer else "a number"
                raise ValueError(f"{where}.{key}: expected {kind}{f' >= {lo}' if lo is not None else ''}, got {v!r}")

        num("epsilon", 0)
        num("mad_steps", 1, True)
        num("mad_step_size", 0, allow_none=True)
        num("iterations", 0, True)
        num("rounds", 1, True)
        num("min_improvement")
        num("attacker_steps", 1, True)
        num("policy_steps", 1, True)
        num("eval_episodes", 1, True)
        num("segment", 1, True)
        num("bandit_episodes", 1, True)
        num("bandit_seeds", 1, True)
        num("c", 0)
        num("exp3s_switches", 0, True, allow_none=True)
        num("seed", 0, True, allow_none=True)
        if not 0 < self.discount <= 1:
            raise ValueError(f"{where}.discount: must be in (0, 1], got {self.discount!r}")
        if isinstance(self.scale, str) and self.scale not in ("std", "range", "unit"):
            raise ValueError(f"{where}.scale: expected std, range, unit or a list of numbers, got {self.scale!r}")
        bad = sorted(set(self.attacks) - {"none", "random", "mad", "critic"})
        if bad:
            raise ValueError(f"{where}.attacks: unknown attack {bad[0]!r} (none, random, mad, critic)")
        known = set(self.attacks) | {"none", "adversary"}
        bad = [s for s in self.schedule if s not in known]
        if bad or not self.schedule:
            raise ValueError(f"{where}.schedule: {bad[0] if bad else 'empty'!r} is not an attack of this run "
                             f"(choose among {sorted(known)})")
        bad = sorted(set(self.bandits) - {"exp3ix", "exp3s", "discounted_exp3ix"})
        if bad or not self.bandits:
            raise ValueError(f"{where}.bandits: unknown bandit {bad[0] if bad else 'none given'!r} "
                             "(exp3ix, exp3s, discounted_exp3ix)")
        if not isinstance(self.extra_bandits, dict) or any(
                k.split("@")[0] not in ("exp3ix", "exp3s", "discounted_exp3ix") or not isinstance(v, dict)
                for k, v in self.extra_bandits.items()):
            raise ValueError(f"{where}.extra_bandits: expected {{'exp3ix@label': {{options}}}}, got {self.extra_bandits!r}")
        if self.return_bounds is not None and (len(self.return_bounds) != 2
                                               or not self.return_bounds[0] < self.return_bounds[1]):
            raise ValueError(f"{where}.return_bounds: expected [low, high] with low < high, got {self.return_bounds!r}")


# --------------------------------------------------------------------- run glue
def run_factories(run: Any, n_envs: int | None = None, seed: int = 0) -> tuple[Callable, Callable, np.ndarray]:
    """Training env factories on the run's surrogate, and the run's real observations.

    Returns ``(make_vec, make_single, obs)``: a :class:`~sindyrl.surrogate.SurrogateVecEnv`
    factory (``n_envs`` copies, default the config's) for policy training, a
    :class:`~sindyrl.surrogate.SurrogateEnv` factory for attacker training, and
    every real observation of the run (for the attack scale).
    """
    import gymnasium as gym

    from ..dyna import build_surrogate
    from ..reward import SINDyReward, known_reward
    from ..surrogate import SurrogateEnv

    cfg = run.config
    buffer = run.load_data()
    dynamics = run.load_model("dynamics")
    spec = run.spec
    if cfg.reward.known:
        reward = known_reward(cfg.reward.known)
    else:
        reward = SINDyReward.from_model(run.load_model("reward"), len(spec.obs_names))
    counter = {"k": 0}

    def make_vec():
        counter["k"] += 1
        return build_surrogate(cfg, dynamics, reward, buffer, spec, seed + 7 * counter["k"], n_envs=n_envs)

    horizon = cfg.surrogate.horizon or spec.horizon or 1000
    lo = np.minimum(buffer.obs.min(0), buffer.next_obs.min(0))
    hi = np.maximum(buffer.obs.max(0), buffer.next_obs.max(0))
    obs_space = gym.spaces.Box(spec.obs_low.astype(np.float32), spec.obs_high.astype(np.float32), dtype=np.float32)
    act_space = gym.spaces.Box(spec.act_low.astype(np.float32), spec.act_high.astype(np.float32), dtype=np.float32)

    def make_single():
        counter["k"] += 1
        return SurrogateEnv(dynamics, reward, buffer.obs, obs_space, act_space, horizon,
                            ensemble_mode=cfg.surrogate.ensemble_mode, state_bounds=(lo, hi),
                            bounds_margin=cfg.surrogate.bounds_margin,
                            disagreement_threshold=cfg.surrogate.disagreement_threshold, seed=seed + 7 * counter["k"])

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
    """Pipeline stage: ``sindyrl robust`` on a trained run; returns the ``robust_*`` summary keys.

    ``options`` are the ``stages.robust`` keys of :class:`RobustOptions`.
    """
    options.pop("progress_bar", None)
    o = RobustOptions.from_dict(options)
    if o.seed is None:
        o.seed = int(run.config.seed)
    natural = run.load_agent()
    make_vec, make_single, obs = run_factories(run, seed=o.seed)
    return run_robust(natural, make_vec, make_single, run.make_env, obs, o, run.path / "robust", run.plots_dir, echo)


# --------------------------------------------------------------------------- CLI
def _cmd_robust(args: argparse.Namespace) -> int:
    from ..runs import Run

    target = Path(args.target)
    if target.is_dir():
        run = Run.open(target)
    elif target.is_file():
        from ..config import load_config
        from ..pipeline import stage_train

        run = Run.create(load_config(target), root=args.runs_dir, name=args.name)
        print(f"sindyrl robust: training {target} -> {run.path}", flush=True)
        run.update_summary(stage_train(run, echo=print, progress_bar=False))
    else:
        raise ValueError(f"sindyrl robust: {target} is neither a run directory nor a config file")
    options = dict(run.config.stages.get("robust", {}) or {})
    for key in ("epsilon", "iterations", "attacker_steps", "policy_steps", "eval_episodes", "bandit_episodes",
                "segment", "seed"):
        v = getattr(args, key)
        if v is not None:
            options[key] = v
    summary = stage(run, echo=lambda *a: print(*a, flush=True), **options)
    run.update_summary(summary)
    print(f"\npayoff matrix: {run.path / 'robust' / 'payoff.csv'}\nplots: {run.plots_dir / 'robust_payoff.png'}, "
          f"{run.plots_dir / 'robust_regret.png'}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``sindyrl robust`` to the CLI."""
    p = subparsers.add_parser(
        "robust", help="non-dominated robust policies against observation attacks, and bandit selection at test time",
        description="Train attackers and robust policies on the run's surrogate, write the payoff matrix "
                    "(robust/payoff.csv, plots/robust_payoff.png) and evaluate EXP3-IX / EXP3.S selection "
                    "under a switching attack schedule on the real env (plots/robust_regret.png). "
                    "Options: stages.robust in the config; flags override them.")
    p.add_argument("target", metavar="CONFIG|RUN", help="a run directory, or a config to train first")
    p.add_argument("--name", help="run name when training from a config")
    p.add_argument("--runs-dir", default="runs", help="parent of new run directories (default: runs)")
    p.add_argument("--epsilon", type=float, help="attack radius in units of the data's per-dimension spread")
    p.add_argument("--iterations", type=int, help="at most this many new policies (K)")
    p.add_argument("--attacker-steps", type=int, help="surrogate steps per attacker training")
    p.add_argument("--policy-steps", type=int, help="surrogate steps per robust policy training")
    p.add_argument("--eval-episodes", type=int, help="real episodes per payoff cell")
    p.add_argument("--bandit-episodes", type=int, help="length of the switching schedule (episodes)")
    p.add_argument("--segment", type=int, help="episodes per attack in the schedule")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=_cmd_robust)
