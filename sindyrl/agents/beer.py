"""BEER: a DDPG/TD3 critic regularised by the representation-rank bound of the Bellman equation.

The critic is read as ``Q(s, a) = w^T phi(s, a) + b`` (``phi`` the output of the
last hidden layer, ``w, b`` the output layer). The Bellman equation then bounds
how similar consecutive features may be; BEER penalises batch pairs whose cosine
similarity exceeds that bound. The pure functions here (bound, penalty,
effective rank, feature extraction) are used by :class:`BEER` and by the
benchmark, and are tested on their own.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import TD3
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise, NormalActionNoise
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.td3.policies import TD3Policy
from torch import nn
from torch.nn import functional as F

__all__ = ["BEER", "bellman_cosine_bound", "bellman_rank_penalty", "critic_features", "effective_rank"]

#: Floor on the product of feature norms in the bound's denominator: dead ReLU
#: features (phi = 0) must give an infinite-like bound (no penalty), not NaN.
NORM_EPS = 1e-8

# Settings that turn SB3's TD3 into DDPG (as SB3's own DDPG does): actor updated
# every step, one critic, target smoothing noise clipped to zero.
_BASES: dict[str, dict[str, float]] = {
    "ddpg": {"policy_delay": 1, "target_policy_noise": 0.1, "target_noise_clip": 0.0, "n_critics": 1},
    "td3": {"policy_delay": 2, "target_policy_noise": 0.2, "target_noise_clip": 0.5, "n_critics": 2},
}


def critic_features(critic: ContinuousCritic, obs: th.Tensor, actions: th.Tensor) -> list[th.Tensor]:
    """Last-hidden-layer features ``phi(s, a)`` of every Q-network of an SB3 critic.

    Parameters
    ----------
    critic : ContinuousCritic
        SB3 critic whose ``q_networks`` are ``nn.Sequential`` ending in ``nn.Linear(d, 1)``.
    obs, actions : torch.Tensor
        Batch of observations (B x ...) and actions (B x n_act), as the critic's ``forward`` takes them.

    Returns
    -------
    list of torch.Tensor
        One (B x d) tensor per Q-network; ``q_net[-1](phi)`` is that network's Q-value.
    """
    # As ContinuousCritic.forward: a features extractor shared with the actor learns from the actor loss only.
    with th.set_grad_enabled(th.is_grad_enabled() and not critic.share_features_extractor):
        features = critic.extract_features(obs, critic.features_extractor)
    x = th.cat([features, actions], dim=1)
    phis = []
    for q_net in critic.q_networks:
        # Run the layers by hand: slicing an nn.Sequential builds a new module on every call.
        h = x
        for layer in list(q_net)[:-1]:
            h = layer(h)
        phis.append(h)
    return phis


def bellman_cosine_bound(
    phi: th.Tensor,
    next_phi: th.Tensor,
    rewards: th.Tensor,
    weight: th.Tensor,
    bias: th.Tensor | None,
    gamma: float | th.Tensor,
) -> th.Tensor:
    """Upper bound on ``cos(phi, next_phi)`` implied by the Bellman equation.

    With ``Q = w^T phi + b`` the Bellman equation gives ``r - (1 - gamma) b = (phi - gamma phi')^T w``,
    and Cauchy-Schwarz gives
    ``cos(phi, phi') <= (|phi|^2 + gamma^2 |phi'|^2 - (r - (1 - gamma) b)^2 / |w|^2) / (2 gamma |phi| |phi'|)``.
    The bias term is exact for a biased output layer; with ``bias=None`` this is the paper's formula.
    The result carries no gradient.

    Parameters
    ----------
    phi, next_phi : torch.Tensor
        Features at (s, a) and (s', a'), shape (B x d).
    rewards : torch.Tensor
        Rewards, shape (B,) or (B x 1).
    weight : torch.Tensor
        Output-layer weight ``w``, shape (1 x d) or (d,).
    bias : torch.Tensor or None
        Output-layer bias ``b`` (shape (1,)), or None.
    gamma : float or torch.Tensor
        Discount (scalar, or per sample (B,) / (B x 1) for n-step returns).

    Returns
    -------
    torch.Tensor
        The bound per pair, shape (B,).
    """
    with th.no_grad():
        r = rewards.reshape(-1)
        g = gamma.reshape(-1) if isinstance(gamma, th.Tensor) else float(gamma)
        if bias is not None:
            r = r - (1.0 - g) * bias.reshape(())
        norm_sq = (phi * phi).sum(dim=1)
        next_norm_sq = (next_phi * next_phi).sum(dim=1)
        numerator = norm_sq + g**2 * next_norm_sq - r**2 / (weight * weight).sum()
        return numerator / (2.0 * g * (norm_sq * next_norm_sq).sqrt().clamp_min(NORM_EPS))


def bellman_rank_penalty(
    phi: th.Tensor, next_phi: th.Tensor, bound: th.Tensor, mask: th.Tensor
) -> tuple[th.Tensor, th.Tensor]:
    """BEER's penalty ``mean(ReLU(cos(phi, sg(next_phi)) - sg(bound)))`` over the pairs in ``mask``.

    Parameters
    ----------
    phi : torch.Tensor
        Features at (s, a), shape (B x d); the only input gradients reach.
    next_phi : torch.Tensor
        Target features at (s', a'), shape (B x d); detached here.
    bound : torch.Tensor
        From :func:`bellman_cosine_bound`, shape (B,); detached here.
    mask : torch.Tensor
        1 for pairs to include (non-terminal transitions), 0 otherwise; shape (B,) or (B x 1).

    Returns
    -------
    penalty : torch.Tensor
        Scalar penalty (0 when no pair is included).
    frac_above : torch.Tensor
        Scalar fraction of included pairs whose cosine exceeds the bound (no gradient).
    """
    m = mask.reshape(-1).to(phi.dtype)
    n = m.sum().clamp_min(1.0)
    cos = F.cosine_similarity(phi, next_phi.detach(), dim=1)
    excess = cos - bound.detach()
    penalty = (F.relu(excess) * m).sum() / n
    frac_above = ((excess.detach() > 0).to(phi.dtype) * m).sum() / n
    return penalty, frac_above


def effective_rank(features: th.Tensor, delta: float = 0.01) -> int:
    """Effective rank ``srank_delta`` of a feature matrix (Kumar et al., 2021).

    The smallest k such that the k largest singular values hold at least ``1 - delta`` of their sum.
    Singular values below ``max(B, d) * eps * s_max`` (``eps`` of the input's dtype) are rounding noise and count as zero, as in
    :func:`numpy.linalg.matrix_rank`: without that, ``delta=0`` counts noise whose size depends on the
    BLAS kernel, so the answer would differ between CPUs.

    Parameters
    ----------
    features : torch.Tensor
        Feature matrix (B x d).
    delta : float, default 0.01
        Fraction of the singular-value mass allowed to be left out, in [0, 1).

    Returns
    -------
    int
        The effective rank, between 0 (all-zero features) and min(B, d).
    """
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    with th.no_grad():
        # the tolerance follows the input's precision: float32 features carry float32 rounding noise
        eps = th.finfo(features.dtype if features.dtype.is_floating_point else th.float64).eps
        x = features.double()
        s = th.linalg.svdvals(x)
        if s.numel() == 0 or s[0] <= 0:
            return 0
        tol = s[0] * max(x.shape) * eps
        s = s[s > tol]
        cum = th.cumsum(s, 0) / s.sum()
        # a relative slack on the threshold keeps cum == 1 - delta exactly (up to rounding) on the same side
        return min(int((cum < (1.0 - delta) * (1.0 - 1e-12)).sum().item()) + 1, s.numel())


class BEER(TD3):
    """BEER: DDPG (or TD3) with the Bellman-equation representation-rank regularizer.

    He, Zhou, Fang, Maghsudi, "Adaptive Regularization of Representation Rank as an
    Implicit Constraint of Bellman Equation", ICLR 2024, https://arxiv.org/abs/2404.12754.
    Authors' code (DPG agents on DeepMind Control): https://github.com/sweetice/BEER-ICLR2024.

    The critic loss gets ``beer_coef * mean(ReLU(cos(phi(s,a), phi_bar(s',a')) - bound))`` where
    ``phi`` is the critic's last hidden layer, ``phi_bar`` the target critic's at the target
    actor's next action, and the bound (:func:`bellman_cosine_bound`) follows from the Bellman
    equation; both are under stop-gradient, and terminal transitions are left out. Unlike the
    reference code, the configured discount (``gamma``, or the n-step discount) is used and the
    output bias enters the bound. With twin critics (``base="td3"``) each critic is penalised
    on its own features. Each gradient step computes ``phi`` once and applies the output
    layer itself, so the penalty costs no extra forward pass.

    After each ``train()`` call, ``beer_stats`` holds ``beer_penalty``, ``beer_frac_above_bound``
    (means over the call's gradient steps) and ``beer_srank`` (effective rank of the first
    critic's features on the latest batch, recomputed every ``srank_interval`` updates); the same
    values go to the logger as ``train/beer_*``.

    Parameters
    ----------
    policy, env
        As for any SB3 algorithm (``"MlpPolicy"``; a gymnasium env, its id, or a VecEnv).
    beer_coef : float, default 1e-3
        Weight beta of the penalty in the critic loss (0 gives exactly SB3's DDPG / TD3). With twin
        critics the penalty is summed over them, as the TD loss is.
    base : {"ddpg", "td3"}, default "ddpg"
        ``ddpg``: one critic, actor updated every step, no target smoothing (as SB3's DDPG);
        ``td3``: twin critics, delayed actor, target smoothing (SB3's TD3 defaults).
    exploration_noise : float, default 0.1
        Std of Gaussian exploration noise on the [-1, 1]-scaled action, used when ``action_noise``
        is None (0: no noise).
    srank_interval : int, default 250
        Gradient steps between effective-rank computations (an SVD: too costly for every step).
    srank_delta : float, default 0.01
        The delta of srank.
    learning_rate : float or schedule, default 3e-4
        Adam step size (the paper's); ``policy_kwargs`` defaults to ``net_arch=[256, 256]`` (the paper's).
    policy_delay, target_policy_noise, target_noise_clip : optional
        As in TD3; None takes the ``base``'s value.
    **other arguments**
        As in :class:`stable_baselines3.TD3`, same defaults.
    """

    policy: TD3Policy

    def __init__(
        self,
        policy: str | type[TD3Policy],
        env: GymEnv | str,
        beer_coef: float = 1e-3,
        base: Literal["ddpg", "td3"] = "ddpg",
        exploration_noise: float = 0.1,
        srank_interval: int = 250,
        srank_delta: float = 0.01,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        policy_delay: int | None = None,
        target_policy_noise: float | None = None,
        target_noise_clip: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if base not in _BASES:
            raise ValueError(f"base must be one of {tuple(_BASES)}, got {base!r}")
        if not (isinstance(beer_coef, int | float) and np.isfinite(beer_coef) and beer_coef >= 0):
            raise ValueError(f"beer_coef must be a finite number >= 0, got {beer_coef!r}")
        if not (isinstance(exploration_noise, int | float) and exploration_noise >= 0):
            raise ValueError(f"exploration_noise must be a number >= 0, got {exploration_noise!r}")
        if not (isinstance(srank_interval, int) and srank_interval >= 1):
            raise ValueError(f"srank_interval must be an int >= 1, got {srank_interval!r}")
        if not 0.0 <= srank_delta < 1.0:
            raise ValueError(f"srank_delta must be in [0, 1), got {srank_delta!r}")
        defaults = _BASES[base]
        policy_kwargs = dict(policy_kwargs or {})
        policy_kwargs.setdefault("net_arch", [256, 256])
        policy_kwargs.setdefault("n_critics", int(defaults["n_critics"]))
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_delay=int(defaults["policy_delay"]) if policy_delay is None else policy_delay,
            target_policy_noise=defaults["target_policy_noise"] if target_policy_noise is None else target_policy_noise,
            target_noise_clip=defaults["target_noise_clip"] if target_noise_clip is None else target_noise_clip,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.beer_coef = float(beer_coef)
        self.base = base
        self.exploration_noise = float(exploration_noise)
        self.srank_interval = srank_interval
        self.srank_delta = float(srank_delta)
        self.beer_stats: dict[str, float] = {}
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        for i, q_net in enumerate(self.critic.q_networks):
            head = q_net[-1] if isinstance(q_net, nn.Sequential) and len(q_net) > 1 else None
            if not (isinstance(head, nn.Linear) and head.out_features == 1):
                raise TypeError(
                    f"BEER needs critic q-network {i} to be an nn.Sequential ending in nn.Linear(d, 1) "
                    f"(phi = all but the last layer); got {type(q_net).__name__}"
                )
        if self.action_noise is None and self.exploration_noise > 0:
            assert isinstance(self.action_space, spaces.Box)
            n_act = int(np.prod(self.action_space.shape))
            self.action_noise = NormalActionNoise(np.zeros(n_act), self.exploration_noise * np.ones(n_act))

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        heads = [q_net[-1] for q_net in self.critic.q_networks]
        target_heads = [q_net[-1] for q_net in self.critic_target.q_networks]

        actor_losses, critic_losses, penalties, fracs = [], [], [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # Discount of this transition: gamma, or gamma**n for n-step returns cut short by an episode end.
            discounts = data.discounts if data.discounts is not None else self.gamma

            with th.no_grad():
                # Target action a' = mu_bar(s') (plus TD3's clipped smoothing noise; zero for DDPG).
                noise = data.actions.clone().data.normal_(0, self.target_policy_noise)
                noise = noise.clamp(-self.target_noise_clip, self.target_noise_clip)
                next_actions = (self.actor_target(data.next_observations) + noise).clamp(-1, 1)
                # phi_bar(s', a') from the target critics, and their Q through the output layers.
                next_phi = critic_features(self.critic_target, data.next_observations, next_actions)
                next_q = th.cat([head(f) for head, f in zip(target_heads, next_phi)], dim=1)
                next_q, _ = th.min(next_q, dim=1, keepdim=True)
                target_q = data.rewards + (1 - data.dones) * discounts * next_q

            # phi(s, a) once; Q(s, a) = w^T phi + b through each critic's output layer.
            phi = critic_features(self.critic, data.observations, data.actions)
            td_loss = sum(F.mse_loss(head(f), target_q) for head, f in zip(heads, phi))
            assert isinstance(td_loss, th.Tensor)

            # Bellman bound on cos(phi, phi_bar) (stop-gradient), penalty over non-terminal pairs only.
            penalty, frac = th.zeros((), device=self.device), th.zeros((), device=self.device)
            for head, f, nf in zip(heads, phi, next_phi):
                bound = bellman_cosine_bound(f, nf, data.rewards, head.weight, head.bias, discounts)
                p, fr = bellman_rank_penalty(f, nf, bound, 1 - data.dones)
                penalty, frac = penalty + p, frac + fr / len(phi)
            critic_loss = td_loss + self.beer_coef * penalty
            critic_losses.append(td_loss.detach())
            penalties.append(penalty.detach())
            fracs.append(frac)

            # Critic step on TD loss + beta * penalty.
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            # Effective rank of the critic's features, only now and then (an SVD per step would dominate).
            if (self._n_updates - 1) % self.srank_interval == 0:
                self.beer_stats["beer_srank"] = float(effective_rank(phi[0].detach(), self.srank_delta))

            # Actor step and target updates, every policy_delay critic steps (every step for DDPG).
            if self._n_updates % self.policy_delay == 0:
                actor_loss = -self.critic.q1_forward(data.observations, self.actor(data.observations)).mean()
                actor_losses.append(actor_loss.item())
                self.actor.optimizer.zero_grad()
                actor_loss.backward()
                self.actor.optimizer.step()

                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)
                polyak_update(self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0)
                polyak_update(self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0)

        if penalties:
            self.beer_stats["beer_penalty"] = th.stack(penalties).mean().item()
            self.beer_stats["beer_frac_above_bound"] = th.stack(fracs).mean().item()
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if actor_losses:
            self.logger.record("train/actor_loss", np.mean(actor_losses))
        if critic_losses:
            self.logger.record("train/critic_loss", th.stack(critic_losses).mean().item())
        for key, value in self.beer_stats.items():
            self.logger.record(f"train/{key}", value)
