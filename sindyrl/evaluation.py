"""Evaluate a policy on the real environment with fixed reset seeds, or in the surrogate from stored states.

Real: episode ``i`` starts from ``reset(seed=seed + i)``, so different policies
evaluated with the same ``seed`` see the same initial states.

Surrogate: :func:`assess_in_surrogate` runs one model episode from each of
hundreds of stored real states in one batch (milliseconds, no real step) and
looks at the worst starts, not only the mean, so a policy that gets stuck
from some starts is seen before a real episode is spent on it.

:class:`StepCounter` counts the real steps a stage spends through an env factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

__all__ = ["evaluate_policy", "sb3_act", "EvalResult", "StepCounter", "SurrogateAssessment", "assess_in_surrogate",
           "assessment_starts", "sb3_act_batch"]


class EvalResult(np.ndarray):
    """Episode returns (an ndarray) carrying ``.lengths`` (steps per episode) and ``.trace``.

    ``trace`` is ``None`` unless :func:`evaluate_policy` was asked to keep the
    first episode (``keep_trace=True``): then a dict of arrays ``obs``
    (T + 1, n_obs), ``actions`` (T, n_act), ``rewards`` (T,) and ``seed`` (the
    reset seed), ready for :meth:`sindyrl.runs.Run.save_trace`.
    """

    lengths: np.ndarray
    trace: dict | None = None


def evaluate_policy(
    act: Callable[[np.ndarray], np.ndarray],
    make_env: Callable[[], gym.Env],
    n_episodes: int = 20,
    seed: int = 0,
    max_steps: int | None = None,
    keep_trace: bool = False,
) -> EvalResult:
    """Returns of ``n_episodes`` episodes of ``act`` on a fresh env from ``make_env``.

    ``act(obs)`` gets one observation (n_obs,) and returns one action; actions
    are clipped to the action bounds. The result is an array of returns with
    the episode lengths in ``result.lengths``. With ``keep_trace`` the first
    episode's observations, (clipped) actions and rewards are kept in
    ``result.trace`` (no extra episode is run: it is the one evaluated anyway).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    env = make_env()
    low, high = env.action_space.low, env.action_space.high
    returns, lengths = [], []
    trace = None
    try:
        for i in range(n_episodes):
            obs, _ = env.reset(seed=seed + i)
            record = keep_trace and i == 0
            if record:
                trace = {"obs": [np.asarray(obs, dtype=np.float64).ravel()], "actions": [], "rewards": []}
            total, t, done = 0.0, 0, False
            while not done:
                a = np.clip(np.asarray(act(np.asarray(obs)), dtype=np.float64).reshape(low.shape), low, high)
                obs, r, term, trunc, _ = env.step(a.astype(env.action_space.dtype))
                if record:
                    trace["obs"].append(np.asarray(obs, dtype=np.float64).ravel())
                    trace["actions"].append(a.ravel())
                    trace["rewards"].append(float(r))
                total += float(r)
                t += 1
                done = term or trunc or (max_steps is not None and t >= max_steps)
            returns.append(total)
            lengths.append(t)
    finally:
        env.close()
    out = np.asarray(returns).view(EvalResult)
    out.lengths = np.asarray(lengths)
    if trace is not None:
        out.trace = {"obs": np.array(trace["obs"]), "actions": np.array(trace["actions"]).reshape(lengths[0], -1),
                     "rewards": np.array(trace["rewards"]), "seed": np.asarray(seed)}
    return out


def sb3_act(model, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Action function of an SB3 model (deterministic by default)."""

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(obs, deterministic=deterministic)[0]

    return act


def sb3_act_batch(model, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Batched action function of an SB3 model: (N, n_obs) -> (N, n_act)."""

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(np.asarray(obs), deterministic=deterministic)[0]

    return act


@dataclass(frozen=True)
class SurrogateAssessment:
    """Returns of one surrogate episode from each of many stored real starts.

    ``failed`` marks the starts whose return is a far outlier below the rest (below the lower quartile by
    more than three interquartile ranges, or a tenth of the median's size when the returns are nearly
    equal): the policy gets stuck, saturates or diverges there while it succeeds elsewhere. ``score``, the
    mean of the average and the worst-decile return, is what checkpoints are ranked by: it rewards the
    typical start and punishes the bad ones.
    """

    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def min(self) -> float:
        return float(self.returns.min())

    @property
    def worst_decile(self) -> float:
        k = max(1, int(np.ceil(0.1 * self.returns.size)))
        return float(np.sort(self.returns)[:k].mean())

    @property
    def failed(self) -> np.ndarray:
        q25, q50, q75 = np.percentile(self.returns, [25, 50, 75])
        spread = max(q75 - q25, 0.1 * abs(q50), 1e-9)
        return self.returns < q25 - 3.0 * spread

    @property
    def n_failed(self) -> int:
        return int(self.failed.sum())

    @property
    def score(self) -> float:
        return 0.5 * (self.mean + self.worst_decile)

    def summary(self, prefix: str = "surrogate_") -> dict:
        return {f"{prefix}return_mean": self.mean, f"{prefix}return_min": self.min,
                f"{prefix}return_worst_decile": self.worst_decile, f"{prefix}failed_starts": self.n_failed,
                f"{prefix}starts": int(self.returns.size)}

    def describe(self) -> str:
        return (f"{self.mean:.1f} mean, {self.worst_decile:.1f} worst decile, {self.min:.1f} worst, "
                f"{self.n_failed}/{self.returns.size} starts failed")


def assessment_starts(buffer, n: int = 256, seed: int = 0, doomed_steps: int = 10) -> np.ndarray:
    """Start states for a surrogate assessment: every real episode's first state, then stored states at random.

    The first states are samples of the real task's initial-state distribution; the others cover the
    region the policy visits. States fewer than ``doomed_steps`` steps before a real episode *terminated*
    are left out: from there the task may be lost whatever the policy does (the pole already falling), so
    a low return there says nothing about the policy. At most ``n`` states (all first states are kept
    when there are more).
    """
    if len(buffer) == 0:
        raise ValueError("assessment_starts: the buffer holds no transitions")
    episodes = buffer.episodes()
    first = np.array([e[0] for e in episodes])
    doomed = np.zeros(len(buffer), dtype=bool)
    for e in episodes:
        if buffer.terminated[e[-1]]:
            doomed[e[-doomed_steps:]] = True
    rest = np.setdiff1d(np.flatnonzero(~doomed), first)
    k = max(0, min(n - len(first), len(rest)))
    pick = np.random.default_rng(seed).choice(rest, size=k, replace=False) if k else np.zeros(0, dtype=np.int64)
    return buffer.obs[np.concatenate([first, np.sort(pick)]).astype(np.int64)]


def assess_in_surrogate(act_batch: Callable[[np.ndarray], np.ndarray], venv, starts: np.ndarray,
                        seed: int = 0) -> SurrogateAssessment:
    """One episode of ``act_batch`` in the surrogate ``venv`` (a :class:`SurrogateVecEnv`) from each start."""
    returns, lengths = venv.rollout_returns(act_batch, starts, seed=seed)
    return SurrogateAssessment(returns, lengths)


class _CountedEnv(gym.Wrapper):
    def __init__(self, env: gym.Env, counter: StepCounter) -> None:
        super().__init__(env)
        self._counter = counter

    def step(self, action):
        self._counter.steps += 1
        return self.env.step(action)


class StepCounter:
    """An env factory that counts every ``step`` taken in the envs it makes.

    Stages wrap ``run.make_env`` in one and report ``counter.steps`` as their
    ``real_steps_<stage>``: real steps are what the user pays for.
    """

    def __init__(self, make_env: Callable[..., gym.Env]) -> None:
        self.make_env = make_env
        self.steps = 0

    def __call__(self, *args, **kwargs) -> gym.Env:
        return _CountedEnv(self.make_env(*args, **kwargs), self)
