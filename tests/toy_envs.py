"""A small custom system for tests of "module:Class" envs and "module:function" rewards."""

import gymnasium as gym
import numpy as np


class LinearEnv(gym.Env):
    """x[k+1] = A x[k] + B u[k], reward -(|x|^2 + 0.1 |u|^2); 50-step episodes."""

    A = np.array([[1.0, 0.1], [-0.2, 0.95]])
    B = np.array([[0.0], [0.1]])

    def __init__(self, horizon: int = 50):
        self.observation_space = gym.spaces.Box(-10, 10, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float64)
        self.horizon = horizon

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 2)
        self.t = 0
        return self.x.copy(), {}

    def step(self, u):
        u = np.clip(np.asarray(u, dtype=np.float64), -1, 1)
        r = reward(self.x[None], u[None], None)[0]
        self.x = self.A @ self.x + self.B @ u
        self.t += 1
        return self.x.copy(), float(r), False, self.t >= self.horizon, {}


def reward(obs, action, next_obs):
    return -(np.sum(obs**2, axis=1) + 0.1 * np.sum(action**2, axis=1))


def termination(obs, action, next_obs):
    """Episode end for tests of ``env.termination: "module:function"``: the first state leaves [-2, 2]."""
    return np.abs(next_obs[:, 0]) > 2.0
