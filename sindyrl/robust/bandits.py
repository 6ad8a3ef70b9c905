"""Test-time selection among a policy set with adversarial bandits.

One arm is one policy; one round is one episode; the reward is the episode's
return normalised to [0, 1] by configured bounds. Three bandits:

- :class:`EXP3IX` -- EXP3 with implicit exploration (Neu 2015, "Explore no
  more"): ``p_i ~ exp(-eta * L_i)``, loss estimates ``l / (p_i + gamma)``,
  ``eta = c * sqrt(ln K / (K T))``, ``gamma = eta / 2``. Regret against the best
  fixed arm is O(sqrt(K T ln K)).
- :class:`EXP3S` -- EXP3.S (Auer, Cesa-Bianchi, Freund, Schapire 2002):
  weight sharing ``w_i <- w_i exp(gamma x_i / K) + e alpha W / K`` tracks the
  best arm of each segment when the attack switches.
- :class:`DiscountedEXP3IX` -- EXP3-IX whose loss estimates decay by a factor
  per round, so old rounds are forgotten.

The evaluation protocol precomputes ``returns[t, i]`` (the return policy ``i``
would get in episode ``t``, same reset seed and attack for every policy); a
bandit played on that table gets exactly what it would get online, and the
regret against the best fixed policy in hindsight is exact, not estimated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from .attacks import Attack
from .payoff import episode_returns

__all__ = [
    "Bandit", "EXP3IX", "EXP3S", "DiscountedEXP3IX", "make_bandit", "normalise_returns",
    "switching_schedule", "returns_table", "play", "regret_curve", "PolicySelector",
]


class Bandit:
    """An adversarial multi-armed bandit: ``select()`` an arm, then ``update(arm, reward in [0, 1])``."""

    name = "bandit"

    def __init__(self, n_arms: int, seed: int = 0) -> None:
        if int(n_arms) < 1:
            raise ValueError(f"{self.name}: n_arms must be >= 1, got {n_arms}")
        self.n_arms = int(n_arms)
        self.rng = np.random.default_rng(seed)
        self.t = 0

    def probabilities(self) -> np.ndarray:
        """The distribution the next arm is drawn from."""
        raise NotImplementedError

    def select(self) -> int:
        p = self.probabilities()
        return int(self.rng.choice(self.n_arms, p=p))

    def update(self, arm: int, reward: float) -> None:
        if not 0 <= int(arm) < self.n_arms:
            raise ValueError(f"{self.name}: arm {arm} out of range 0..{self.n_arms - 1}")
        reward = float(reward)
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"{self.name}: reward must be in [0, 1] (normalise returns first), got {reward}")
        self._update(int(arm), reward, self.probabilities())
        self.t += 1

    def _update(self, arm: int, reward: float, p: np.ndarray) -> None:
        raise NotImplementedError


def _softmin(L: np.ndarray, eta: float) -> np.ndarray:
    z = -eta * (L - L.min())
    w = np.exp(z)
    return w / w.sum()


class EXP3IX(Bandit):
    """EXP3 with implicit exploration.

    Parameters
    ----------
    n_arms : int
    horizon : int
        Number of rounds ``T`` the learning rate is tuned for.
    c : float, default sqrt(2)
        ``eta = c * sqrt(ln K / (K T))``; sqrt(2) is the constant of Neu's bound.
    eta, gamma : float, optional
        Set the learning rate and the implicit exploration directly
        (default ``gamma = eta / 2``).
    seed : int, default 0
    """

    name = "exp3ix"

    def __init__(self, n_arms: int, horizon: int, c: float = math.sqrt(2), eta: float | None = None,
                 gamma: float | None = None, seed: int = 0) -> None:
        super().__init__(n_arms, seed)
        if int(horizon) < 1:
            raise ValueError(f"{self.name}: horizon must be >= 1, got {horizon}")
        K, T = self.n_arms, int(horizon)
        self.eta = float(c) * math.sqrt(math.log(K) / (K * T)) if eta is None else float(eta)
        self.gamma = self.eta / 2 if gamma is None else float(gamma)
        if self.eta < 0 or self.gamma < 0:
            raise ValueError(f"{self.name}: eta and gamma must be >= 0, got {self.eta}, {self.gamma}")
        self.loss_estimates = np.zeros(K)

    def probabilities(self) -> np.ndarray:
        return _softmin(self.loss_estimates, self.eta)

    def _update(self, arm: int, reward: float, p: np.ndarray) -> None:
        self.loss_estimates[arm] += (1.0 - reward) / (p[arm] + self.gamma)


class DiscountedEXP3IX(EXP3IX):
    """EXP3-IX whose loss estimates are multiplied by ``discount`` every round (forgets old attacks).

    Parameters
    ----------
    discount : float, default 0.95
        Per-round factor in (0, 1]; 1 is plain EXP3-IX. The effective memory is
        about ``1 / (1 - discount)`` rounds, and the default learning rate is
        tuned for that many rounds (``T_eff = min(T, 1 / (1 - discount))``)
        instead of ``T``: with a short memory the loss estimates never grow
        large, so a rate tuned for the whole horizon would never commit.
    """

    name = "discounted_exp3ix"

    def __init__(self, n_arms: int, horizon: int, c: float = math.sqrt(2), eta: float | None = None,
                 gamma: float | None = None, discount: float = 0.95, seed: int = 0) -> None:
        if not 0 < float(discount) <= 1:
            raise ValueError(f"{self.name}: discount must be in (0, 1], got {discount}")
        self.discount = float(discount)
        memory = int(horizon) if self.discount == 1 else min(int(horizon), max(1, round(1 / (1 - self.discount))))
        super().__init__(n_arms, memory, c, eta, gamma, seed)

    def _update(self, arm: int, reward: float, p: np.ndarray) -> None:
        self.loss_estimates *= self.discount
        super()._update(arm, reward, p)


class EXP3S(Bandit):
    """EXP3.S: EXP3 with weight sharing, for a best arm that changes over time.

    Parameters
    ----------
    n_arms : int
    horizon : int
        ``T``.
    switches : int, optional
        Expected number of changes of the best arm ``S``; tunes ``gamma`` as
        ``min(1, sqrt(K (S ln(K T) + e) / ((e - 1) T)))`` (Auer et al. 2002,
        Corollary 8). Unknown: ``min(1, sqrt(K ln(K T) / T))``.
    alpha : float, optional
        Weight-sharing rate; default ``1 / T``.
    gamma : float, optional
        Exploration rate (overrides the tuning above).
    seed : int, default 0
    """

    name = "exp3s"

    def __init__(self, n_arms: int, horizon: int, switches: int | None = None, alpha: float | None = None,
                 gamma: float | None = None, seed: int = 0) -> None:
        super().__init__(n_arms, seed)
        K, T = self.n_arms, int(horizon)
        if T < 1:
            raise ValueError(f"{self.name}: horizon must be >= 1, got {horizon}")
        if gamma is None:
            if switches is None:
                gamma = math.sqrt(K * math.log(K * T) / T)
            else:
                gamma = math.sqrt(K * (int(switches) * math.log(K * T) + math.e) / ((math.e - 1) * T))
        self.gamma = float(min(1.0, gamma))
        self.alpha = 1.0 / T if alpha is None else float(alpha)
        if not 0 < self.gamma <= 1 or self.alpha < 0:
            raise ValueError(f"{self.name}: need 0 < gamma <= 1 and alpha >= 0, got {self.gamma}, {self.alpha}")
        self.weights = np.full(K, 1.0 / K)

    def probabilities(self) -> np.ndarray:
        return (1 - self.gamma) * self.weights / self.weights.sum() + self.gamma / self.n_arms

    def _update(self, arm: int, reward: float, p: np.ndarray) -> None:
        K = self.n_arms
        x_hat = np.zeros(K)
        x_hat[arm] = reward / p[arm]
        W = self.weights.sum()
        w = self.weights * np.exp(self.gamma * x_hat / K) + math.e * self.alpha / K * W
        # The update is scale-invariant: renormalise so the weights never overflow.
        self.weights = w / w.sum()


def make_bandit(kind: str, n_arms: int, horizon: int, seed: int = 0, **options: Any) -> Bandit:
    """Build a bandit by name: ``exp3ix``, ``exp3s`` or ``discounted_exp3ix``."""
    kinds: dict[str, type[Bandit]] = {"exp3ix": EXP3IX, "exp3s": EXP3S, "discounted_exp3ix": DiscountedEXP3IX}
    if kind not in kinds:
        raise ValueError(f"unknown bandit {kind!r}; expected one of {sorted(kinds)}")
    try:
        return kinds[kind](n_arms, horizon, seed=seed, **options)
    except TypeError as e:
        raise ValueError(f"bandit {kind!r}: bad option ({e})") from None


def normalise_returns(returns: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map returns to [0, 1] linearly by ``(low, high)`` and clip."""
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        raise ValueError(f"return bounds must be finite with low < high, got ({low}, {high})")
    return np.clip((np.asarray(returns, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def switching_schedule(attacks: Sequence[str], n_episodes: int, segment: int) -> list[str]:
    """``attacks`` in turn, each for ``segment`` episodes, repeated until ``n_episodes``."""
    if not attacks:
        raise ValueError("switching_schedule: need at least one attack name")
    if int(segment) < 1 or int(n_episodes) < 1:
        raise ValueError(f"switching_schedule: segment and n_episodes must be >= 1, got {segment}, {n_episodes}")
    return [attacks[(t // int(segment)) % len(attacks)] for t in range(int(n_episodes))]


def returns_table(policies: Mapping[str, Any], attacks: Mapping[str, Attack], schedule: Sequence[str],
                  make_env: Callable[[], gym.Env], seed: int = 0) -> np.ndarray:
    """``returns[t, i]``: return of policy ``i`` in episode ``t`` (reset seed ``seed + t``, attack ``schedule[t]``)."""
    missing = sorted(set(schedule) - set(attacks))
    if missing:
        raise ValueError(f"returns_table: schedule names unknown attacks {missing}; known: {sorted(attacks)}")
    T = len(schedule)
    table = np.zeros((T, len(policies)))
    sched = np.asarray(schedule)
    for name in dict.fromkeys(schedule):
        ts = np.flatnonzero(sched == name)
        for i, p in enumerate(policies.values()):
            table[ts, i] = episode_returns(p, make_env, attacks[name], [seed + int(t) for t in ts])
    return table


def play(bandit: Bandit, rewards: np.ndarray) -> np.ndarray:
    """Run ``bandit`` on a table of normalised rewards ``(T, K)``; the arms it pulled, shape (T,)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2 or rewards.shape[1] != bandit.n_arms:
        raise ValueError(f"play: rewards must have shape (T, {bandit.n_arms}), got {rewards.shape}")
    arms = np.zeros(rewards.shape[0], dtype=int)
    for t in range(rewards.shape[0]):
        a = bandit.select()
        bandit.update(a, rewards[t, a])
        arms[t] = a
    return arms


def regret_curve(table: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, int]:
    """Cumulative regret against the best fixed arm in hindsight (over the whole table).

    Returns
    -------
    regret : array, shape (T,)
        ``sum_{s<=t} table[s, best] - table[s, arms[s]]``.
    best : int
        The arm with the largest total in ``table``.
    """
    table = np.asarray(table, dtype=np.float64)
    arms = np.asarray(arms, dtype=int)
    if table.ndim != 2 or arms.shape != (table.shape[0],):
        raise ValueError(f"regret_curve: table (T, K) and arms (T,) needed, got {table.shape} and {arms.shape}")
    best = int(np.argmax(table.sum(axis=0)))
    got = table[np.arange(len(arms)), arms]
    return np.cumsum(table[:, best] - got), best


class PolicySelector:
    """Online test-time selection: a bandit picks the policy for each episode.

    ``begin_episode()`` draws a policy, ``act(obs)`` runs it, and
    ``end_episode(episode_return)`` feeds the normalised return back.

    Parameters
    ----------
    policies : sequence of callables ``act(obs) -> action``
    bandit : Bandit
    return_bounds : (low, high)
        Returns are mapped to [0, 1] by these and clipped.
    """

    def __init__(self, policies: Sequence[Callable[[np.ndarray], np.ndarray]], bandit: Bandit,
                 return_bounds: tuple[float, float]) -> None:
        if len(policies) != bandit.n_arms:
            raise ValueError(f"PolicySelector: {len(policies)} policies but the bandit has {bandit.n_arms} arms")
        normalise_returns(np.zeros(1), *return_bounds)  # validates the bounds
        self.policies = list(policies)
        self.bandit = bandit
        self.bounds = (float(return_bounds[0]), float(return_bounds[1]))
        self.arm: int | None = None

    def begin_episode(self) -> int:
        self.arm = self.bandit.select()
        return self.arm

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.arm is None:
            raise RuntimeError("PolicySelector: call begin_episode() first")
        return self.policies[self.arm](obs)

    def end_episode(self, episode_return: float) -> None:
        if self.arm is None:
            raise RuntimeError("PolicySelector: end_episode() without begin_episode()")
        self.bandit.update(self.arm, float(normalise_returns(np.array([episode_return]), *self.bounds)[0]))
        self.arm = None
