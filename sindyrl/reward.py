"""Rewards for the surrogate: a known function, or a sparse E-SINDy model r(x[k], u[k]).

Every reward is a callable ``reward(obs, action, next_obs) -> (N,)`` on batches.
The sparse model is trained and queried on the same time index: r[k] is fitted
on (x[k], u[k]) and evaluated on (x[k], u[k]) of the step being taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np

from .config import LibraryConfig
from .data import TransitionBuffer
from .selection import (
    ABSOLUTE_TOLERANCE,
    Selection,
    angle_like_states,
    candidate_libraries,
    choice_keys,
    impulsive_states,
    resolve,
    select_library,
)
from .sparse import SparseModel

__all__ = ["SINDyReward", "KnownReward", "known_reward", "BUILTIN_REWARDS", "RewardFn"]

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _pendulum(obs, action, next_obs):
    """Pendulum-v1: -(th^2 + 0.1 th_dot^2 + 0.001 u^2) on the pre-step state and clipped action."""
    th = np.arctan2(obs[:, 1], obs[:, 0])
    u = np.clip(action[:, 0], -2.0, 2.0)
    return -(th**2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u**2)


def _tolerance_gaussian(x, margin):
    # dm_control rewards.tolerance with bounds (0, 0), gaussian sigmoid, value_at_margin 0.1
    scale = np.sqrt(-2.0 * np.log(0.1))
    return np.exp(-0.5 * (x / margin * scale) ** 2)


def _cartpole_swingup(obs, action, next_obs):
    """dm_control cartpole swing-up (smooth reward) on the post-step state (as dm_control computes it).

    Observation order: cart position, cos, sin, cart velocity, angular velocity.
    """
    x, cos_th, th_dot = next_obs[:, 0], next_obs[:, 1], next_obs[:, 4]
    u = np.clip(action[:, 0], -1.0, 1.0)
    upright = (cos_th + 1.0) / 2.0
    centered = (1.0 + _tolerance_gaussian(x, 2.0)) / 2.0
    small_control = (4.0 + np.where(np.abs(u) < 1.0, 1.0 - u**2, 0.0)) / 5.0
    small_velocity = (1.0 + _tolerance_gaussian(th_dot, 5.0)) / 2.0
    return upright * centered * small_control * small_velocity


def _swimmer(obs, action, next_obs):
    """Swimmer-v5 (approximate): forward velocity of the next state minus 1e-4 |u|^2.

    The env uses the finite-difference x velocity over the frame skip; the
    observed velocity after the step is a close stand-in (not exact).
    """
    return next_obs[:, 3] - 1e-4 * np.sum(action**2, axis=1)


def _inverted_pendulum(obs, action, next_obs):
    """InvertedPendulum-v5: 1 for every step after which the pole is still upright (|angle| <= 0.2)."""
    from .termination import BUILTIN_TERMINATIONS

    return (~BUILTIN_TERMINATIONS["InvertedPendulum-v5"](obs, action, next_obs)).astype(np.float64)


def _inverted_double_pendulum(obs, action, next_obs):
    """InvertedDoublePendulum-v5: 10 while the tip is above 1 m, minus the tip's distance from (0, 2) and the
    links' velocities (the observed velocities are clipped to ±10, as the env's are not: close, not exact)."""
    from .termination import double_pendulum_tip

    x, height = double_pendulum_tip(next_obs)
    alive = 10.0 * (height > 1.0)
    return alive - (0.01 * x**2 + (height - 2.0) ** 2) - (1e-3 * next_obs[:, 6] ** 2 + 5e-3 * next_obs[:, 7] ** 2)


#: Built-in known rewards, by name and by the env ids they belong to.
BUILTIN_REWARDS: dict[str, RewardFn] = {
    "pendulum": _pendulum,
    "Pendulum-v1": _pendulum,
    "cartpole_swingup": _cartpole_swingup,
    "dm_control/cartpole-swingup-v0": _cartpole_swingup,
    "swimmer": _swimmer,
    "Swimmer-v5": _swimmer,
    "inverted_pendulum": _inverted_pendulum,
    "InvertedPendulum-v5": _inverted_pendulum,
    "inverted_double_pendulum": _inverted_double_pendulum,
    "InvertedDoublePendulum-v5": _inverted_double_pendulum,
}


class KnownReward:
    """A known reward function, batched: ``reward(obs, action, next_obs) -> (N,)``."""

    def __init__(self, fn: RewardFn, name: str = "known"):
        self.fn = fn
        self.name = name

    def __call__(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        r = np.asarray(self.fn(np.atleast_2d(obs), np.atleast_2d(action), np.atleast_2d(next_obs)), dtype=np.float64)
        return r.reshape(-1)


def known_reward(spec: str) -> KnownReward:
    """Look up a built-in reward by name or env id, or import ``"module:function"``."""
    from .envs import known_function

    return KnownReward(known_function(spec, BUILTIN_REWARDS, "reward.known"), spec)


class SINDyReward:
    """Sparse E-SINDy reward model r[k] = Theta(x[k], u[k]) xi.

    Parameters mirror :class:`sindyrl.dynamics.SINDyDynamics`: ``library="auto"`` (and ``threshold="auto"``)
    choose them by held-out one-step reward error (:mod:`sindyrl.selection`); ``unit_pairs`` keeps
    (cos, sin) states out of the Fourier candidates.
    """

    def __init__(
        self,
        obs_names: Sequence[str],
        action_names: Sequence[str],
        library: LibraryConfig | str | None = None,
        threshold: float | str | None = 1e-3,
        alpha: float = 1e-5,
        n_models: int = 20,
        normalize_columns: bool = False,
        seed: int = 0,
        selection_tolerance: float = 0.15,
        unit_pairs: Sequence[tuple[int, int]] = (),
    ):
        self.obs_names = list(obs_names)
        self.action_names = list(action_names)
        self.library = library or LibraryConfig()
        self.threshold = threshold
        self.alpha = alpha
        self.n_models = n_models
        self.normalize_columns = normalize_columns
        self.seed = seed
        self.selection_tolerance = selection_tolerance
        self.unit_pairs = [tuple(p) for p in unit_pairs]

    @classmethod
    def from_config(cls, cfg, obs_names, action_names, seed: int, unit_pairs=()) -> SINDyReward:
        return cls(obs_names, action_names, cfg.library, cfg.threshold, cfg.alpha, cfg.n_models,
                   cfg.normalize_columns, seed, cfg.selection_tolerance, unit_pairs)

    def fit(self, buffer: TransitionBuffer, val_mask: np.ndarray | None = None) -> SINDyReward:
        from .regression import fit_sparse_regression  # pysindy: imported only when a reward is fitted

        train = np.ones(len(buffer), dtype=bool) if val_mask is None else ~val_mask
        if train.sum() < 2:
            raise ValueError("reward fit: need at least 2 training transitions")
        self.library_, self.threshold_, self.selection_ = self._select(buffer, train)
        model, _ = fit_sparse_regression(
            buffer.obs[train], buffer.actions[train], buffer.rewards[train][:, None], self.library_,
            self.obs_names + self.action_names, ["r"], self.threshold_, self.alpha, self.n_models, self.seed,
            normalize_columns=self.normalize_columns, name="reward", discrete_time=False,
        )
        self.model_ = model
        mask = val_mask if val_mask is not None and val_mask.any() else train
        scale = max(float(buffer.rewards.std()), 1e-8)

        def error(m: SparseModel) -> float:
            X = np.concatenate([buffer.obs[mask], buffer.actions[mask]], axis=1)
            return float(np.sqrt(np.mean((m.evaluate(X)[:, 0] - buffer.rewards[mask]) ** 2)) / scale)

        self.scores_ = {"reward_error": error(model)}
        sel = self.selection_
        if sel is not None:
            # as the dynamics: the ensemble's aggregate must not be worse than the single fit that was chosen
            ref, _ = fit_sparse_regression(
                buffer.obs[train], buffer.actions[train], buffer.rewards[train][:, None], self.library_,
                self.obs_names + self.action_names, ["r"], self.threshold_, self.alpha, 1, self.seed,
                normalize_columns=self.normalize_columns, name="reward", discrete_time=False,
            )
            ref_err = error(ref)
            if self.scores_["reward_error"] > max((1 + self.selection_tolerance) * ref_err,
                                                  ref_err + ABSOLUTE_TOLERANCE):
                model, self.scores_ = ref, {"reward_error": ref_err}
        self.choice_ = sel.flat("reward") if sel is not None else choice_keys("reward", self.library_,
                                                                                self.threshold_)
        self.model_ = model.with_metadata(
            library=asdict(self.library_), threshold=self.threshold_, **self.scores_,
            **({"selection": sel.to_dict()} if sel is not None else {}),
        )
        return self

    def _select(self, buffer: TransitionBuffer, train: np.ndarray) -> tuple[LibraryConfig, float, Selection | None]:
        """The library and threshold to fit: as given, or chosen (``auto``) by one-step error on the held-out
        episodes ``~train`` (candidates fitted on ``train``), as the dynamics are."""
        lib_auto, thr_auto = resolve(self.library, self.threshold)
        if not (lib_auto or thr_auto):
            return self.library, 1e-3 if self.threshold is None else float(self.threshold), None
        held, fit_on = ~train, train
        if not held.any():
            # no held-out episodes given: hold some of the training episodes out for the ranking alone
            fit_on, held = buffer.split_episodes(0.2, self.seed)
            if not held.any():
                fit_on = held = train
        X, U, r = buffer.obs[fit_on], buffer.actions[fit_on], buffer.rewards[fit_on][:, None]
        Xh = np.concatenate([buffer.obs[held], buffer.actions[held]], axis=1)
        rh = buffer.rewards[held]
        scale = max(float(buffer.rewards.std()), 1e-8)

        def one_step_error(m: SparseModel) -> float:
            with np.errstate(all="ignore"):
                return float(np.sqrt(np.mean((m.evaluate(Xh)[:, 0] - rh) ** 2)) / scale)

        if lib_auto:
            angles = angle_like_states(self.obs_names, buffer.obs, buffer.next_obs, self.unit_pairs)
            libraries = candidate_libraries(len(self.action_names), [self.obs_names[i] for i in angles],
                                            impulsive=impulsive_states(self.obs_names, buffer.obs))
        else:
            libraries = [self.library]
        thresholds = None if thr_auto else [1e-3 if self.threshold is None else float(self.threshold)]
        sel = select_library("reward", X, U, r, self.obs_names + self.action_names, ["r"], one_step_error,
                             "held-out one-step reward error", libraries, thresholds, self.alpha,
                             self.selection_tolerance, name="reward")
        return sel.choice.library, sel.choice.threshold, sel

    def __call__(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray | None = None) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise RuntimeError("SINDyReward is not fitted yet: call fit() first")
        return self.model_.evaluate(np.concatenate([np.atleast_2d(obs), np.atleast_2d(action)], axis=1))[:, 0]

    @classmethod
    def from_model(cls, model: SparseModel, n_obs: int) -> SINDyReward:
        r = cls(model.inputs[:n_obs], model.inputs[n_obs:])
        r.model_ = model
        return r

    def equations(self, precision: int = 3) -> list[str]:
        return self.model_.equations(precision)
