"""A system of our own for the generality benchmark: a plain gymnasium env, loaded as ``"double_well:DoubleWell"``.

No example and no test uses them, so nothing in sindyrl was tuned to them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from rk4_env import RK4Env


class DoubleWell(RK4Env):
    """A forced Duffing oscillator in a double-well potential, to be held on the hilltop between the wells.

    x'' = x - x^3 - 0.1 x' + 2 u, integrated with RK4 at dt = 0.05 s; observation (x, v), action u in [-1, 1].
    The hilltop x = 0 is unstable (growth rate 1/s) and the cubic term is what makes the wells, so a
    quadratic library cannot represent the system. Episodes start in either well and last 200 steps.
    """

    dt = 0.05

    def __init__(self, horizon: int = 200):
        self.observation_space = gym.spaces.Box(np.array([-3.0, -6.0]), np.array([3.0, 6.0]), dtype=np.float64)
        super().__init__(horizon)

    @staticmethod
    def _f(s: np.ndarray, u: float) -> np.ndarray:
        x, v = s
        return np.array([v, x - x**3 - 0.1 * v + 2.0 * u])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        side = self.np_random.choice([-1.0, 1.0])
        self.s = np.array([side * self.np_random.uniform(0.6, 1.4), self.np_random.uniform(-0.5, 0.5)])
        self.t = 0
        return self.s.copy(), {}

    @staticmethod
    def reward(obs, action, next_obs):
        return reward(obs, action, next_obs)


def reward(obs, action, next_obs):
    """DoubleWell's reward (batched, on the pre-step state): -(x^2 + 0.1 v^2 + 0.01 u^2)."""
    return -(obs[:, 0] ** 2 + 0.1 * obs[:, 1] ** 2 + 0.01 * np.clip(action[:, 0], -1, 1) ** 2)
