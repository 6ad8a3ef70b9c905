"""Surrogate environments stepped by learned models instead of the real system.

:class:`SurrogateVecEnv` is an SB3 ``VecEnv`` that advances all its copies in
one batched evaluation of the dynamics model (SB3 auto-reset semantics);
:class:`SurrogateEnv` is a single-copy ``gymnasium.Env`` on the same code.

Episodes start from stored real states. An episode is *terminated* where the
task ends (a ``termination(obs, action, next_obs)`` function, known or learned:
see :mod:`sindyrl.termination`), and *truncated* when the predicted state
leaves the data's bounds by more than a margin, when ensemble members disagree
beyond a threshold, or at the horizon: leaving the model's domain says nothing
about the true task, and treating it as terminal would reward a policy for
escaping when rewards are negative. SB3 bootstraps truncated episodes and not
terminated ones (``TimeLimit.truncated`` in ``info``), as gymnasium's
``terminated``/``truncated`` say. No NaN ever leaves ``step``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from .reward import RewardFn
from .sparse import SparseModel

__all__ = ["SurrogateVecEnv", "SurrogateEnv", "DynamicsPredictor", "SparseDynamics"]


class DynamicsPredictor(Protocol):
    """Anything that predicts next states in batches (E-SINDy, a neural-network ensemble...)."""

    n_models: int

    def predict(self, obs: np.ndarray, actions: np.ndarray, mode: str = "median") -> np.ndarray:
        """(N, n_obs), (N, n_act) -> (N, n_obs) with the aggregate (``median``/``mean``) model."""

    def predict_members(self, obs: np.ndarray, actions: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Row i predicted by ensemble member ``members[i]``."""

    def predict_ensemble(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """All members: (n_models, N, n_obs)."""


class SparseDynamics:
    """:class:`DynamicsPredictor` over a dynamics :class:`SparseModel` (inputs: states then actions)."""

    def __init__(self, model: SparseModel):
        self.model = model
        self.n_models = max(model.n_models, 1)
        self._mean = model.coef if model.ensemble is None else model.ensemble.mean(axis=0)

    def predict(self, obs, actions, mode: str = "median"):
        X = np.concatenate([obs, actions], axis=1)
        return self.model.evaluate(X, coef=self._mean if mode == "mean" else None)

    def predict_members(self, obs, actions, members):
        if self.model.ensemble is None:
            return self.predict(obs, actions)
        X = np.concatenate([obs, actions], axis=1)
        out = np.empty((X.shape[0], self.model.n_outputs))
        for m in np.unique(members):
            rows = members == m
            out[rows] = self.model.evaluate(X[rows], coef=self.model.ensemble[m])
        return out

    def predict_ensemble(self, obs, actions):
        if self.model.ensemble is None:
            return self.predict(obs, actions)[None]
        return self.model.evaluate_ensemble(np.concatenate([obs, actions], axis=1))


class _AggregateOnly:
    """:class:`DynamicsPredictor` over a model that predicts with its aggregate only: one member."""

    n_models = 1

    def __init__(self, dynamics):
        self.dynamics = dynamics

    def predict(self, obs, actions, mode: str = "median"):
        return self.dynamics.predict(obs, actions)

    def predict_members(self, obs, actions, members):
        return self.dynamics.predict(obs, actions)

    def predict_ensemble(self, obs, actions):
        return self.dynamics.predict(obs, actions)[None]


def _as_predictor(dynamics) -> DynamicsPredictor:
    if isinstance(dynamics, SparseModel):
        return SparseDynamics(dynamics)
    # a DynamicsModel with a sparse form is stepped through it (its members, batched numpy)
    sparse = getattr(dynamics, "sparse_model", None)
    if isinstance(sparse, SparseModel):
        return SparseDynamics(sparse)
    if all(callable(getattr(dynamics, m, None)) for m in ("predict_members", "predict_ensemble")) \
            and hasattr(dynamics, "n_models"):
        return dynamics
    if callable(getattr(dynamics, "predict", None)):
        return _AggregateOnly(dynamics)
    raise TypeError(f"dynamics must be a SparseModel, a DynamicsModel or have a batched predict(obs, actions); "
                    f"got {type(dynamics)}")


class SurrogateVecEnv(VecEnv):
    """Batched model-based environment for stable-baselines3.

    Parameters
    ----------
    dynamics : SparseModel, DynamicsModel or DynamicsPredictor
        x[k+1] = f(x[k], u[k]) on batches: a dynamics SparseModel, any fitted
        :class:`sindyrl.dynamics.DynamicsModel` (stepped through its
        ``sparse_model`` when it has one), or an object with
        ``predict``/``predict_members``/``predict_ensemble`` and ``n_models``.
        A model with only ``predict(obs, actions)`` is one member.
    reward : callable
        ``reward(obs, action, next_obs) -> (N,)``.
    reset_states : array (M, n_obs)
        Real states episodes start from (sampled uniformly).
    observation_space, action_space : gymnasium Box
        Spaces of the real env (actions are clipped to the action bounds).
    horizon : int
        Steps before truncation.
    n_envs : int, default 8
    ensemble_mode : {"median", "mean", "sample"}
        ``sample`` draws one ensemble member per episode.
    state_bounds : (low, high), optional
        Region where the model is trusted (default: the observation space
        where it is finite, else the reset states' range).
    bounds_margin : float, default 0.2
        Relative margin around ``state_bounds`` before an episode is cut.
    disagreement_threshold : float, optional
        Cut an episode when the ensemble's largest per-state standard
        deviation (relative to the bounds' width) passes this.
    seed : int
    termination : callable, optional
        ``termination(obs, action, next_obs) -> (N,) bool``: where the task
        ends (the episode is terminated, not truncated).
    """

    def __init__(
        self,
        dynamics,
        reward: RewardFn,
        reset_states: np.ndarray,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        horizon: int,
        n_envs: int = 8,
        ensemble_mode: str = "median",
        state_bounds: tuple[np.ndarray, np.ndarray] | None = None,
        bounds_margin: float = 0.2,
        disagreement_threshold: float | None = None,
        seed: int = 0,
        termination=None,
    ):
        if ensemble_mode not in ("median", "mean", "sample"):
            raise ValueError(f"ensemble_mode must be median, mean or sample, got {ensemble_mode!r}")
        reset_states = np.asarray(reset_states, dtype=np.float64)
        if reset_states.ndim != 2 or reset_states.shape[1] != observation_space.shape[0] or len(reset_states) == 0:
            raise ValueError(
                f"reset_states must be a non-empty (M, {observation_space.shape[0]}) array, got {reset_states.shape}"
            )
        if not np.all(np.isfinite(reset_states)):
            raise ValueError("reset_states contain NaN or inf")
        if horizon < 1 or n_envs < 1:
            raise ValueError(f"horizon and n_envs must be >= 1, got {horizon}, {n_envs}")
        self.dynamics = _as_predictor(dynamics)
        self.reward_fn = reward
        self.termination_fn = termination
        self.reset_states = reset_states
        self.horizon = int(horizon)
        self.ensemble_mode = ensemble_mode
        self.disagreement_threshold = disagreement_threshold
        if state_bounds is None:
            # the observation space where it is finite, else the range of the reset states
            olo = np.asarray(observation_space.low, dtype=np.float64)
            ohi = np.asarray(observation_space.high, dtype=np.float64)
            state_bounds = (np.where(np.isfinite(olo), olo, reset_states.min(0)),
                            np.where(np.isfinite(ohi), ohi, reset_states.max(0)))
        lo, hi = np.asarray(state_bounds[0], dtype=np.float64), np.asarray(state_bounds[1], dtype=np.float64)
        width = np.maximum(hi - lo, 1e-6)
        self.state_low = lo - bounds_margin * width
        self.state_high = hi + bounds_margin * width
        self._width = width
        self.render_mode = None
        super().__init__(n_envs, observation_space, action_space)
        self._act_low = np.asarray(action_space.low, dtype=np.float64)
        self._act_high = np.asarray(action_space.high, dtype=np.float64)
        self._rng = np.random.default_rng(seed)
        self._obs = np.zeros((n_envs, observation_space.shape[0]))
        self._t = np.zeros(n_envs, dtype=np.int64)
        self._member = np.zeros(n_envs, dtype=np.int64)
        self._ep_return = np.zeros(n_envs)
        self._actions = None
        self.total_steps = 0

    # ------------------------------------------------------------- VecEnv
    def _reset_rows(self, rows: np.ndarray) -> None:
        for i in np.flatnonzero(rows):
            if self._seeds[i] is not None:
                rng = np.random.default_rng(self._seeds[i])
                self._seeds[i] = None
            else:
                rng = self._rng
            self._obs[i] = self.reset_states[rng.integers(len(self.reset_states))]
            self._member[i] = rng.integers(self.dynamics.n_models)
        self._t[rows] = 0
        self._ep_return[rows] = 0.0

    def reset(self) -> np.ndarray:
        self._reset_rows(np.ones(self.num_envs, dtype=bool))
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._obs.astype(self.observation_space.dtype)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def _transition(self, obs: np.ndarray, a: np.ndarray, members: np.ndarray):
        """One batched model step: (next states, rewards, terminated, left the domain, non-finite, disagreement).

        Termination is decided on the predicted state before it is clipped to the domain, and takes
        precedence: a task that ended has ended, wherever the model went."""
        n = len(obs)
        cut = np.zeros(n, dtype=bool)
        with np.errstate(all="ignore"):
            if self.ensemble_mode == "sample":
                nxt = self.dynamics.predict_members(obs, a, members)
            else:
                nxt = self.dynamics.predict(obs, a, self.ensemble_mode)
            if self.disagreement_threshold is not None and self.dynamics.n_models > 1:
                spread = self.dynamics.predict_ensemble(obs, a).std(axis=0) / self._width
                cut |= ~(np.nanmax(spread, axis=1) <= self.disagreement_threshold)
        bad = ~np.all(np.isfinite(nxt), axis=1)
        nxt[bad] = obs[bad]
        term = np.zeros(n, dtype=bool)
        if self.termination_fn is not None:
            term = np.asarray(self.termination_fn(obs, a, nxt), dtype=bool).reshape(n) & ~bad
        out = np.any((nxt < self.state_low) | (nxt > self.state_high), axis=1) & ~term
        # a state that left the domain ends the episode at the domain's edge: finite, and a bounded reward
        nxt[out] = np.clip(nxt[out], self.state_low, self.state_high)
        with np.errstate(all="ignore"):
            r = np.asarray(self.reward_fn(obs, a, nxt), dtype=np.float64).reshape(n)
        r = np.where(np.isfinite(r), r, 0.0)
        return nxt, r, term, out, bad, cut & ~term

    def rollout_returns(self, act, starts: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Return and length of one surrogate episode from each start, all in one batch.

        ``act`` maps a batch of observations (N, n_obs) to actions (N, n_act). Episodes end as in
        :meth:`step` (horizon, leaving the model's domain, disagreement); nothing is auto-reset, and the
        env's own episodes are not touched. In ``sample`` mode each start draws one member (from ``seed``).
        This is how an agent is assessed from hundreds of stored real states in milliseconds, without
        spending a real step.
        """
        obs = np.array(starts, dtype=np.float64, ndmin=2)
        if obs.shape[1] != self.observation_space.shape[0]:
            raise ValueError(f"starts must be (N, {self.observation_space.shape[0]}), got {obs.shape}")
        n = len(obs)
        members = np.random.default_rng(seed).integers(self.dynamics.n_models, size=n)
        returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        dtype = self.observation_space.dtype
        for _ in range(self.horizon):
            idx = np.flatnonzero(alive)
            if idx.size == 0:
                break
            a = np.asarray(act(obs[idx].astype(dtype)), dtype=np.float64).reshape(idx.size, -1)
            a = np.clip(a, self._act_low, self._act_high)
            nxt, r, term, out, bad, cut = self._transition(obs[idx], a, members[idx])
            obs[idx] = nxt
            returns[idx] += r
            lengths[idx] += 1
            alive[idx[term | out | bad | cut]] = False
        return returns, lengths

    def step_wait(self) -> VecEnvStepReturn:
        a = np.asarray(self._actions, dtype=np.float64).reshape(self.num_envs, -1)
        a = np.clip(a, self._act_low, self._act_high)
        obs = self._obs
        nxt, r, term, out, bad, cut = self._transition(obs, a, self._member)
        self._t += 1
        self._ep_return += r
        timeout = self._t >= self.horizon
        done = term | timeout | out | bad | cut
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        self._obs = nxt
        obs_out = nxt.copy()
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = nxt[i].astype(self.observation_space.dtype)
            # SB3 bootstraps from the terminal observation only where the episode was truncated
            infos[i]["TimeLimit.truncated"] = not term[i]
            infos[i]["episode"] = {"r": float(self._ep_return[i]), "l": int(self._t[i])}
            infos[i]["surrogate_cut"] = ("terminated" if term[i] else "bounds" if out[i] else "nonfinite" if bad[i]
                                         else "disagreement" if cut[i] else "horizon")
        if done.any():
            self._reset_rows(done)
            obs_out[done] = self._obs[done]
        self.total_steps += self.num_envs
        return obs_out.astype(self.observation_space.dtype), r.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def _idx(self, indices: VecEnvIndices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._idx(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs) for _ in self._idx(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._idx(indices)]

    def seed(self, seed: int | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        return super().seed(seed)


class SurrogateEnv(gym.Env):
    """Single-copy gymnasium view of the surrogate (``check_env`` compatible).

    Takes the same arguments as :class:`SurrogateVecEnv` except ``n_envs``.
    ``terminated`` is set where the termination function says the task ended;
    leaving the model's domain or the horizon sets ``truncated``.
    """

    metadata = {"render_modes": []}

    def __init__(self, dynamics, reward, reset_states, observation_space, action_space, horizon, **kwargs):
        super().__init__()
        self._vec = SurrogateVecEnv(dynamics, reward, reset_states, observation_space, action_space, horizon,
                                    n_envs=1, **kwargs)
        self.observation_space = observation_space
        self.action_space = action_space

    @classmethod
    def from_vec(cls, vec: SurrogateVecEnv) -> SurrogateEnv:
        """The single-copy view of a one-copy :class:`SurrogateVecEnv` (``build_surrogate(..., n_envs=1)``)."""
        if vec.num_envs != 1:
            raise ValueError(f"SurrogateEnv.from_vec: expected a SurrogateVecEnv with n_envs=1, got {vec.num_envs}")
        env = cls.__new__(cls)
        gym.Env.__init__(env)
        env._vec = vec
        env.observation_space = vec.observation_space
        env.action_space = vec.action_space
        return env

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._vec._rng = np.random.default_rng(seed)
        obs = self._vec.reset()[0]
        return obs, {}

    def step(self, action):
        v = self._vec
        obs, r, done, infos = v.step(np.asarray(action).reshape(1, -1))
        info = dict(infos[0])
        if done[0]:
            final = info.pop("terminal_observation")
            # keep the finished state visible until the caller resets
            v._obs[0] = final
            obs = final[None]
        terminated = info.get("surrogate_cut") == "terminated"
        truncated = bool(done[0]) and not terminated
        return obs[0], float(r[0]), terminated, truncated, info
