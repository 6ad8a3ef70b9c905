"""A chaotic system of our own for the generality benchmark, loaded as ``"lorenz:ControlledLorenz"``.

No example and no test tunes anything to it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from rk4_env import RK4Env

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
#: the unstable fixed point C+ of the uncontrolled system, to be held
TARGET = np.array([np.sqrt(BETA * (RHO - 1.0)), np.sqrt(BETA * (RHO - 1.0)), RHO - 1.0])
GAIN = 50.0


class ControlledLorenz(RK4Env):
    """The Lorenz system with a force on its first equation, to be held on the fixed point C+.

    x' = sigma (y - x) + 50 u,  y' = x (rho - z) - y,  z' = x y - beta z  (sigma 10, rho 28, beta 8/3: chaotic),
    RK4 at dt = 0.01 s; observation (x, y, z), action u in [-1, 1]. C+ = (8.49, 8.49, 27) is a saddle-focus of
    the free system, so the uncontrolled state wanders the attractor; the force enters one equation only and
    the other two are quadratic, so holding C+ needs the model's coupling. Episodes start anywhere in a box
    around the attractor and last 300 steps (3 s, a few Lyapunov times). The controlled Lorenz system is the
    classic SINDy-with-control example (Kaiser, Kutz and Brunton 2018, SINDy-MPC).
    """

    dt = 0.01

    def __init__(self, horizon: int = 300):
        hi = np.array([60.0, 60.0, 90.0])
        self.observation_space = gym.spaces.Box(-hi, hi, dtype=np.float64)
        super().__init__(horizon)

    @staticmethod
    def _f(s: np.ndarray, u: float) -> np.ndarray:
        x, y, z = s
        return np.array([SIGMA * (y - x) + GAIN * u, x * (RHO - z) - y, x * y - BETA * z])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = self.np_random.uniform([-15.0, -20.0, 10.0], [15.0, 20.0, 40.0])
        self.t = 0
        return self.s.copy(), {}

    @staticmethod
    def reward(obs, action, next_obs):
        return reward(obs, action, next_obs)


def reward(obs, action, next_obs):
    """ControlledLorenz's reward (batched, on the pre-step state): -(|s - C+|^2 / 100 + 0.1 u^2)."""
    d = np.asarray(obs, dtype=np.float64) - TARGET
    return -(np.sum(d**2, axis=1) / 100.0 + 0.1 * np.clip(np.asarray(action)[:, 0], -1, 1) ** 2)
