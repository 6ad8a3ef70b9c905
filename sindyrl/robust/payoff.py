"""Payoff matrices (policies x attacks) and the non-domination filter.

A payoff entry is the mean return of one policy on the evaluation env under
one attack (white-box attacks aimed at that policy). A policy is *dominated*
when another policy, or a mixture of the others, does at least as well
against every attack; :func:`non_dominated` drops those, deciding mixture
domination with one linear program per policy (``scipy.optimize.linprog``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from scipy.optimize import linprog

from .attacks import Attack, NoAttack
from .victims import as_victim

__all__ = ["episode_returns", "PayoffMatrix", "evaluate_payoff", "dominated_by", "non_dominated"]


def episode_returns(policy: Any, make_env: Callable[[], gym.Env], attack: Attack | None = None,
                    seeds: Sequence[int] | int = 10, seed: int = 0, batch: int = 32) -> np.ndarray:
    """Returns of deterministic episodes of ``policy``, optionally under ``attack``.

    Episodes run side by side in up to ``batch`` env copies so that the policy
    (and a gradient attack) is called once per step on the whole batch.
    Episode ``i`` resets with ``seeds[i]`` (``int`` seeds: ``seed, seed+1, ...``),
    so every policy and attack sees the same initial states.

    Parameters
    ----------
    policy : SB3 model, Victim or callable
    make_env : callable
        Factory of the evaluation env.
    attack : Attack, optional
        White-box attacks without a victim are aimed at ``policy``.
    seeds : int or sequence of int, default 10
        Number of episodes or the reset seed of each.
    seed : int, default 0
    batch : int, default 32

    Returns
    -------
    returns : array, shape (n_episodes,)
    """
    victim = as_victim(policy)
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"episode_returns: need at least one episode, got {seeds}")
        seeds = [seed + i for i in range(int(seeds))]
    seeds = [int(s) for s in seeds]
    if attack is None:
        attack = NoAttack()
    elif attack.needs_victim and attack.victim is None:
        attack = attack.bind(victim)
    out = np.zeros(len(seeds))
    envs: list[gym.Env] = []
    for start in range(0, len(seeds), batch):
        chunk = seeds[start:start + batch]
        while len(envs) < len(chunk):
            envs.append(make_env())
        attack.reset(chunk[0] * 7919 + len(chunk))
        obs = np.stack([np.asarray(envs[i].reset(seed=s)[0]) for i, s in enumerate(chunk)])
        done = np.zeros(len(chunk), dtype=bool)
        ret = np.zeros(len(chunk))
        while not done.all():
            idx = np.flatnonzero(~done)
            acts = np.asarray(victim.act(attack.perturb(obs[idx]))).reshape(len(idx), -1)
            if isinstance(envs[0].action_space, gym.spaces.Box):
                acts = np.clip(acts, envs[0].action_space.low, envs[0].action_space.high)
            for j, i in enumerate(idx):
                o, r, te, tr, _ = envs[i].step(acts[j])
                obs[i] = o
                ret[i] += float(r)
                done[i] = bool(te or tr)
        out[start:start + len(chunk)] = ret
    for e in envs:
        e.close()
    return out


@dataclass
class PayoffMatrix:
    """Mean returns of policies (rows) under attacks (columns).

    Attributes
    ----------
    policies : list of str
    attacks : list of str
    values : array, shape (n_policies, n_attacks)
        Mean episode return.
    stderr : array, shape (n_policies, n_attacks)
        Standard error of the mean (0 when unknown).
    """

    policies: list[str]
    attacks: list[str]
    values: np.ndarray
    stderr: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.policies = [str(p) for p in self.policies]
        self.attacks = [str(a) for a in self.attacks]
        self.values = np.asarray(self.values, dtype=np.float64).reshape(len(self.policies), len(self.attacks))
        self.stderr = (np.zeros_like(self.values) if self.stderr is None
                       else np.asarray(self.stderr, dtype=np.float64).reshape(self.values.shape))
        for what, names in (("policy", self.policies), ("attack", self.attacks)):
            if len(set(names)) != len(names):
                raise ValueError(f"PayoffMatrix: duplicate {what} names in {names}")

    def value(self, policy: str, attack: str) -> float:
        return float(self.values[self.policies.index(policy), self.attacks.index(attack)])

    def subset(self, policies: Sequence[str] | None = None, attacks: Sequence[str] | None = None) -> PayoffMatrix:
        """The sub-matrix of the named rows and columns (all when ``None``)."""
        pi = [self.policies.index(p) for p in (policies if policies is not None else self.policies)]
        ai = [self.attacks.index(a) for a in (attacks if attacks is not None else self.attacks)]
        return PayoffMatrix([self.policies[i] for i in pi], [self.attacks[j] for j in ai],
                            self.values[np.ix_(pi, ai)], self.stderr[np.ix_(pi, ai)])

    def to_csv(self, path: str | Path) -> Path:
        """One row per policy, one column per attack (mean return); ``<attack>_se`` columns hold standard errors."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["policy", *self.attacks, *(f"{a}_se" for a in self.attacks)])
            for i, p in enumerate(self.policies):
                w.writerow([p, *(f"{v:.6g}" for v in self.values[i]), *(f"{v:.6g}" for v in self.stderr[i])])
        tmp.replace(path)
        return path

    @classmethod
    def from_csv(cls, path: str | Path) -> PayoffMatrix:
        path = Path(path)
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or rows[0][:1] != ["policy"]:
            raise ValueError(f"{path}: not a payoff matrix CSV (first column must be 'policy')")
        header = rows[0][1:]
        attacks = [h for h in header if not h.endswith("_se")]
        n = len(attacks)
        try:
            vals = np.array([[float(v) for v in r[1:1 + n]] for r in rows[1:]])
            se = np.array([[float(v) for v in r[1 + n:1 + 2 * n]] or [0.0] * n for r in rows[1:]])
        except ValueError as e:
            raise ValueError(f"{path}: non-numeric payoff entry ({e})") from None
        return cls([r[0] for r in rows[1:]], attacks, vals, se)

    def heatmap(self, path: str | Path, title: str = "Payoff: mean return", kept: Sequence[str] | None = None) -> Path:
        """Heat map PNG with the value in every cell; rows in ``kept`` are marked with ``*``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n_p, n_a = self.values.shape
        fig, ax = plt.subplots(figsize=(1.3 * n_a + 2.5, 0.55 * n_p + 1.6))
        im = ax.imshow(self.values, cmap="viridis", aspect="auto")
        fig.colorbar(im, ax=ax, label="mean return")
        labels = [f"{p} *" if kept is not None and p in kept else p for p in self.policies]
        ax.set_xticks(range(n_a), self.attacks, rotation=30, ha="right")
        ax.set_yticks(range(n_p), labels)
        lo, hi = np.nanmin(self.values), np.nanmax(self.values)
        for i in range(n_p):
            for j in range(n_a):
                v = self.values[i, j]
                dark = hi > lo and (v - lo) / (hi - lo) < 0.5
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_title(title + (" (* non-dominated)" if kept is not None else ""))
        fig.tight_layout()
        tmp = path.with_name(f".{path.stem}.tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        return path


def evaluate_payoff(policies: Mapping[str, Any], attacks: Mapping[str, Attack], make_env: Callable[[], gym.Env],
                    n_episodes: int = 10, seed: int = 0,
                    previous: PayoffMatrix | None = None) -> PayoffMatrix:
    """Evaluate every policy under every attack on the same initial states.

    Entries already in ``previous`` (same policy and attack names) are reused,
    so growing the matrix by one row and one column costs only the new cells.
    """
    if not policies or not attacks:
        raise ValueError("evaluate_payoff: need at least one policy and one attack")
    P, A = list(policies), list(attacks)
    vals = np.zeros((len(P), len(A)))
    se = np.zeros_like(vals)
    for i, p in enumerate(P):
        for j, a in enumerate(A):
            if previous is not None and p in previous.policies and a in previous.attacks:
                vals[i, j] = previous.value(p, a)
                se[i, j] = previous.stderr[previous.policies.index(p), previous.attacks.index(a)]
                continue
            r = episode_returns(as_victim(policies[p], p), make_env, attacks[a], n_episodes, seed=seed)
            vals[i, j] = r.mean()
            se[i, j] = r.std(ddof=1) / np.sqrt(len(r)) if len(r) > 1 else 0.0
    return PayoffMatrix(P, A, vals, se)


def dominated_by(values: np.ndarray, row: int, others: Sequence[int], tol: float = 0.0) -> np.ndarray | None:
    """Weights of a mixture of ``others`` that does at least as well as ``row`` on every column.

    Solves ``max t  s.t.  sum_k w_k V[k, a] >= V[row, a] + t  for all a,  w >= 0,  sum w = 1``
    and returns ``w`` when ``t >= -tol`` (``row`` is dominated), else ``None``.
    A single other policy is the pure case (``w`` is one-hot).
    """
    V = np.asarray(values, dtype=np.float64)
    others = [int(k) for k in others if int(k) != row]
    if not others:
        return None
    m, n_a = len(others), V.shape[1]
    # variables: w_1..w_m, t ; minimise -t
    c = np.zeros(m + 1)
    c[-1] = -1.0
    A_ub = np.hstack([-V[others].T, np.ones((n_a, 1))])
    b_ub = -V[row]
    A_eq = np.hstack([np.ones((1, m)), np.zeros((1, 1))])
    bounds = [(0, None)] * m + [(None, None)]
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if res.status != 0:  # pragma: no cover - the LP is always feasible and bounded
        raise RuntimeError(f"domination LP failed: {res.message}")
    t = -res.fun
    if t >= -tol:
        w = np.zeros(V.shape[0])
        w[others] = np.clip(res.x[:m], 0, None)
        return w / w.sum()
    return None


def non_dominated(payoff: PayoffMatrix | np.ndarray, tol: float | None = None,
                  mixtures: bool = True) -> list[int]:
    """Indices of the rows that no other row (or mixture of rows) dominates.

    Rows are removed one at a time, last first, so of two equal rows the
    earlier one (e.g. the natural policy) is kept. Removing a dominated row
    never changes which other rows are dominated (domination by a mixture that
    uses it carries over to the rows it is dominated by), so the result does
    not depend on the order except for exact ties.

    Parameters
    ----------
    payoff : PayoffMatrix or array (n_policies, n_attacks)
    tol : float, optional
        Slack in return units: a row within ``tol`` of a dominating mixture on
        every column counts as dominated. Default: 1e-9 times the largest
        absolute entry (float round-off only).
    mixtures : bool, default True
        Also test domination by mixtures (otherwise only by single rows).
    """
    V = payoff.values if isinstance(payoff, PayoffMatrix) else np.asarray(payoff, dtype=np.float64)
    if V.ndim != 2 or V.shape[0] < 1 or V.shape[1] < 1:
        raise ValueError(f"non_dominated: payoff must be a non-empty 2-D matrix, got shape {V.shape}")
    if not np.all(np.isfinite(V)):
        raise ValueError("non_dominated: payoff contains NaN or inf")
    if tol is None:
        tol = 1e-9 * max(1.0, float(np.abs(V).max()))
    keep = list(range(V.shape[0]))
    changed = True
    while changed:
        changed = False
        for r in reversed(keep):
            others = [k for k in keep if k != r]
            if mixtures:
                dom = dominated_by(V, r, others, tol) is not None
            else:
                dom = any(np.all(V[k] >= V[r] - tol) for k in others)
            if dom:
                keep.remove(r)
                changed = True
                break
    return keep
