"""YAML run configuration -> typed, validated dataclasses.

Every error names the key path (``agent.algo``) and what was expected, so a
config written by someone else fails with one readable line, not a stack trace.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .stage_options import LEGACY_STAGE_KEYS, StagesConfig

__all__ = [
    "Config", "EnvConfig", "CollectConfig", "LibraryConfig", "DynamicsConfig", "RewardConfig",
    "AgentConfig", "SurrogateConfig", "DynaConfig", "DistillConfig", "StagesConfig", "ConfigError",
    "load_config", "config_from_dict", "config_to_dict", "apply_overrides",
]


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type."""


@dataclass
class EnvConfig:
    """The real environment.

    ``id`` is a gymnasium id (``Pendulum-v1``), a dm_control id through shimmy
    (``dm_control/cartpole-swingup-v0``; dict observations are flattened), or
    ``"module:Class"`` for any gymnasium.Env subclass.
    """

    id: str
    kwargs: dict = field(default_factory=dict)
    obs_names: list[str] | None = None
    action_names: list[str] | None = None
    #: pairs of observation names that are (cos, sin) of one angle
    unit_pairs: list[list[str]] = field(default_factory=list)
    max_episode_steps: int | None = None
    #: where episodes end in the surrogate: None (automatic: the env id's built-in termination, else one
    #: learned from the real data's ``terminated`` flags when there are any), ``none``, ``learned``, a
    #: built-in name or ``"module:function"`` (batched ``(obs, action, next_obs) -> bool``)
    termination: str | None = None


@dataclass
class CollectConfig:
    """Real-environment data collection."""

    #: random-action steps before the first model fit
    random_steps: int = 2000
    #: cap on the length of a random-collection episode (None: the env's own horizon)
    random_episode_steps: int | None = None
    #: real steps collected with the current policy after each Dyna iteration
    steps_per_iteration: int = 500
    #: adaptive batches (None: off, every batch is ``steps_per_iteration``): while the model is poor (its
    #: held-out rollout error above ``model_error_tolerance``, or not measurable yet) each batch is this many
    #: real steps, so the model is refitted and the policy retrained after few real steps; once the model is
    #: good the batch doubles every iteration up to ``steps_per_iteration``
    min_steps_per_iteration: int | None = None
    #: the held-out rollout error (RMS over ``dynamics.rollout_steps`` steps, in units of each state's std)
    #: at or below which the model counts as good for the adaptive batches
    model_error_tolerance: float = 0.1
    #: budget of real training steps (random + policy collection; evaluation episodes are not counted):
    #: the last batch is cut to fit it and the iteration after it is the last one (``dyna.iterations`` stays
    #: an upper bound). None: no budget, ``dyna.iterations`` alone ends the loop
    max_real_steps: int | None = None
    #: sample the policy's actions (True) or act deterministically (False)
    stochastic: bool = True


@dataclass
class LibraryConfig:
    """Candidate terms: polynomials over states (and controls), optional Fourier terms."""

    degree: int = 2
    #: ``full``: polynomial of the given degree over (x, u) jointly;
    #: ``affine``: poly(x) + poly(x, degree=control_degree) * u (control-affine)
    control: Literal["full", "affine"] = "full"
    control_degree: int = 1
    include_bias: bool = True
    include_interaction: bool = True
    #: number of Fourier frequencies over the states (0: none)
    fourier: int = 0
    #: names of the states the Fourier terms are over (None: every state)
    fourier_states: list[str] | None = None
    #: names of states that enter only as linear terms, never in products or powers: contact and constraint
    #: forces, which are zero on most steps and jump on the others (``library: auto`` tries the impulsive
    #: states of the data, :func:`sindyrl.selection.impulsive_states`, both ways). None: none
    linear_states: list[str] | None = None


@dataclass
class DynamicsConfig:
    """E-SINDy dynamics model x[k+1] = Theta(x[k], u[k]) Xi (or a neural-network ensemble baseline)."""

    #: ``sindy`` (E-SINDy) or ``nn`` (an ensemble of small MLPs, the "Dyna-NN" baseline)
    model: Literal["sindy", "nn"] = "sindy"
    #: options of the ``nn`` model (see sindyrl.nn_dynamics)
    nn: dict = field(default_factory=dict)
    #: candidate terms, or ``auto``: chosen among polynomial degree 1-3, full or affine control and Fourier
    #: terms of angle-like states by held-out rollout error, the simplest within ``selection_tolerance``
    #: of the best (sindyrl.selection)
    library: LibraryConfig | Literal["auto"] = "auto"
    #: STLSQ threshold, or ``auto`` (chosen with the library on a grid relative to the targets' scale);
    #: None: ``auto`` when the library is ``auto``, else 1e-3
    threshold: float | Literal["auto"] | None = None
    alpha: float = 1e-5
    normalize_columns: bool = False
    n_models: int = 20
    bagging: bool = True
    library_ensemble: bool = True
    n_candidates_to_drop: int = 1
    aggregate: Literal["median", "mean"] = "median"
    #: fit the increment x[k+1] - x[k] (True) or x[k+1] itself
    residual: bool = True
    #: fraction of episodes held out for validation and rollout error
    holdout: float = 0.2
    #: rollout length used for validation of ensemble members
    rollout_steps: int = 20
    #: a member whose rollout error exceeds this multiple of the geometric mean of the best and the median
    #: member's error is dropped
    member_error_factor: float = 5.0
    #: model selection (``auto``): a candidate within this fraction of the best held-out error counts as
    #: good as the best, and the simplest of those is chosen
    selection_tolerance: float = 0.15


@dataclass
class RewardConfig:
    """Known reward (``known``: a built-in name or ``"module:function"``), or a sparse model (``learned``).

    Left out, ``known`` becomes the env id when sindyrl has a built-in reward for it, else ``learned``; the
    resolved value is what ``config.yaml`` of a run records.
    """

    known: str | None = None
    #: as ``dynamics.library`` (``auto``: chosen by held-out one-step reward error)
    library: LibraryConfig | Literal["auto"] = "auto"
    #: as ``dynamics.threshold``
    threshold: float | Literal["auto"] | None = None
    alpha: float = 1e-5
    normalize_columns: bool = False
    n_models: int = 20
    #: as ``dynamics.selection_tolerance``
    selection_tolerance: float = 0.15

    @property
    def known_spec(self) -> str | None:
        """The known reward to use, or None when the reward is learned."""
        return None if self.known in (None, "learned") else self.known


@dataclass
class AgentConfig:
    """The stable-baselines3 agent trained in the surrogate."""

    algo: Literal["ppo", "sac", "td3", "ddpg", "beer"] = "ppo"
    policy: str = "MlpPolicy"
    #: constructor arguments passed to the SB3 class (e.g. learning_rate, n_steps)
    kwargs: dict = field(default_factory=dict)
    #: number of parallel surrogate copies
    n_envs: int = 8
    #: surrogate steps in the first Dyna iteration
    initial_steps: int = 100_000
    #: surrogate steps in each later Dyna iteration
    steps_per_iteration: int = 50_000
    #: TensorBoard events under <run>/tb (the Dyna loop's scalars and the SB3 agent's)
    tensorboard: bool = True


@dataclass
class SurrogateConfig:
    """How the learned models are stepped."""

    ensemble_mode: Literal["median", "mean", "sample"] = "median"
    #: relative margin around the data's bounds before an episode is cut
    bounds_margin: float = 0.2
    #: cut an episode when ensemble spread (max std over states) passes this; None: off
    disagreement_threshold: float | None = None
    #: episode length in the surrogate (None: the real env's horizon)
    horizon: int | None = None


@dataclass
class DynaConfig:
    """The outer loop."""

    iterations: int = 8
    #: real evaluation episodes after every iteration (opt-in: they cost real steps; the learning curve
    #: is otherwise the return of the collected episodes plus the surrogate estimate)
    eval_episodes: int = 0
    #: deterministic real episodes that confirm the result at the end (None: as many as a fifth of the
    #: collected real steps pay for, 1 to 20; the later stages confirm on as many, so evaluation never costs
    #: more than learning)
    final_eval_episodes: int | None = None
    #: stored real states the agent is assessed from in the surrogate after each iteration
    assess_starts: int = 256
    #: while some of those starts fail and others succeed, train up to this many extra rounds of
    #: ``agent.steps_per_iteration`` surrogate steps, keeping the checkpoint that does best there
    max_extra_rounds: int = 2
    #: stop early once the evaluation mean return reaches this (None: never)
    target_return: float | None = None
    #: after a refit, assess the agent of the last iteration in the new surrogate before training it further,
    #: and go back to it when the further training scores worse there (PPO can collapse after a refit:
    #: Pendulum, 500 real steps, surrogate return -180 -> -709 with an accurate model)
    keep_better: bool = True
    #: when a refit drops the last agent's surrogate score by more than this fraction of its size (the agent
    #: was exploiting errors of the old model: the new one is right where it goes), a fresh agent is also
    #: trained for ``agent.initial_steps`` on the new model and the better of the two by surrogate score is
    #: kept (a PPO policy stuck spinning the pendulum does not unlearn it in 50k steps). None: never
    restart_on_drop: float | None = 0.5


@dataclass
class DistillConfig:
    """Distillation of the neural policy into a sparse polynomial."""

    degree: int = 3
    fourier: int = 0
    n_models: int = 20
    passes: int = 4
    n_rollouts: int = 50
    noise_std: float = 0.1
    max_terms: int | None = None
    #: size budget when max_terms is not given: this fraction of the network actor's parameters
    max_terms_fraction: float = 0.01
    thresholds: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 3e-2])
    alphas: list[float] = field(default_factory=lambda: [1e-6, 1e-4, 1e-2])
    #: labelled states the regression of a pass fits (a uniform, seeded subsample when there are more): on
    #: 1,000-step tasks every pass would otherwise fit hundreds of thousands of states, for minutes
    max_states: int = 50_000
    #: real episodes of the sparse policy (None: as many as the neural policy's final evaluation, on the
    #: same starts, whose returns are reused; passes are chosen in the surrogate)
    eval_episodes: int | None = None
    #: after imitation, "apg" climbs each pass's surrogate return by analytic policy gradients through the
    #: sparse models (sindyrl.policy_gradient), kept only where it beats the imitation policy's return
    #: "ppo" fine-tunes the best imitation policy as a sparse actor (linear in its library's features) by PPO in
    #: the surrogate (sindyrl.sparse_actor), with thresholding rounds; kept only where it beats the passes
    refine: Literal["none", "apg", "ppo"] = "none"
    refine_steps: int = 150
    refine_horizon: int = 50
    refine_rounds: int = 3
    refine_batch: int = 256
    refine_lr: float = 0.002
    refine_threshold: float = 0.01
    #: bootstrap at the horizon: the neural agent's critic, or none (the plain horizon-step return; on Pendulum
    #: the critic, PPO's gamma-0.95 value, steered away from the undiscounted return and did not help)
    refine_value: Literal["critic", "none"] = "none"
    #: refine: ppo -- surrogate steps in all (None: half the agent's own surrogate training steps)
    refine_timesteps: int | None = None
    refine_ppo_lr: float = 1e-3
    #: confirm the best ``confirm_top`` candidates (passes and refinement rounds, by surrogate score) on
    #: ``confirm_episodes`` real episodes each, and keep the best real one (0: choose by the surrogate alone)
    confirm_top: int = 0
    confirm_episodes: int = 2


@dataclass
class Config:
    env: EnvConfig
    seed: int = 0
    name: str | None = None
    collect: CollectConfig = field(default_factory=CollectConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    dyna: DynaConfig = field(default_factory=DynaConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    #: stages of ``sindyrl run`` to skip (e.g. [hil, control])
    skip: list[str] = field(default_factory=list)
    #: options of the later stages, by stage name (see sindyrl.stage_options)
    stages: StagesConfig = field(default_factory=StagesConfig)
    source: str = ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError as e:
                errors.append((a, str(e)))
        # the member of the union the value's shape meant explains the failure best: a list the list member,
        # a mapping the dataclass (``library: {...}``), a string the literal (``auto``)
        def meant(a) -> bool:
            if isinstance(value, list):
                return typing.get_origin(a) is list
            if isinstance(value, dict):
                return dataclasses.is_dataclass(a) or a is dict
            if isinstance(value, str):
                return typing.get_origin(a) is Literal
            return False

        same_shape = [msg for a, msg in errors if meant(a)]
        if len(errors) == 1 or len(same_shape) == 1:
            raise ConfigError((same_shape or [errors[0][1]])[0])
        raise ConfigError(f"{path}: {value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} ({value!r})")
        (item,) = args or (Any,)
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads "1e-3" (no dot) as a string
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (known keys{' in ' + path if path else ''}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key}")
    return cls(**kwargs)


def _validate(cfg: Config) -> None:
    def positive(v, key, allow_zero=False):
        if v is not None and (v < 0 or (v == 0 and not allow_zero)):
            raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {v}")

    positive(cfg.collect.random_steps, "collect.random_steps")
    positive(cfg.collect.steps_per_iteration, "collect.steps_per_iteration", allow_zero=True)
    positive(cfg.collect.random_episode_steps, "collect.random_episode_steps")
    positive(cfg.collect.min_steps_per_iteration, "collect.min_steps_per_iteration")
    positive(cfg.collect.model_error_tolerance, "collect.model_error_tolerance", allow_zero=True)
    positive(cfg.collect.max_real_steps, "collect.max_real_steps")
    if cfg.collect.max_real_steps is not None and cfg.collect.max_real_steps < cfg.collect.random_steps:
        raise ConfigError(f"collect.max_real_steps: {cfg.collect.max_real_steps} is below collect.random_steps "
                          f"({cfg.collect.random_steps}): the random warm-up alone would exceed the budget")
    for sec in ("dynamics", "reward"):
        lib = getattr(cfg, sec).library
        if isinstance(lib, LibraryConfig):
            positive(lib.degree, f"{sec}.library.degree")
            positive(lib.control_degree, f"{sec}.library.control_degree", allow_zero=True)
            positive(lib.fourier, f"{sec}.library.fourier", allow_zero=True)
            if lib.fourier_states is not None and lib.fourier == 0:
                raise ConfigError(f"{sec}.library.fourier_states: needs {sec}.library.fourier > 0")
            if lib.linear_states is not None and not isinstance(lib.linear_states, list):
                raise ConfigError(f"{sec}.library.linear_states: expected a list of state names, "
                                  f"got {lib.linear_states!r}")
        if isinstance(getattr(cfg, sec).threshold, float):
            positive(getattr(cfg, sec).threshold, f"{sec}.threshold", allow_zero=True)
        positive(getattr(cfg, sec).selection_tolerance, f"{sec}.selection_tolerance", allow_zero=True)
        positive(getattr(cfg, sec).alpha, f"{sec}.alpha", allow_zero=True)
        positive(getattr(cfg, sec).n_models, f"{sec}.n_models")
    if not 0 <= cfg.dynamics.holdout < 1:
        raise ConfigError(f"dynamics.holdout: must be in [0, 1), got {cfg.dynamics.holdout}")
    positive(cfg.dynamics.rollout_steps, "dynamics.rollout_steps")
    positive(cfg.agent.n_envs, "agent.n_envs")
    positive(cfg.agent.initial_steps, "agent.initial_steps", allow_zero=True)
    positive(cfg.agent.steps_per_iteration, "agent.steps_per_iteration", allow_zero=True)
    positive(cfg.surrogate.bounds_margin, "surrogate.bounds_margin", allow_zero=True)
    positive(cfg.surrogate.horizon, "surrogate.horizon")
    positive(cfg.distill.max_states, "distill.max_states")
    positive(cfg.dyna.iterations, "dyna.iterations")
    positive(cfg.dyna.eval_episodes, "dyna.eval_episodes", allow_zero=True)
    positive(cfg.dyna.assess_starts, "dyna.assess_starts")
    positive(cfg.dyna.max_extra_rounds, "dyna.max_extra_rounds", allow_zero=True)
    positive(cfg.dyna.final_eval_episodes, "dyna.final_eval_episodes")
    positive(cfg.dyna.restart_on_drop, "dyna.restart_on_drop", allow_zero=True)
    positive(cfg.env.max_episode_steps, "env.max_episode_steps")
    for key in ("passes", "refine_steps", "refine_horizon", "refine_rounds", "refine_batch"):
        positive(getattr(cfg.distill, key), f"distill.{key}")
    positive(cfg.distill.refine_lr, "distill.refine_lr")
    positive(cfg.distill.refine_ppo_lr, "distill.refine_ppo_lr")
    positive(cfg.distill.max_terms_fraction, "distill.max_terms_fraction")
    positive(cfg.distill.refine_timesteps, "distill.refine_timesteps")
    positive(cfg.distill.refine_threshold, "distill.refine_threshold", allow_zero=True)
    positive(cfg.distill.confirm_top, "distill.confirm_top", allow_zero=True)
    positive(cfg.distill.confirm_episodes, "distill.confirm_episodes")
    for i, p in enumerate(cfg.env.unit_pairs):
        if len(p) != 2:
            raise ConfigError(f"env.unit_pairs[{i}]: expected [cos_name, sin_name], got {p!r}")
    if not cfg.env.id.strip():
        raise ConfigError("env.id: must not be empty")
    cfg.stages.validate("stages")


def _translate_legacy_stage_keys(data: dict) -> dict:
    """``stages.controllers`` / ``stages.firmware_bridge`` (keyed by package) -> ``stages.control`` / ``stages.hil``."""
    stages = data.get("stages")
    if not isinstance(stages, dict) or not set(stages) & set(LEGACY_STAGE_KEYS):
        return data
    stages = dict(stages)
    for old, new in LEGACY_STAGE_KEYS.items():
        if old not in stages:
            continue
        if new in stages:
            raise ConfigError(f"stages.{old} and stages.{new} are the same stage's options: keep stages.{new}")
        warnings.warn(f"config key stages.{old} is deprecated and will be removed in the next release: "
                      f"use stages.{new} (options are keyed by stage name)", FutureWarning, stacklevel=4)
        stages[new] = stages.pop(old)
    return {**data, "stages": stages}


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    """Build and validate a :class:`Config` from a plain mapping."""
    try:
        data = _translate_legacy_stage_keys(data) if isinstance(data, dict) else data
        cfg = _build(Config, data, "")
        _validate(cfg)
        if cfg.reward.known is None:
            from .reward import BUILTIN_REWARDS

            cfg.reward.known = cfg.env.id if cfg.env.id in BUILTIN_REWARDS else "learned"
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    cfg.source = source
    return cfg


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a config mapping, in place."""
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"--set {item!r}: {p} is not a mapping")
            node = node[p]
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file (plus ``key=value`` overrides); errors name the file and the key path."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    apply_overrides(data, overrides)
    return config_from_dict(data, source=str(p))


def config_to_dict(cfg: Config) -> dict:
    d = dataclasses.asdict(cfg)
    d.pop("source", None)
    return d
