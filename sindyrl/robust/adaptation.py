"""Test-time adaptation: bandits choosing among the policy set under a switching attack schedule.

:func:`evaluate_adaptation` measures ``returns[t, i]`` on the real env for
every episode ``t`` of the schedule and every policy ``i`` (same reset seed for
all policies, attack ``schedule[t]`` aimed at policy ``i``), then plays each
bandit on that table for several bandit seeds. Since the bandit only ever sees
the return of the arm it pulled, this is exactly what it would experience
online, and the regret against the best fixed policy in hindsight is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from .attacks import Attack
from .bandits import make_bandit, normalise_returns, play, regret_curve, returns_table

__all__ = ["AdaptationResult", "evaluate_adaptation", "regret_exponent", "schedule_period", "plot_regret"]


def schedule_period(schedule: Sequence[str]) -> int:
    """Smallest ``p`` with ``schedule[t] == schedule[t + p]`` for every ``t`` (``len(schedule)`` if none)."""
    T = len(schedule)
    for p in range(1, T):
        if all(schedule[t] == schedule[t + p] for t in range(T - p)):
            return p
    return T


def regret_exponent(regret: np.ndarray, period: int | None = None, start: float = 0.25) -> float:
    """Slope of log(regret) against log(t): 1 is linear growth, 0.5 grows like sqrt(t).

    With a periodic attack schedule the regret is a saw-tooth within each
    period, so the slope is fitted at the ends of whole periods (``t = p, 2p,
    ...``) when there are at least three; otherwise at every ``t >= start * T``.
    Returns ``-inf`` when the regret at the end is not positive (it did not grow).
    """
    regret = np.asarray(regret, dtype=np.float64)
    T = regret.size
    if period is not None and 0 < period and T // period >= 3:
        t = np.arange(period, T + 1, period)
    else:
        t = np.arange(max(2, int(start * T)), T + 1)
    r = regret[t - 1]
    if r[-1] <= 0:
        return float("-inf")
    ok = r > 0
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(t[ok]), np.log(r[ok]), 1)[0])


@dataclass
class AdaptationResult:
    """Bandits played on one measured returns table.

    Attributes
    ----------
    policies : list of str
        Arms, in order (the first is the natural policy when it is in the set).
    schedule : list of str
        Attack of each episode.
    table : array (T, K)
        Return of each policy in each episode.
    bounds : (low, high)
        Normalisation of returns to [0, 1].
    arms : dict
        Bandit name -> pulled arms, shape (n_seeds, T).
    metrics : dict
        Flat figures (see :func:`evaluate_adaptation`).
    """

    policies: list[str]
    schedule: list[str]
    table: np.ndarray
    bounds: tuple[float, float]
    arms: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def returns_of(self, bandit: str) -> np.ndarray:
        """Returns the bandit got, shape (n_seeds, T)."""
        A = self.arms[bandit]
        return self.table[np.arange(self.table.shape[0])[None, :], A]

    def regret(self, bandit: str) -> np.ndarray:
        """Cumulative regret against the best fixed policy, shape (n_seeds, T)."""
        return np.stack([regret_curve(self.table, a)[0] for a in self.arms[bandit]])


def evaluate_adaptation(policies: Mapping[str, Any], attacks: Mapping[str, Attack], schedule: Sequence[str],
                        make_env: Callable[[], gym.Env], return_bounds: tuple[float, float],
                        return_range: float | None = None, bandits: Sequence[str] = ("exp3ix", "exp3s"),
                        bandit_options: Mapping[str, dict] | None = None, n_seeds: int = 20, seed: int = 0,
                        natural: str = "natural", table: np.ndarray | None = None) -> AdaptationResult:
    """Measure the returns table and play every bandit on it.

    Parameters
    ----------
    policies : mapping name -> policy
        The arms.
    attacks : mapping name -> Attack
        Every attack named in ``schedule``.
    schedule : sequence of str
        Attack of each episode (see :func:`~sindyrl.robust.bandits.switching_schedule`).
    make_env : callable
        The real env.
    return_bounds : (low, high)
        Returns are normalised to [0, 1] by these (and clipped) before a bandit sees them.
    return_range : float, optional
        Denominator of the relative gaps (natural minus random return); default ``high - low``.
    bandits : sequence of str
        Names for :func:`~sindyrl.robust.bandits.make_bandit`; ``name@label``
        (e.g. ``exp3ix@c8``) runs the same bandit again with the options given
        under that full name in ``bandit_options``.
    bandit_options : mapping, optional
        Bandit name -> keyword options (e.g. ``{"exp3ix": {"c": 1.4}}``).
    n_seeds : int, default 20
        Bandit runs (different random arm draws) on the same table.
    seed : int, default 0
        Episode ``t`` resets with ``seed + t``.
    natural : str, default "natural"
        The policy the bandit has to beat.
    table : array (T, K), optional
        A previously measured table (skips the evaluation).

    Notes
    -----
    ``metrics`` holds, for each bandit ``b``: ``b_mean_return``, ``b_gap_to_best_rel``
    (best fixed policy's mean return minus the bandit's, over ``return_range``),
    ``b_beats_natural``, ``b_final_regret`` (mean over seeds), ``b_regret_exponent``
    (log-log slope of the mean regret at the ends of whole schedule periods: < 1
    is sublinear), ``b_regret_half_ratio`` (R(T) / R(T/2); 2 for linear growth) and
    ``b_dynamic_regret`` (against the best policy of each attack segment); plus
    the natural policy's and the best fixed policy's mean returns.
    """
    names = list(policies)
    if table is None:
        table = returns_table(policies, attacks, schedule, make_env, seed)
    table = np.asarray(table, dtype=np.float64)
    T, K = table.shape
    if K != len(names) or T != len(schedule):
        raise ValueError(f"evaluate_adaptation: table has shape {table.shape}, expected ({len(schedule)}, {len(names)})")
    low, high = float(return_bounds[0]), float(return_bounds[1])
    rewards = normalise_returns(table, low, high)
    rng = (high - low) if return_range is None else float(return_range)
    res = AdaptationResult(names, list(schedule), table, (low, high))
    best = int(np.argmax(table.sum(axis=0)))
    m: dict[str, Any] = {
        "episodes": T, "n_policies": K, "policies": names, "bandit_seeds": int(n_seeds),
        "best_fixed_policy": names[best], "best_fixed_mean_return": float(table[:, best].mean()),
        "return_bounds": [low, high], "return_range": rng,
    }
    if natural in names:
        m["natural_mean_return"] = float(table[:, names.index(natural)].mean())
    # The best policy of each attack segment (what a switching-aware learner can hope for).
    seg_best = np.zeros(T)
    sched = np.asarray(schedule)
    starts = [0] + [t for t in range(1, T) if sched[t] != sched[t - 1]] + [T]
    for a, b in zip(starts[:-1], starts[1:]):
        seg_best[a:b] = table[a:b, int(np.argmax(table[a:b].sum(axis=0)))]
    m["segment_best_mean_return"] = float(seg_best.mean())
    opts = dict(bandit_options or {})
    period = schedule_period(schedule)
    m["schedule_period"] = period
    for label in bandits:
        # "exp3ix@c=8" style labels: the same bandit with other options (given in bandit_options[label])
        kind = label.split("@")[0]
        arms = np.stack([play(make_bandit(kind, K, T, seed=seed + 7919 * (s + 1), **opts.get(label, {})), rewards)
                         for s in range(int(n_seeds))])
        kind = label
        res.arms[kind] = arms
        got = res.returns_of(kind)
        reg = res.regret(kind).mean(axis=0)
        mean_ret = float(got.mean())
        m[f"{kind}_mean_return"] = mean_ret
        m[f"{kind}_gap_to_best_rel"] = (m["best_fixed_mean_return"] - mean_ret) / rng
        if "natural_mean_return" in m:
            m[f"{kind}_beats_natural"] = bool(mean_ret > m["natural_mean_return"])
        m[f"{kind}_final_regret"] = float(reg[-1])
        m[f"{kind}_regret_exponent"] = regret_exponent(reg, period)
        half = reg[T // 2 - 1] if T >= 2 else reg[-1]
        m[f"{kind}_regret_half_ratio"] = float(reg[-1] / half) if half > 0 else float("nan")
        m[f"{kind}_dynamic_regret"] = float((seg_best[None, :] - got).sum(axis=1).mean())
    res.metrics = m
    return res


def plot_regret(result: AdaptationResult, path: str | Path, title: str = "Test-time policy selection") -> Path:
    """Mean cumulative regret (± one standard deviation over bandit seeds) of every bandit, attack segments shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    T = result.table.shape[0]
    t = np.arange(1, T + 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    names = list(dict.fromkeys(result.schedule))
    colours = plt.get_cmap("Pastel2")
    prev = 0
    for k in range(1, T + 1):
        if k == T or result.schedule[k] != result.schedule[prev]:
            ax.axvspan(prev + 0.5, k + 0.5, color=colours(names.index(result.schedule[prev]) % 8), alpha=0.5, lw=0)
            prev = k
    for name in names:
        ax.plot([], [], lw=6, color=colours(names.index(name) % 8), alpha=0.5, label=f"attack: {name}")
    for kind in result.arms:
        R = result.regret(kind)
        mu, sd = R.mean(axis=0), R.std(axis=0)
        ax.plot(t, mu, lw=2, label=f"{kind} (final {mu[-1]:.0f})")
        ax.fill_between(t, mu - sd, mu + sd, alpha=0.2)
    scale = max(1.0, max(abs(result.regret(k).mean(axis=0)).max() for k in result.arms)) if result.arms else 1.0
    ax.plot(t, scale * np.sqrt(t / T), "k--", lw=1, label="∝ sqrt(t)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("episode")
    ax.set_ylabel("cumulative regret (return)")
    ax.set_title(f"{title}\nregret against the best fixed policy in hindsight ({result.metrics.get('best_fixed_policy')})")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
