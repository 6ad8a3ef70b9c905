"""Real transitions: collect them from any gymnasium env, keep them append-only, save/load ``.npz``.

Bad data (NaN/inf, wrong shapes, empty) is rejected when it enters the buffer,
so nothing downstream (model fits, surrogate resets) ever sees it.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

from .atomic import atomic_write

__all__ = ["TransitionBuffer", "collect", "RandomPolicy"]

_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "episode")


@dataclass
class TransitionBuffer:
    """Append-only store of real transitions.

    Arrays: ``obs`` (N, n_obs), ``actions`` (N, n_act), ``rewards`` (N,),
    ``next_obs`` (N, n_obs), ``terminated``/``truncated`` (N,) bool,
    ``episode`` (N,) int (a global episode id, increasing).
    """

    n_obs: int
    n_act: int
    obs: np.ndarray = field(init=False)
    actions: np.ndarray = field(init=False)
    rewards: np.ndarray = field(init=False)
    next_obs: np.ndarray = field(init=False)
    terminated: np.ndarray = field(init=False)
    truncated: np.ndarray = field(init=False)
    episode: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.n_obs < 1 or self.n_act < 1:
            raise ValueError(f"TransitionBuffer needs n_obs >= 1 and n_act >= 1, got {self.n_obs}, {self.n_act}")
        self.obs = np.zeros((0, self.n_obs))
        self.actions = np.zeros((0, self.n_act))
        self.rewards = np.zeros(0)
        self.next_obs = np.zeros((0, self.n_obs))
        self.terminated = np.zeros(0, dtype=bool)
        self.truncated = np.zeros(0, dtype=bool)
        self.episode = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(len(np.unique(self.episode)))

    @property
    def next_episode_id(self) -> int:
        return int(self.episode.max()) + 1 if len(self) else 0

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, episode) -> None:
        """Append a batch of transitions after checking shapes and finiteness."""
        n = np.shape(obs)[0] if np.ndim(obs) == 2 else -1
        arrays = {
            "obs": (np.asarray(obs, dtype=np.float64), (n, self.n_obs)),
            "actions": (np.asarray(actions, dtype=np.float64), (n, self.n_act)),
            "rewards": (np.asarray(rewards, dtype=np.float64), (n,)),
            "next_obs": (np.asarray(next_obs, dtype=np.float64), (n, self.n_obs)),
            "terminated": (np.asarray(terminated, dtype=bool), (n,)),
            "truncated": (np.asarray(truncated, dtype=bool), (n,)),
            "episode": (np.asarray(episode, dtype=np.int64), (n,)),
        }
        if n <= 0:
            raise ValueError(f"transitions: obs must be a non-empty (N, {self.n_obs}) array, got shape {np.shape(obs)}")
        for name, (a, shape) in arrays.items():
            if a.shape != shape:
                raise ValueError(f"transitions: {name} has shape {a.shape}, expected {shape}")
            if a.dtype == np.float64 and not np.all(np.isfinite(a)):
                bad = np.argwhere(~np.isfinite(a))[0]
                raise ValueError(f"transitions: {name} contains NaN or inf (first at index {tuple(int(b) for b in bad)})")
        for name, (a, _) in arrays.items():
            setattr(self, name, np.concatenate([getattr(self, name), a]))

    def extend(self, other: TransitionBuffer) -> None:
        if (other.n_obs, other.n_act) != (self.n_obs, self.n_act):
            raise ValueError("cannot merge buffers of different observation/action sizes")
        if len(other):
            self.add(*(getattr(other, f) for f in _FIELDS))

    def episode_limit(self) -> int | None:
        """The longest episode the env itself cut (truncated, not terminated): its time limit as the data show
        it, for envs that do not declare one (a ``"module:Class"`` without a TimeLimit); None without one."""
        eps = [e for e in self.episodes() if self.truncated[e[-1]] and not self.terminated[e[-1]]]
        return max((len(e) for e in eps), default=None)

    def state_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The data box: per-observation (low, high) over ``obs`` and ``next_obs`` together."""
        if len(self) == 0:
            raise ValueError("state_bounds: the transition buffer is empty")
        lo = np.minimum(self.obs.min(0), self.next_obs.min(0))
        hi = np.maximum(self.obs.max(0), self.next_obs.max(0))
        return lo, hi

    def episodes(self) -> list[np.ndarray]:
        """Index arrays of each episode, in order of appearance."""
        ids, first = np.unique(self.episode, return_index=True)
        return [np.flatnonzero(self.episode == e) for e in ids[np.argsort(first)]]

    def trajectories(self, indices: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per-episode (obs, actions, next_obs) arrays, optionally of selected episodes."""
        eps = self.episodes()
        if indices is not None:
            eps = [eps[i] for i in indices]
        return [(self.obs[e], self.actions[e], self.next_obs[e]) for e in eps]

    def split_episodes(self, holdout: float, seed: int, min_units: int = 5,
                       min_segment: int = 40) -> tuple[np.ndarray, np.ndarray]:
        """Train/validation transition masks by whole episodes (at least one each when possible).

        With fewer than ``min_units`` episodes (the first fits of a low-data run: one random episode and a
        partial policy batch), whole-episode hold-out would drop half the data or more, often the only
        exciting (random) episode. Episodes are then cut into contiguous segments of at least
        ``min_segment`` transitions, and ``holdout`` of those segments (at least one) are held out, so the
        fit keeps part of every episode and the held-out rollouts are still contiguous real trajectories.
        """
        eps = self.episodes()
        if holdout > 0 and len(eps) < min_units and len(self) >= 2 * min_segment:
            units = []
            for e in eps:
                units.extend(np.array_split(e, max(1, len(e) // int(min_segment))))
            eps = units
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(eps))
        n_val = int(round(holdout * len(eps)))
        if holdout > 0 and len(eps) > 1:
            n_val = min(max(n_val, 1), len(eps) - 1)
        else:
            n_val = 0
        val = np.zeros(len(self), dtype=bool)
        for i in order[:n_val]:
            val[eps[i]] = True
        return ~val, val

    # ---------------------------------------------------------------- files
    def save(self, path: str | Path) -> None:
        """Atomic write (temp file + rename): a crash never leaves a half-written buffer."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **{f: getattr(self, f) for f in _FIELDS})
        atomic_write(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> TransitionBuffer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"transition file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [f for f in _FIELDS if f not in z.files]
                if missing:
                    raise KeyError(missing[0])
                arrays = {f: z[f] for f in _FIELDS}
        except KeyError as e:
            raise ValueError(f"{path}: missing array {e.args[0]!r} (not a sindyrl transition file)") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{path}: cannot read transitions ({e})") from None
        if arrays["obs"].ndim != 2 or arrays["actions"].ndim != 2:
            raise ValueError(f"{path}: obs and actions must be 2-D arrays")
        buf = cls(arrays["obs"].shape[1], arrays["actions"].shape[1])
        if arrays["obs"].shape[0]:
            try:
                buf.add(*(arrays[f] for f in _FIELDS))
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        return buf


class RandomPolicy:
    """Uniform random actions from the action space (seeded)."""

    def __init__(self, action_space: gym.spaces.Box, seed: int = 0):
        self.space = action_space
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        low, high = self.space.low, self.space.high
        low = np.where(np.isfinite(low), low, -1.0)
        high = np.where(np.isfinite(high), high, 1.0)
        return self.rng.uniform(low, high)


def collect(
    env: gym.Env,
    n_steps: int,
    policy: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
    buffer: TransitionBuffer | None = None,
    max_episode_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> TransitionBuffer:
    """Step ``env`` for ``n_steps`` with ``policy`` (uniform random if None), appending to ``buffer``.

    Episodes are reset with seeds ``seed, seed + 1, ...``; an episode is cut
    (marked truncated) after ``max_episode_steps`` when given. Non-finite
    observations or rewards from the env raise a ``ValueError`` naming the step.
    """
    if n_steps <= 0:
        raise ValueError(f"collect: n_steps must be > 0, got {n_steps}")
    n_obs = env.observation_space.shape[0]
    n_act = env.action_space.shape[0]
    buf = buffer if buffer is not None else TransitionBuffer(n_obs, n_act)
    policy = policy or RandomPolicy(env.action_space, seed)
    low, high = env.action_space.low, env.action_space.high
    ep = buf.next_episode_id
    rows: dict[str, list] = {f: [] for f in _FIELDS}
    obs, _ = env.reset(seed=seed)
    k_ep, t = 0, 0
    for step in range(n_steps):
        a = np.clip(np.asarray(policy(np.asarray(obs)), dtype=np.float64).reshape(n_act), low, high)
        nxt, r, term, trunc, _ = env.step(a.astype(env.action_space.dtype))
        t += 1
        if max_episode_steps is not None and t >= max_episode_steps:
            trunc = True
        if not (np.all(np.isfinite(nxt)) and np.isfinite(r)):
            raise ValueError(f"collect: env returned a non-finite observation or reward at step {step}")
        for f, v in zip(_FIELDS, (obs, a, r, nxt, term, trunc, ep)):
            rows[f].append(v)
        if progress is not None:
            progress(1)
        if term or trunc:
            k_ep += 1
            ep += 1
            t = 0
            obs, _ = env.reset(seed=seed + k_ep)
        else:
            obs = nxt
    buf.add(*(np.asarray(rows[f]) for f in _FIELDS))
    return buf
