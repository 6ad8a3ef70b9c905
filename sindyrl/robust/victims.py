"""The policy under attack, seen through one small interface.

Attacks and evaluations need three things from a policy: its deterministic
action on a batch of observations (numpy), the same action as a differentiable
torch function (for the gradient attacks, MAD and the critic attack), and, when
the algorithm has one, its Q critic. :class:`Victim` wraps a stable-baselines3
model (PPO, A2C, SAC, TD3, DDPG) or a plain callable and offers exactly those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["Victim", "as_victim"]


class Victim:
    """A policy as attacks see it.

    Parameters
    ----------
    policy : SB3 model or callable
        A stable-baselines3 algorithm (anything with ``.policy`` and
        ``.predict``) or ``act(obs batch (N, n_obs)) -> actions (N, n_act)``.
        Only SB3 models support the gradient attacks.
    name : str
        Label used in payoff matrices and plots.

    Notes
    -----
    Differentiable actions are expressed in the *normalised* action space
    (roughly [-1, 1] per dimension), so the MAD distance weights every action
    dimension by its range: for off-policy actors this is the tanh output, for
    PPO/A2C the Gaussian mean divided by the half-range of the action bounds
    (unclipped, so that the gradient does not vanish at the bounds).
    """

    def __init__(self, policy: Any, name: str = "policy") -> None:
        self.name = str(name)
        self.model = None
        self._act: Callable[[np.ndarray], np.ndarray] | None = None
        if hasattr(policy, "policy") and hasattr(policy, "predict"):
            self.model = policy
        elif callable(policy):
            self._act = policy
        else:
            raise TypeError(f"Victim: expected a stable-baselines3 model or a callable, got {type(policy).__name__}")

    # ------------------------------------------------------------------ numpy
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic env actions for a batch ``(N, n_obs)`` (or one observation)."""
        obs = np.asarray(obs)
        if self.model is not None:
            a, _ = self.model.predict(obs, deterministic=True)
            return np.asarray(a)
        single = obs.ndim == 1
        a = np.asarray(self._act(obs[None] if single else obs), dtype=np.float64)
        if single:
            return a.reshape(-1)
        return a.reshape(obs.shape[0], -1)

    # ------------------------------------------------------------------ torch
    @property
    def differentiable(self) -> bool:
        """Whether :meth:`action_tensor` is available (SB3 models only)."""
        return self.model is not None

    @property
    def has_critic(self) -> bool:
        """Whether the model has a Q critic ``Q(s, a)`` (SAC, TD3, DDPG)."""
        return self.model is not None and hasattr(self.model.policy, "critic") and hasattr(self.model.policy, "actor")

    def _require_model(self, what: str) -> None:
        if self.model is None:
            raise TypeError(f"{what} needs a stable-baselines3 model as the victim, got a plain callable ({self.name})")

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        self._require_model("a gradient attack")
        return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.model.policy.device)

    def action_tensor(self, obs: torch.Tensor) -> torch.Tensor:
        """Differentiable deterministic action in the normalised action space, shape (N, n_act)."""
        self._require_model("a gradient attack")
        pol = self.model.policy
        if hasattr(pol, "actor"):
            # SAC/TD3/DDPG actors output the tanh-squashed action in [-1, 1].
            try:
                return pol.actor(obs, deterministic=True)
            except TypeError:
                return pol.actor(obs)
        mean = pol.get_distribution(obs).mode()
        space = self.model.action_space
        if hasattr(space, "low") and np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)):
            lo = torch.as_tensor(space.low, dtype=mean.dtype, device=mean.device)
            hi = torch.as_tensor(space.high, dtype=mean.dtype, device=mean.device)
            return (mean - (hi + lo) / 2) / ((hi - lo) / 2)
        return mean

    def q_tensor(self, obs: torch.Tensor, action_normalised: torch.Tensor) -> torch.Tensor:
        """The critic's value ``min_k Q_k(s, a)``, shape (N,); ``a`` in the normalised action space."""
        if not self.has_critic:
            raise TypeError(
                f"the critic attack needs a Q critic (SAC, TD3 or DDPG); {self.name} "
                f"({type(self.model).__name__ if self.model is not None else 'callable'}) has none"
            )
        qs = self.model.policy.critic(obs, action_normalised)
        return torch.min(torch.cat(qs, dim=1), dim=1).values

    def set_training_mode(self, mode: bool) -> None:
        if self.model is not None:
            self.model.policy.set_training_mode(mode)


def as_victim(policy: Any, name: str | None = None) -> Victim:
    """Return ``policy`` as a :class:`Victim` (unchanged if it already is one)."""
    if isinstance(policy, Victim):
        return policy
    return Victim(policy, name=name or type(policy).__name__)
