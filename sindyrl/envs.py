"""Environment factory: gymnasium ids, dm_control ids (through shimmy) and ``"module:Class"``.

Every env handed to the rest of sindyrl has a flat ``Box`` observation and a
``Box`` action space; dict observations (dm_control) are flattened in the
order gymnasium's ``FlattenObservation`` uses (sorted keys).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from .config import EnvConfig

__all__ = ["make_env", "EnvSpec", "env_spec", "import_object", "known_function", "KNOWN_NAMES"]

#: Default observation/action names and (cos, sin) pairs of well-known envs.
KNOWN_NAMES: dict[str, dict] = {
    "Pendulum-v1": {
        "obs": ["cos_th", "sin_th", "th_dot"], "act": ["u"], "unit_pairs": [["cos_th", "sin_th"]],
    },
    "dm_control/cartpole-swingup-v0": {
        "obs": ["x", "cos_th", "sin_th", "x_dot", "th_dot"], "act": ["u"], "unit_pairs": [["cos_th", "sin_th"]],
    },
    "dm_control/cartpole-balance-v0": {
        "obs": ["x", "cos_th", "sin_th", "x_dot", "th_dot"], "act": ["u"], "unit_pairs": [["cos_th", "sin_th"]],
    },
    "InvertedPendulum-v5": {"obs": ["x", "th", "x_dot", "th_dot"], "act": ["u"], "unit_pairs": []},
    "InvertedDoublePendulum-v5": {
        "obs": ["x", "sin_th1", "sin_th2", "cos_th1", "cos_th2", "x_dot", "th1_dot", "th2_dot", "f_constraint"],
        "act": ["u"], "unit_pairs": [["cos_th1", "sin_th1"], ["cos_th2", "sin_th2"]],
    },
    "Swimmer-v5": {
        "obs": ["th0", "th1", "th2", "vx", "vy", "w0", "w1", "w2"], "act": ["u0", "u1"], "unit_pairs": [],
    },
}


def known_function(spec: str, builtins: dict, what: str):
    """A built-in function by name (``builtins[spec]``) or an imported ``"module:function"``; clear errors."""
    if spec in builtins:
        return builtins[spec]
    if ":" in spec:
        fn = import_object(spec, what)
        if not callable(fn):
            raise ValueError(f"{what} {spec!r} is not callable")
        return fn
    raise ValueError(f"{what} {spec!r}: not a built-in one ({', '.join(sorted(builtins))}) and not 'module:function'")


def import_object(spec: str, what: str = "object"):
    """Import ``"package.module:attr"``; a clear error when either part is missing."""
    if ":" not in spec:
        raise ValueError(f"{what} {spec!r}: expected 'module:name'")
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"{what} {spec!r}: cannot import module {mod_name!r} ({e})") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _ensure_dm_control() -> None:
    try:
        import shimmy  # noqa: F401  (registers dm_control/* ids)
    except ImportError:
        raise ValueError(
            "dm_control environments need the 'dmc' extra: pip install 'sindyrl[dmc]' "
            "(dm_control==1.0.50 with mujoco==3.17.0)"
        ) from None


def make_env(cfg: EnvConfig, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """Build the real environment described by ``cfg`` (flat Box observations)."""
    kwargs = dict(cfg.kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if ":" in cfg.id and not cfg.id.startswith("dm_control/"):
        cls = import_object(cfg.id, "env.id")
        if not (isinstance(cls, type) and issubclass(cls, gym.Env)) and not callable(cls):
            raise ValueError(f"env.id {cfg.id!r} is not a gymnasium.Env class or factory")
        env = cls(**kwargs)
        if not isinstance(env, gym.Env):
            raise ValueError(f"env.id {cfg.id!r} did not produce a gymnasium.Env (got {type(env).__name__})")
        if cfg.max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, cfg.max_episode_steps)
    else:
        if cfg.id.startswith("dm_control/"):
            _ensure_dm_control()
        try:
            env = gym.make(cfg.id, max_episode_steps=cfg.max_episode_steps, **kwargs)
        except gym.error.Error as e:
            raise ValueError(f"env.id {cfg.id!r}: {e}") from None
        except ImportError as e:
            extra = "mujoco" if "mujoco" in str(e).lower() else "dmc"
            raise ValueError(f"env.id {cfg.id!r} needs an optional dependency: pip install 'sindyrl[{extra}]' ({e})") from None
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = gym.wrappers.FlattenObservation(env)
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise ValueError(
            f"env.id {cfg.id!r}: sindyrl needs a flat Box observation space, got {env.observation_space}"
        )
    if not isinstance(env.action_space, gym.spaces.Box) or len(env.action_space.shape) != 1:
        raise ValueError(f"env.id {cfg.id!r}: sindyrl needs a 1-D Box action space, got {env.action_space}")
    if seed is not None:
        env.action_space.seed(seed)
    return env


@dataclass
class EnvSpec:
    """What the rest of sindyrl needs to know about an env, without holding it."""

    obs_names: list[str]
    action_names: list[str]
    unit_pairs: list[tuple[int, int]]
    obs_low: np.ndarray
    obs_high: np.ndarray
    act_low: np.ndarray
    act_high: np.ndarray
    horizon: int | None


def env_spec(cfg: EnvConfig, env: gym.Env | None = None) -> EnvSpec:
    """Names (config, else known defaults, else x0../u0..), unit pairs and bounds."""
    own = env is None
    if own:
        env = make_env(cfg)
    try:
        n_obs = env.observation_space.shape[0]
        n_act = env.action_space.shape[0]
        known = KNOWN_NAMES.get(cfg.id, {})
        obs = cfg.obs_names or (known.get("obs") if len(known.get("obs", [])) == n_obs else None)
        obs = list(obs) if obs else [f"x{i}" for i in range(n_obs)]
        act = cfg.action_names or (known.get("act") if len(known.get("act", [])) == n_act else None)
        act = list(act) if act else [f"u{i}" for i in range(n_act)]
        if len(obs) != n_obs:
            raise ValueError(f"env.obs_names has {len(obs)} names but the observation has {n_obs} dimensions")
        if len(act) != n_act:
            raise ValueError(f"env.action_names has {len(act)} names but the action has {n_act} dimensions")
        if len(set(obs + act)) != n_obs + n_act:
            raise ValueError(f"env.obs_names and env.action_names must be distinct names, got {obs + act}")
        pairs_by_name = cfg.unit_pairs if cfg.unit_pairs else (known.get("unit_pairs", []) if obs == known.get("obs") else [])
        pairs = []
        for i, (c, s) in enumerate(pairs_by_name):
            if c not in obs or s not in obs:
                raise ValueError(f"env.unit_pairs[{i}]: {c!r} and {s!r} must be observation names ({obs})")
            pairs.append((obs.index(c), obs.index(s)))
        horizon = cfg.max_episode_steps
        if horizon is None and env.spec is not None:
            horizon = env.spec.max_episode_steps
        if horizon is None:
            horizon = getattr(env, "_max_episode_steps", None)
        return EnvSpec(
            obs_names=obs, action_names=act, unit_pairs=pairs,
            obs_low=np.asarray(env.observation_space.low, dtype=np.float64),
            obs_high=np.asarray(env.observation_space.high, dtype=np.float64),
            act_low=np.asarray(env.action_space.low, dtype=np.float64),
            act_high=np.asarray(env.action_space.high, dtype=np.float64),
            horizon=horizon,
        )
    finally:
        if own:
            env.close()
