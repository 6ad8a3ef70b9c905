"""Evaluate a policy on the real environment with fixed reset seeds.

Episode ``i`` starts from ``reset(seed=seed + i)``, so different policies
evaluated with the same ``seed`` see the same initial states. :class:`StepCounter`
counts the real steps a stage spends through an env factory.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

__all__ = ["evaluate_policy", "sb3_act", "EvalResult", "StepCounter"]


class EvalResult(np.ndarray):
    """Episode returns (an ndarray) carrying ``.lengths`` (steps per episode)."""

    lengths: np.ndarray


def evaluate_policy(
    act: Callable[[np.ndarray], np.ndarray],
    make_env: Callable[[], gym.Env],
    n_episodes: int = 20,
    seed: int = 0,
    max_steps: int | None = None,
) -> EvalResult:
    """Returns of ``n_episodes`` episodes of ``act`` on a fresh env from ``make_env``.

    ``act(obs)`` gets one observation (n_obs,) and returns one action; actions
    are clipped to the action bounds. The result is an array of returns with
    the episode lengths in ``result.lengths``.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    env = make_env()
    low, high = env.action_space.low, env.action_space.high
    returns, lengths = [], []
    try:
        for i in range(n_episodes):
            obs, _ = env.reset(seed=seed + i)
            total, t, done = 0.0, 0, False
            while not done:
                a = np.clip(np.asarray(act(np.asarray(obs)), dtype=np.float64).reshape(low.shape), low, high)
                obs, r, term, trunc, _ = env.step(a.astype(env.action_space.dtype))
                total += float(r)
                t += 1
                done = term or trunc or (max_steps is not None and t >= max_steps)
            returns.append(total)
            lengths.append(t)
    finally:
        env.close()
    out = np.asarray(returns).view(EvalResult)
    out.lengths = np.asarray(lengths)
    return out


def sb3_act(model, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Action function of an SB3 model (deterministic by default)."""

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(obs, deterministic=deterministic)[0]

    return act


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
