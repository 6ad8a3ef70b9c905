"""The shared mechanics of the generality benchmark's own systems: an ODE ``_f(s, u)`` integrated by RK4."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class RK4Env(gym.Env):
    """A one-input ODE system: ``step`` clips the action to [-1, 1], scores the pre-step state with
    ``reward(obs, action, next_obs)`` (the module's batched reward), takes one RK4 step of ``dt``, clips the
    state to the observation box and truncates after ``horizon`` steps. Subclasses set ``dt``,
    ``observation_space``, ``_f`` and ``reset``."""

    dt: float

    def __init__(self, horizon: int):
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float64)
        self.horizon = horizon

    @staticmethod
    def _f(s: np.ndarray, u: float) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def reward(obs, action, next_obs):
        raise NotImplementedError

    def step(self, action):
        u = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        r = float(self.reward(self.s[None], np.array([[u]]), None)[0])
        s, h = self.s, self.dt
        k1 = self._f(s, u)
        k2 = self._f(s + 0.5 * h * k1, u)
        k3 = self._f(s + 0.5 * h * k2, u)
        k4 = self._f(s + h * k3, u)
        self.s = np.clip(s + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), self.observation_space.low,
                         self.observation_space.high)
        self.t += 1
        return self.s.copy(), r, False, self.t >= self.horizon, {}
