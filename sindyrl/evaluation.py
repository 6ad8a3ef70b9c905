"""Evaluate a policy on the real environment with fixed reset seeds.

Episode ``i`` starts from ``reset(seed=seed + i)``, so different policies
evaluated with the same ``seed`` see the same initial states.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

__all__ = ["evaluate_policy", "sb3_act", "EvalResult"]


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
