"""A small custom system for tests of "module:Class" envs and "module:function" rewards."""

import gymnasium as gym
import numpy as np


class LinearEnv(gym.Env):
    """x[k+1] = A x[k] + B u[k], reward -(|x|^2 + 0.1 |u|^2); 50-step episodes."""

    A = np.array([[1.0, 0.1], [-0.2, 0.95]])
    B = np.array([[0.0], [0.1]])

    reward_fn = staticmethod(lambda obs, action, next_obs: reward(obs, action, next_obs))

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
        r = self.reward_fn(self.x[None], u[None], None)[0]
        self.x = self.A @ self.x + self.B @ u
        self.t += 1
        return self.x.copy(), float(r), False, self.t >= self.horizon, {}


def reward(obs, action, next_obs):
    return -(np.sum(obs**2, axis=1) + 0.1 * np.sum(action**2, axis=1))


def termination(obs, action, next_obs):
    """Episode end for tests of ``env.termination: "module:function"``: the first state leaves [-2, 2]."""
    return np.abs(next_obs[:, 0]) > 2.0


#: the state :func:`peaked_reward` is largest at (reachable as a steady state only approximately, see PeakedEnv)
PEAK = np.array([0.6, 0.0])


def peaked_reward(obs, action, next_obs):
    """-(|x - PEAK|^2 + 0.1 |u|^2): the best steady state is away from the origin."""
    return -(np.sum((obs - PEAK) ** 2, axis=1) + 0.1 * np.sum(action**2, axis=1))


def notched_reward(obs, action, next_obs):
    """1 inside a small square around PEAK, 0 elsewhere: a polynomial reward model cannot fit it."""
    return np.all(np.abs(obs - PEAK) < 0.3, axis=1).astype(np.float64)


class PeakedEnv(LinearEnv):
    """LinearEnv with :func:`peaked_reward`.

    Steady states of x[k+1] = A x + B u are x = (u / 2, 0); on them the reward is
    -((u/2 - 0.6)^2 + 0.1 u^2), largest at u* = 0.6 / 0.7 = 0.857, x* = (0.429, 0).
    """

    reward_fn = staticmethod(peaked_reward)
    STEADY_U = np.array([0.6 / 0.7])
    STEADY_X = np.array([0.3 / 0.7, 0.0])


class NotchedEnv(LinearEnv):
    """LinearEnv with :func:`notched_reward`."""

    reward_fn = staticmethod(notched_reward)


class DriftEnv(gym.Env):
    """x[k+1] = x[k] + 0.1 + 0.05 u, |u| <= 1: no action holds the state, so there is no steady state."""

    def __init__(self, horizon: int = 20):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float64)
        self.horizon = horizon

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 1)
        self.t = 0
        return self.x.copy(), {}

    def step(self, u):
        u = np.clip(np.asarray(u, dtype=np.float64), -1, 1)
        r = drift_reward(self.x[None], u[None], None)[0]
        self.x = self.x + 0.1 + 0.05 * u
        self.t += 1
        return self.x.copy(), float(r), False, self.t >= self.horizon, {}


def drift_reward(obs, action, next_obs):
    """1 near x = 0.6, 0 elsewhere (a step a polynomial model cannot fit)."""
    return (np.abs(obs[:, 0] - PEAK[0]) < 0.3).astype(np.float64)


def alive_peaked_reward(obs, action, next_obs):
    """1 + :func:`peaked_reward`: positive near the peak, so an episode that ends early loses reward."""
    return 1.0 + peaked_reward(obs, action, next_obs)


class BoxedEnv(LinearEnv):
    """PeakedEnv whose episodes end when x0 > 0.3: the steady state the reward prefers (x0 = 0.43) lies outside."""

    reward_fn = staticmethod(alive_peaked_reward)
    X0_MAX = 0.3

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self.x[0] = self.np_random.uniform(-1, 0.2)  # start alive
        return self.x.copy(), info

    def step(self, u):
        obs, r, _, truncated, info = super().step(u)
        return obs, r, bool(obs[0] > self.X0_MAX), truncated, info
