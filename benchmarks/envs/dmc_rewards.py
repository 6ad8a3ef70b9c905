"""dm_control rewards written as batched ``module:function`` rewards, for systems whose reward is not built in.

dm_control computes a task's reward after the physics step, so these read ``next_obs`` (the flattened
observation, in the order shimmy's ``dm_control/...`` envs give it).
"""

import numpy as np

COS_8 = float(np.cos(np.deg2rad(8.0)))


def pendulum_swingup(obs, action, next_obs):
    """dm_control pendulum swing-up: 1 while the pole is within 8 degrees of upright, else 0.

    ``next_obs[:, 0]`` is the pole's vertical orientation component (cos of the angle from upright).
    """
    return (np.asarray(next_obs)[:, 0] >= COS_8).astype(np.float64)
