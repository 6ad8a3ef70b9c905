"""Rewards in torch, for gradients through surrogate rollouts: the built-in known rewards, learned ones, fits.

:func:`torch_reward` turns the surrogate's reward into ``reward(obs, action, next_obs) -> (N,)`` on torch
tensors, differentiable in all three:

- a learned reward (a :class:`~sindyrl.reward.SINDyReward`, a SparseModel) becomes its torch twin;
- a built-in known reward (:data:`sindyrl.reward.BUILTIN_REWARDS`) is looked up in :data:`TORCH_REWARDS`,
  keyed by the same names, each the same formula as its numpy version (a test checks they agree);
- a ``module:function`` reward without a torch form is fitted by a SparseModel r(obs, action) on given
  states (its error is reported; too large an error is an error, and the caller skips the gradient step).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .sparse import SparseModel
from .torch_model import TorchSparseModel

__all__ = ["TORCH_REWARDS", "torch_reward", "TorchRewardFn", "NoTorchReward"]

TorchRewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class NoTorchReward(ValueError):
    """The reward has no torch form and could not be fitted well enough: no gradient step is possible."""


def _pendulum(obs, action, next_obs):
    th = torch.atan2(obs[:, 1], obs[:, 0])
    u = torch.clamp(action[:, 0], -2.0, 2.0)
    return -(th**2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u**2)


_TOL_SCALE = math.sqrt(-2.0 * math.log(0.1))


def _tolerance_gaussian(x, margin):
    return torch.exp(-0.5 * (x / margin * _TOL_SCALE) ** 2)


def _cartpole_swingup(obs, action, next_obs):
    x, cos_th, th_dot = next_obs[:, 0], next_obs[:, 1], next_obs[:, 4]
    u = torch.clamp(action[:, 0], -1.0, 1.0)
    upright = (cos_th + 1.0) / 2.0
    centered = (1.0 + _tolerance_gaussian(x, 2.0)) / 2.0
    small_control = (4.0 + torch.where(u.abs() < 1.0, 1.0 - u**2, torch.zeros_like(u))) / 5.0
    small_velocity = (1.0 + _tolerance_gaussian(th_dot, 5.0)) / 2.0
    return upright * centered * small_control * small_velocity


def _swimmer(obs, action, next_obs):
    return next_obs[:, 3] - 1e-4 * (action**2).sum(dim=1)


def _inverted_double_pendulum(obs, action, next_obs):
    from .termination import double_pendulum_tip  # plain arithmetic: works on tensors too

    x, height = double_pendulum_tip(next_obs)
    alive = 10.0 * (height > 1.0).to(next_obs.dtype)
    return alive - (0.01 * x**2 + (height - 2.0) ** 2) - (1e-3 * next_obs[:, 6] ** 2 + 5e-3 * next_obs[:, 7] ** 2)


#: Torch forms of the built-in known rewards, by the names of :data:`sindyrl.reward.BUILTIN_REWARDS`.
#: (InvertedPendulum's reward is an indicator: it has no gradient, and no torch form here.)
TORCH_REWARDS: dict[str, TorchRewardFn] = {
    "pendulum": _pendulum,
    "Pendulum-v1": _pendulum,
    "cartpole_swingup": _cartpole_swingup,
    "dm_control/cartpole-swingup-v0": _cartpole_swingup,
    "swimmer": _swimmer,
    "Swimmer-v5": _swimmer,
    "inverted_double_pendulum": _inverted_double_pendulum,
    "InvertedDoublePendulum-v5": _inverted_double_pendulum,
}


def _sparse_reward(model: SparseModel, n_obs: int) -> TorchRewardFn:
    twin = TorchSparseModel(model)

    def reward(obs, action, next_obs):
        return twin(torch.cat([obs, action], dim=1))[:, 0]

    return reward


def _fit_reward(fn: Callable, name: str, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray,
                obs_names, action_names, max_error: float, echo) -> TorchRewardFn:
    """A degree-2 SparseModel r(obs, action) fitted to a numpy reward on the given transitions."""
    from .config import LibraryConfig
    from .regression import fit_sparse_regression

    r = np.asarray(fn(obs, actions, next_obs), dtype=np.float64).reshape(-1)
    scale = max(float(r.std()), 1e-8)
    best = None
    for lib in (LibraryConfig(degree=2), LibraryConfig(degree=3), LibraryConfig(degree=2, fourier=1)):
        m, _ = fit_sparse_regression(obs, actions, r[:, None], lib, list(obs_names) + list(action_names), ["r"],
                                     1e-4, 1e-6, 1, 0, name="reward", discrete_time=False)
        err = float(np.sqrt(np.mean((m.evaluate(np.concatenate([obs, actions], 1))[:, 0] - r) ** 2)) / scale)
        if best is None or err < best[0]:
            best = (err, m)
    assert best is not None
    err, m = best
    if err > max_error:
        raise NoTorchReward(f"reward {name!r} has no torch form, and a sparse fit of it on {len(r)} states is off by "
                            f"{err:.3g} of its spread (more than {max_error:g})")
    echo(f"[refine] reward {name!r} has no torch form: using a sparse fit of it ({m.nnz} terms, relative RMS error "
         f"{err:.3g})")
    return _sparse_reward(m, obs.shape[1])


def torch_reward(reward, obs_names=(), action_names=(), data: tuple[np.ndarray, ...] | None = None,
                 max_fit_error: float = 0.05, echo: Callable[..., None] = print) -> TorchRewardFn:
    """The torch form of a surrogate's reward (see the module docstring).

    ``data`` = (obs, actions, next_obs) the fallback fit of a ``module:function`` reward is made on; without
    it, or when the fit is off by more than ``max_fit_error`` (relative RMS), :class:`NoTorchReward` is raised.
    """
    from .reward import KnownReward, SINDyReward

    if isinstance(reward, SparseModel):
        return _sparse_reward(reward, reward.n_inputs - len(action_names))
    if isinstance(reward, SINDyReward):
        if not hasattr(reward, "model_"):
            raise ValueError("torch_reward: the SINDyReward is not fitted")
        return _sparse_reward(reward.model_, len(reward.obs_names))
    torch_form = getattr(getattr(reward, "fn", reward), "torch", None)
    if callable(torch_form):  # a user's numpy reward may carry its torch form as ``fn.torch``
        return torch_form
    if isinstance(reward, KnownReward) and reward.name in TORCH_REWARDS:
        return TORCH_REWARDS[reward.name]
    name = getattr(reward, "name", getattr(reward, "__name__", type(reward).__name__))
    if data is None:
        raise NoTorchReward(f"reward {name!r} has no torch form and no data to fit one on")
    fn = reward.fn if isinstance(reward, KnownReward) else reward
    return _fit_reward(fn, name, *data, obs_names, action_names, max_fit_error, echo)
