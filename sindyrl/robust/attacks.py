"""Observation attacks inside an l-infinity ball, as gymnasium wrappers.

The policy under attack sees a perturbed observation ``s_hat`` with
``|s_hat_j - s_j| <= epsilon * scale_j`` for every dimension ``j``; the
environment keeps stepping with the true state. ``scale`` is the per-dimension
spread of the data (standard deviation by default, see
:func:`observation_scale`), so one ``epsilon`` means the same thing for an
angle and for an angular velocity.

Attacks (all share :class:`Attack`):

- :class:`NoAttack` -- the identity, so "no attack" is a column like any other;
- :class:`RandomAttack` -- uniform noise in the ball;
- :class:`MADAttack` -- maximal action difference: projected gradient ascent
  (default 10 steps of epsilon/10) on ``||mu(s_hat) - mu(s)||^2`` of the
  deterministic action (Zhang et al. 2020, "Robust deep RL against adversarial
  perturbations on state observations");
- :class:`CriticAttack` -- projected gradient descent on ``Q(s, mu(s_hat))``
  for algorithms with a Q critic (SAC, TD3, DDPG);
- :class:`LearnedAttack` -- an SB3 PPO agent that observes the true state and
  outputs the perturbation ``s_hat = s + epsilon * scale * tanh(a)``, trained
  by :func:`~sindyrl.robust.attacker_training.train_attacker` (on the surrogate).

:class:`ObservationAttack` (gymnasium) and :class:`VecObservationAttack`
(SB3 VecEnv) apply an attack to an environment; both keep the clean
observation in ``info["true_obs"]``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from .victims import Victim, as_victim

__all__ = [
    "Ball",
    "observation_scale",
    "Attack",
    "NoAttack",
    "RandomAttack",
    "MADAttack",
    "CriticAttack",
    "LearnedAttack",
    "ObservationAttack",
    "VecObservationAttack",
]

SCALE_KINDS = ("std", "range", "unit")

#: Bound of an attacker's raw action. SB3 needs a finite Box; tanh(5) = 0.9999,
#: so the whole ball is still reachable through ``epsilon * scale * tanh(a)``.
ATTACKER_ACTION_BOUND = 5.0


def observation_scale(obs: np.ndarray, kind: str | Sequence[float] = "std") -> np.ndarray:
    """Per-dimension scale of the attack ball from observed data.

    Parameters
    ----------
    obs : array, shape (N, n_obs)
        Observations (e.g. every real transition of a run).
    kind : {"std", "range", "unit"} or sequence of float, default "std"
        ``std``: standard deviation of each dimension; ``range``: max - min;
        ``unit``: ones (epsilon in raw observation units); a sequence gives the
        scale directly.

    Returns
    -------
    scale : array, shape (n_obs,)
        Non-negative and finite. A constant dimension gets scale 0 (it is not
        perturbed), which is what a spread-relative budget means for it.
    """
    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[0] < 1:
        raise ValueError(f"observation_scale: obs must have shape (N, n_obs) with N >= 1, got {obs.shape}")
    if not np.all(np.isfinite(obs)):
        raise ValueError("observation_scale: obs contains NaN or inf")
    if isinstance(kind, str):
        if kind == "std":
            return obs.std(axis=0)
        if kind == "range":
            return obs.max(axis=0) - obs.min(axis=0)
        if kind == "unit":
            return np.ones(obs.shape[1])
        raise ValueError(f"observation_scale: kind must be one of {SCALE_KINDS} or a list of floats, got {kind!r}")
    scale = np.asarray(kind, dtype=np.float64).reshape(-1)
    if scale.shape != (obs.shape[1],) or np.any(~np.isfinite(scale)) or np.any(scale < 0):
        raise ValueError(
            f"observation_scale: an explicit scale must be {obs.shape[1]} finite non-negative numbers, got {kind!r}"
        )
    return scale


class Ball:
    """The set of allowed observations around a true one.

    ``{s_hat : |s_hat - s| <= epsilon * scale}`` intersected with the
    observation bounds ``[low, high]`` when they are finite (if ``s`` itself
    lies outside the bounds by more than the radius, the ball wins).

    Parameters
    ----------
    epsilon : float
        Radius in units of ``scale``; >= 0.
    scale : array, shape (n_obs,)
        Per-dimension scale (see :func:`observation_scale`).
    low, high : array, optional
        Observation bounds (e.g. ``env.observation_space.low``).
    """

    def __init__(self, epsilon: float, scale: np.ndarray, low: np.ndarray | None = None,
                 high: np.ndarray | None = None) -> None:
        epsilon = float(epsilon)
        if not np.isfinite(epsilon) or epsilon < 0:
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
        scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        if np.any(~np.isfinite(scale)) or np.any(scale < 0):
            raise ValueError(f"scale must be finite and >= 0, got {scale}")
        self.epsilon = epsilon
        self.scale = scale
        self.radius = epsilon * scale
        n = scale.size
        self.low = None if low is None else np.broadcast_to(np.asarray(low, dtype=np.float64), (n,)).copy()
        self.high = None if high is None else np.broadcast_to(np.asarray(high, dtype=np.float64), (n,)).copy()

    @property
    def n(self) -> int:
        return self.scale.size

    def limits(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper limits of the allowed set around ``s`` (float64, broadcast like ``s``)."""
        s = np.asarray(s, dtype=np.float64)
        lo, hi = s - self.radius, s + self.radius
        if self.low is not None:
            lo2 = np.maximum(lo, self.low)
            hi2 = np.minimum(hi, self.high) if self.high is not None else hi
            ok = lo2 <= hi2
            lo, hi = np.where(ok, lo2, lo), np.where(ok, hi2, hi)
        elif self.high is not None:
            hi2 = np.minimum(hi, self.high)
            ok = lo <= hi2
            hi = np.where(ok, hi2, hi)
        return lo, hi

    def project(self, s: np.ndarray, s_hat: np.ndarray) -> np.ndarray:
        """Closest allowed point to ``s_hat``, in the dtype of ``s``.

        Rounding to a float32 observation can step one ulp outside the ball;
        such entries are moved one ulp back towards ``s``, so the result is
        inside the ball exactly (checked in float64), not only up to rounding.
        """
        s = np.asarray(s)
        dtype = s.dtype if np.issubdtype(s.dtype, np.floating) else np.dtype(np.float64)
        s = s.astype(dtype, copy=False)
        if s.shape[-1] != self.n:
            raise ValueError(f"observation has shape {s.shape}, the attack ball has {self.n} dimensions")
        lo, hi = self.limits(s)
        out = np.clip(np.asarray(s_hat, dtype=np.float64), lo, hi).astype(dtype)
        for _ in range(4):
            o64 = out.astype(np.float64)
            bad = (o64 < lo) | (o64 > hi)
            if not bad.any():
                break
            out[bad] = np.nextafter(out[bad], s[bad])
        return out

    def contains(self, s: np.ndarray, s_hat: np.ndarray) -> np.ndarray:
        """Boolean mask (per observation) of ``s_hat`` inside the ball around ``s``."""
        s64 = np.asarray(s, dtype=np.float64)
        d = np.abs(np.asarray(s_hat, dtype=np.float64) - s64)
        return np.all(d <= self.radius, axis=-1)

    def sample(self, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniform random point of the allowed set around ``s``."""
        lo, hi = self.limits(s)
        return self.project(s, rng.uniform(lo, hi))


class Attack:
    """Base of every observation attack.

    Subclasses implement :meth:`_perturb` on a batch ``(N, n_obs)``; the base
    projects the result back into the ball, so no attack can leave it.

    Parameters
    ----------
    epsilon : float
        Radius of the ball in units of ``scale``.
    scale : array, shape (n_obs,)
        Per-dimension scale.
    low, high : array, optional
        Observation bounds; the perturbed observation stays inside them.
    name : str, optional
        Label in payoff matrices; defaults to the attack's kind.
    """

    kind = "attack"
    needs_victim = False

    def __init__(self, epsilon: float, scale: np.ndarray, low: np.ndarray | None = None,
                 high: np.ndarray | None = None, name: str | None = None) -> None:
        self.ball = Ball(epsilon, scale, low, high)
        self.name = name or self.kind
        self.victim: Victim | None = None
        self._rng = np.random.default_rng(0)

    @property
    def epsilon(self) -> float:
        return self.ball.epsilon

    def reset(self, seed: int | None = None) -> None:
        """Start an episode; a seed makes the attack's own randomness repeatable."""
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), 0x5EED])

    def bind(self, victim: Any) -> Attack:
        """A copy of this attack aimed at ``victim`` (white-box attacks need it)."""
        other = copy.copy(self)
        other.victim = as_victim(victim)
        other._rng = np.random.default_rng(0)
        return other

    def perturb(self, obs: np.ndarray) -> np.ndarray:
        """Perturbed observation(s): (n_obs,) -> (n_obs,) or (N, n_obs) -> (N, n_obs)."""
        obs = np.asarray(obs)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if batch.ndim != 2 or batch.shape[1] != self.ball.n:
            raise ValueError(f"{self.name}: observation has shape {obs.shape}, expected (N, {self.ball.n})")
        if self.needs_victim and self.victim is None:
            raise ValueError(f"{self.name}: this attack needs a victim; call attack.bind(policy) first")
        out = self.ball.project(batch, self._perturb(batch))
        return out[0] if single else out

    def _perturb(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, epsilon={self.epsilon:g})"


class NoAttack(Attack):
    """The identity: the policy sees the true observation."""

    kind = "none"

    def __init__(self, n_obs: int = 1, name: str | None = None) -> None:
        super().__init__(0.0, np.zeros(int(n_obs)), name=name)

    def perturb(self, obs: np.ndarray) -> np.ndarray:
        return np.array(obs, copy=True)


class RandomAttack(Attack):
    """Uniform noise inside the ball (the baseline every attack must beat)."""

    kind = "random"

    def _perturb(self, obs: np.ndarray) -> np.ndarray:
        return self.ball.sample(obs, self._rng)


class _GradientAttack(Attack):
    """Projected sign-gradient steps in the ball, from a random start."""

    needs_victim = True
    sign = 1.0  # +1 ascends the objective, -1 descends it

    def __init__(self, epsilon: float, scale: np.ndarray, low: np.ndarray | None = None,
                 high: np.ndarray | None = None, name: str | None = None, victim: Any = None,
                 steps: int = 10, step_size: float | None = None) -> None:
        super().__init__(epsilon, scale, low, high, name)
        if int(steps) < 1:
            raise ValueError(f"{self.kind}: steps must be >= 1, got {steps}")
        self.steps = int(steps)
        self.step_size = self.epsilon / 10 if step_size is None else float(step_size)
        if not np.isfinite(self.step_size) or self.step_size < 0:
            raise ValueError(f"{self.kind}: step_size must be >= 0, got {step_size}")
        if victim is not None:
            self.victim = as_victim(victim)
            if not self.victim.differentiable:
                raise TypeError(f"{self.kind}: the victim must be a stable-baselines3 model (gradients needed)")

    def bind(self, victim: Any) -> Attack:
        other = super().bind(victim)
        if not other.victim.differentiable:
            raise TypeError(f"{self.kind}: the victim must be a stable-baselines3 model (gradients needed)")
        return other

    def _objective(self, s: torch.Tensor, s_hat: torch.Tensor, ref: Any) -> torch.Tensor:
        raise NotImplementedError

    def _reference(self, s: torch.Tensor) -> Any:
        return None

    def _start(self, obs: np.ndarray, s: torch.Tensor, ref: Any, step: torch.Tensor, lo_t: torch.Tensor,
               hi_t: torch.Tensor) -> torch.Tensor:
        # A random start: the MAD objective has zero gradient at s_hat = s.
        return self.victim.obs_tensor(self.ball.sample(obs, self._rng))

    def _perturb(self, obs: np.ndarray) -> np.ndarray:
        if self.epsilon == 0:
            return obs
        v = self.victim
        lo, hi = self.ball.limits(obs)
        lo_t, hi_t = v.obs_tensor(lo), v.obs_tensor(hi)
        step = v.obs_tensor(self.step_size * self.ball.scale)
        s = v.obs_tensor(obs)
        with torch.no_grad():
            ref = self._reference(s)
        x = self._start(obs, s, ref, step, lo_t, hi_t)
        for _ in range(self.steps):
            x.requires_grad_(True)
            loss = self._objective(s, x, ref).sum()
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                x = torch.minimum(torch.maximum(x + self.sign * step * torch.sign(grad), lo_t), hi_t)
        return x.detach().cpu().numpy().astype(np.float64)


class MADAttack(_GradientAttack):
    """Maximal action difference: PGD ascent on ``||mu(s_hat) - mu(s)||^2``.

    Parameters
    ----------
    victim : SB3 model or Victim, optional
        The attacked policy (or :meth:`bind` it later).
    steps : int, default 10
        PGD iterations.
    step_size : float, optional
        Step per iteration in units of ``scale``; default ``epsilon / 10``.
    start : {"random", "reverse"}, default "random"
        ``random``: PGD starts from a uniform point of the ball (the usual
        MAD). ``reverse``: the first step pushes the action against its clean
        value (ascent on ``-<mu(s_hat), mu(s)>``). The MAD objective is
        symmetric, so from a random start the attack is a two-valued function
        of the state; the reverse start makes it a single-valued one, which a
        learned attacker can imitate (:func:`~sindyrl.robust.attacker_training.imitate_attack`).
    """

    kind = "mad"
    sign = 1.0

    def __init__(self, epsilon: float, scale: np.ndarray, low: np.ndarray | None = None,
                 high: np.ndarray | None = None, name: str | None = None, victim: Any = None,
                 steps: int = 10, step_size: float | None = None, start: str = "random") -> None:
        super().__init__(epsilon, scale, low, high, name, victim, steps, step_size)
        if start not in ("random", "reverse"):
            raise ValueError(f"mad: start must be 'random' or 'reverse', got {start!r}")
        self.start = start

    def _start(self, obs, s, ref, step, lo_t, hi_t):
        if self.start == "random":
            return super()._start(obs, s, ref, step, lo_t, hi_t)
        x = s.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(-(self.victim.action_tensor(x) * ref).sum(), x)
        with torch.no_grad():
            return torch.minimum(torch.maximum(s + step * torch.sign(grad), lo_t), hi_t)

    def _reference(self, s: torch.Tensor) -> torch.Tensor:
        return self.victim.action_tensor(s)

    def _objective(self, s: torch.Tensor, s_hat: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return ((self.victim.action_tensor(s_hat) - ref) ** 2).sum(dim=1)


class CriticAttack(_GradientAttack):
    """PGD descent on the victim's own critic, ``Q(s, mu(s_hat))`` (SAC, TD3, DDPG)."""

    kind = "critic"
    sign = -1.0

    def bind(self, victim: Any) -> Attack:
        other = super().bind(victim)
        if not other.victim.has_critic:
            raise TypeError(f"critic attack: {other.victim.name} has no Q critic (needs SAC, TD3 or DDPG)")
        return other

    def _objective(self, s: torch.Tensor, s_hat: torch.Tensor, ref: Any) -> torch.Tensor:
        return self.victim.q_tensor(s, self.victim.action_tensor(s_hat))


class LearnedAttack(Attack):
    """A trained attacker: ``s_hat = s + epsilon * scale * tanh(nu(s))``.

    Parameters
    ----------
    model : SB3 model
        The attacker; it observes the true state and acts in ``R^n_obs``.
    deterministic : bool, default True
        Use the attacker's mean action (evaluation) or sample it.
    """

    kind = "learned"

    def __init__(self, model: Any, epsilon: float, scale: np.ndarray, low: np.ndarray | None = None,
                 high: np.ndarray | None = None, name: str | None = None, deterministic: bool = True) -> None:
        super().__init__(epsilon, scale, low, high, name)
        if not hasattr(model, "predict"):
            raise TypeError(f"LearnedAttack: model must be an SB3 model with predict(), got {type(model).__name__}")
        self.model = model
        self.deterministic = bool(deterministic)

    def _perturb(self, obs: np.ndarray) -> np.ndarray:
        a, _ = self.model.predict(obs.astype(np.float32), deterministic=self.deterministic)
        return obs.astype(np.float64) + self.ball.radius * np.tanh(np.asarray(a, dtype=np.float64))


def _check_box(space: Any, what: str) -> None:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise TypeError(f"{what}: needs a 1-D Box observation space, got {space}")


def _ball_for(attack: Attack, space: gym.spaces.Box, what: str) -> None:
    _check_box(space, what)
    if not isinstance(attack, NoAttack) and attack.ball.n != space.shape[0]:
        raise ValueError(f"{what}: attack {attack.name!r} has {attack.ball.n} dimensions, the env observes {space.shape[0]}")


class ObservationAttack(gym.Wrapper):
    """Show the policy ``attack.perturb(obs)``; the env steps with the true state.

    ``reset(seed=...)`` also seeds the attack, so an attacked evaluation is
    repeatable. The clean observation is in ``info["true_obs"]``.
    """

    def __init__(self, env: gym.Env, attack: Attack) -> None:
        super().__init__(env)
        _ball_for(attack, env.observation_space, "ObservationAttack")
        self.attack = attack

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.attack.reset(seed)
        info = dict(info)
        info["true_obs"] = obs
        return self.attack.perturb(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info["true_obs"] = obs
        return self.attack.perturb(obs), reward, terminated, truncated, info


class VecObservationAttack(VecEnvWrapper):
    """The batched form of :class:`ObservationAttack` for SB3 VecEnvs (e.g. the surrogate)."""

    def __init__(self, venv: VecEnv, attack: Attack) -> None:
        super().__init__(venv)
        _ball_for(attack, venv.observation_space, "VecObservationAttack")
        self.attack = attack

    def reset(self):
        obs = self.venv.reset()
        return self.attack.perturb(obs)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        for i, info in enumerate(infos):
            info["true_obs"] = obs[i]
            if "terminal_observation" in info:
                # SB3 bootstraps truncated episodes from this: the policy must see it attacked too.
                info["terminal_observation"] = self.attack.perturb(info["terminal_observation"])
        return self.attack.perturb(obs), rewards, dones, infos
