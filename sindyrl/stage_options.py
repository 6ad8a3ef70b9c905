"""What every stage of ``sindyrl run`` shares: its options (``stages.<stage>`` in a config) and the skip signal.

The stages themselves live with their backends (``export/stage.py``,
``controllers/stage.py``, ``firmware_bridge/stage.py``, ``sindyrl/robust/stage.py``),
which ``sindyrl`` must not import; their option dataclasses live here, so that
:mod:`sindyrl.config` checks them when a config is loaded: an unknown or
mistyped option fails at load time with its key path (``stages.control.horizn``),
not minutes later when the stage starts.

Each options class is a plain dataclass whose fields are the keyword arguments
of its stage's ``stage(run, echo, **options)``; ``validate(where)`` checks the
values ``sindyrl.config`` cannot check from the types alone.

A stage that cannot apply to the system at hand (no target state for a
tracking cost, no sparse model, no policy to put on a board, ...) raises
:class:`StageSkipped` with the reason; ``sindyrl run`` records it in
``summary.json["skipped"]`` and goes on with the next stage.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "StageSkipped", "StageOptions", "ExportOptions", "ControlOptions", "HILOptions", "RobustOptions",
    "StagesConfig", "LEGACY_STAGE_KEYS",
]


class StageSkipped(ValueError):
    """A stage cannot apply to this system; ``reason`` says why (one line, for people).

    ``sindyrl run`` catches it, prints ``=== <stage>: skipped (<reason>)``, records
    ``summary.json["skipped"][<stage>] = reason`` and continues. It is a ``ValueError``
    so that a direct call (``controllers.control(run)``, ``sindyrl control RUN``)
    still fails with the reason, as any other unusable input does.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StageOptions:
    """Mixin of the options classes: build from a mapping with the config checks, then ``validate``."""

    @classmethod
    def from_dict(cls, d: dict | None, where: str = ""):
        """Validate a mapping; errors name the key (``stages.robust.epsilon``) and are ``ConfigError``s."""
        from .config import _build

        o = _build(cls, dict(d or {}), where or cls._where)
        o.validate(where or cls._where)
        return o

    def validate(self, where: str) -> None:  # pragma: no cover - overridden
        pass

    def to_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the stage function."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _error(msg: str) -> Exception:
    from .config import ConfigError

    return ConfigError(msg)


def _at_least(o: Any, where: str, key: str, lo: float, allow_none: bool = False) -> None:
    v = getattr(o, key)
    if v is None and allow_none:
        return
    if v is None or not math.isfinite(v) or v < lo:
        raise _error(f"{where}.{key}: must be >= {lo:g}, got {v!r}")


@dataclass
class ExportOptions(StageOptions):
    """``stages.export``: ONNX export of the run's policies and models (``export/stage.py``).

    Attributes
    ----------
    what : {"all", "policy", "sparse-policy", "dynamics", "reward"}
        What to export; ``all`` is every artifact the run has.
    quantize : bool
        Also write ``policy.int8.onnx`` and compare its return with the float policy's on the real env.
    n_states : int
        Parity states per file (0: no check).
    seed : int, optional
        Parity states and evaluation resets (default: the run's seed).
    tol : float
        Largest accepted max-abs parity error.
    n_episodes : int, optional
        Real episodes of the float/int8 return comparison (each policy; only with ``quantize``). Default: as
        many as the run's final evaluation (``Run.confirm_episodes``).
    """

    _where = "stages.export"

    what: Literal["all", "policy", "sparse-policy", "dynamics", "reward"] = "all"
    quantize: bool = False
    n_states: int = 10_000
    seed: int | None = None
    tol: float = 1e-5
    n_episodes: int | None = None

    def validate(self, where: str) -> None:
        _at_least(self, where, "n_states", 0)
        _at_least(self, where, "tol", 0)
        _at_least(self, where, "n_episodes", 1, allow_none=True)


@dataclass
class ControlOptions(StageOptions):
    """``stages.control``: LQR / MPC designed on the learned model (``controllers/stage.py``).

    Attributes
    ----------
    methods : list of {"lqr", "mpc"}
        Controllers to design (a method that cannot apply, e.g. LQR on a model without a steady state, is left out).
    horizon : int
        MPC horizon (steps).
    n_episodes : int, optional
        Real episodes per controller (and for the sparse policy of the comparison when distill did not
        already evaluate it on the same seeds). Default: as many as the run's final evaluation
        (``Run.confirm_episodes``), which is sized so that all the stages' real evaluation together costs
        no more than the training's real steps.
    solver : {"ipopt", "sqpmethod", "c"}
        MPC solver; ``c`` builds and runs the generated sqpmethod/qrqp C.
    cost : {"auto", "reward", "quadratic"}
        MPC stage cost: the negative reward (CasADi form of a known reward, else the learned reward
        model) or quadratic tracking of ``target``; ``auto`` prefers the reward.
    target : list of float, optional
        Target state (LQR equilibrium guess, tracking target); default: the maximiser of a built-in reward,
        else the steady state of the learned model the reward prefers within the data box.
    seed : int, optional
        First reset seed (default: the run's seed, as the RL evaluation).
    compare : bool
        Add the run's neural and sparse policies to ``control.md``.
    """

    _where = "stages.control"

    methods: list[Literal["lqr", "mpc"]] | Literal["lqr", "mpc"] = field(default_factory=lambda: ["lqr", "mpc"])
    horizon: int = 30
    n_episodes: int | None = None
    solver: Literal["ipopt", "sqpmethod", "c"] = "ipopt"
    cost: Literal["auto", "reward", "quadratic"] = "auto"
    target: list[float] | None = None
    seed: int | None = None
    compare: bool = True

    def validate(self, where: str) -> None:
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        if not self.methods:
            raise _error(f"{where}.methods: give at least one of lqr, mpc")
        _at_least(self, where, "horizon", 1)
        _at_least(self, where, "n_episodes", 1, allow_none=True)


@dataclass
class HILOptions(StageOptions):
    """``stages.hil``: the policy on a board, closed loop with the real env (``firmware_bridge/stage.py``).

    Attributes
    ----------
    board : {"auto", "host", "qemu", "mps2-an386", "stm32f405", "microbit", "onnx"}
        ``auto``: QEMU (Cortex-M4F, mps2-an386; ``qemu`` is its alias) when the ARM toolchain and QEMU are
        installed, else the host build. ``stm32f405`` and ``microbit`` (Cortex-M0, no FPU) are the other
        emulated boards (docs/boards.md).
    policy : {"auto", "sparse", "neural"}
        ``auto``: the sparse policy when the run has one, else the neural agent.
    episodes : int, optional
        Closed-loop real episodes on the board. Default: as many as the run's final evaluation, whose
        returns are then the Python reference (otherwise the reference runs as many real episodes again).
    seed : int, optional
        First reset seed (default: the run's seed).
    max_steps : int, optional
        Cut each episode after this many steps.
    timeout, retries : float, int
        Per-reply timeout (s) and resends of the serial link (default timeout: 2 s, 10 s on an emulated board).
    bench_calls : int
        Policy calls timed on the board (0: none).
    onnx_path : str, optional
        ONNX file the ``onnx`` board serves (default: the run's export).
    real : {"float", "double", "fixed"}, optional
        Arithmetic of the generated sparse-policy C (default: float, fixed point on boards without an FPU).
    domain_guard : float, optional
        Build the board with the domain guard: an observation outside the policy's input bounds widened by
        this fraction of their width is answered with ERROR OUT_OF_DOMAIN and the safe action (counted).
    """

    _where = "stages.hil"

    board: Literal["auto", "host", "qemu", "mps2-an386", "stm32f405", "microbit", "onnx"] | None = "auto"
    policy: Literal["auto", "sparse", "neural"] = "auto"
    episodes: int | None = None
    seed: int | None = None
    max_steps: int | None = None
    timeout: float | None = None
    retries: int = 2
    bench_calls: int = 1000
    onnx_path: str | None = None
    real: Literal["float", "double", "fixed"] | None = None
    domain_guard: float | None = None

    def validate(self, where: str) -> None:
        if self.board is None:
            self.board = "auto"
        _at_least(self, where, "episodes", 1, allow_none=True)
        _at_least(self, where, "max_steps", 1, allow_none=True)
        _at_least(self, where, "timeout", 0, allow_none=True)
        _at_least(self, where, "retries", 0)
        _at_least(self, where, "bench_calls", 0)


_ATTACKS = ("none", "random", "mad", "critic")
_BANDITS = ("exp3ix", "exp3s", "discounted_exp3ix")


@dataclass
class RobustOptions(StageOptions):
    """``stages.robust``: robust policies and test-time selection (``sindyrl/robust/stage.py``).

    Attributes
    ----------
    epsilon : float
        Attack radius in units of ``scale`` (per-dimension spread of the run's real data).
    scale : str or list of float
        ``std`` | ``range`` | ``unit`` or explicit per-dimension scales.
    attacks : list of str
        Fixed payoff columns: ``none``, ``random``, ``mad``, ``critic`` (the
        critic attack is dropped for agents without a Q critic).
    mad_steps, mad_step_size
        PGD steps and step size (default epsilon / 10) of MAD and the critic attack.
    iterations, rounds, min_improvement
        Discovery: at most K new policies, attacker/policy alternations per
        iteration, stop when the best improvement over the set is below this
        fraction of the natural-minus-random return range.
    attacker_steps, policy_steps
        Surrogate steps per round for the attacker and for the new policy.
    eval_episodes
        Real episodes per payoff cell.
    schedule, segment, bandit_episodes
        Switching attack schedule for the bandit evaluation: names among the
        payoff columns (``adversary`` is the learned attacker trained against
        the natural policy), each for ``segment`` episodes, in turn.
    bandits, bandit_seeds, c, exp3s_switches, discount
        Bandits to compare, runs per bandit on the same returns table, EXP3-IX
        learning-rate constant, EXP3.S switch count (default: from the
        schedule) and discount of ``discounted_exp3ix``.
    extra_bandits
        More bandit variants played on the same returns table, e.g.
        ``{"exp3ix@c8": {"c": 8}}`` (name before ``@`` is the bandit).
    return_bounds
        Normalisation of returns to [0, 1] (clipped); default (random
        policy's mean return, best payoff cell).
    seed
        Default: the run's seed.
    """

    _where = "stages.robust"

    epsilon: float = 0.2
    scale: str | list[float] = "std"
    attacks: list[str] = field(default_factory=lambda: ["none", "random", "mad", "critic"])
    mad_steps: int = 10
    mad_step_size: float | None = None
    iterations: int = 3
    rounds: int = 1
    min_improvement: float = 0.05
    attacker_steps: int = 20_000
    policy_steps: int = 30_000
    eval_episodes: int = 10
    schedule: list[str] = field(default_factory=lambda: ["none", "mad", "adversary"])
    segment: int = 50
    bandit_episodes: int = 300
    bandits: list[str] = field(default_factory=lambda: list(_BANDITS))
    bandit_seeds: int = 20
    c: float = math.sqrt(2)
    exp3s_switches: int | None = None
    discount: float = 0.95
    return_bounds: list[float] | None = None
    extra_bandits: dict = field(default_factory=dict)
    seed: int | None = None

    def validate(self, where: str) -> None:
        def num(key, lo=None, integer=False, allow_none=False):
            v = getattr(self, key)
            if v is None and allow_none:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if integer:
                ok = ok and float(v).is_integer()
            if not ok or (lo is not None and v < lo):
                kind = "an integer" if integer else "a number"
                raise _error(f"{where}.{key}: expected {kind}{f' >= {lo}' if lo is not None else ''}, got {v!r}")

        num("epsilon", 0)
        num("mad_steps", 1, True)
        num("mad_step_size", 0, allow_none=True)
        num("iterations", 0, True)
        num("rounds", 1, True)
        num("min_improvement")
        num("attacker_steps", 1, True)
        num("policy_steps", 1, True)
        num("eval_episodes", 1, True)
        num("segment", 1, True)
        num("bandit_episodes", 1, True)
        num("bandit_seeds", 1, True)
        num("c", 0)
        num("exp3s_switches", 0, True, allow_none=True)
        num("seed", 0, True, allow_none=True)
        if not 0 < self.discount <= 1:
            raise _error(f"{where}.discount: must be in (0, 1], got {self.discount!r}")
        if isinstance(self.scale, str) and self.scale not in ("std", "range", "unit"):
            raise _error(f"{where}.scale: expected std, range, unit or a list of numbers, got {self.scale!r}")
        bad = sorted(set(self.attacks) - set(_ATTACKS))
        if bad:
            raise _error(f"{where}.attacks: unknown attack {bad[0]!r} (none, random, mad, critic)")
        known = set(self.attacks) | {"none", "adversary"}
        bad = [s for s in self.schedule if s not in known]
        if bad or not self.schedule:
            raise _error(f"{where}.schedule: {bad[0] if bad else 'empty'!r} is not an attack of this run "
                         f"(choose among {sorted(known)})")
        bad = sorted(set(self.bandits) - set(_BANDITS))
        if bad or not self.bandits:
            raise _error(f"{where}.bandits: unknown bandit {bad[0] if bad else 'none given'!r} "
                         "(exp3ix, exp3s, discounted_exp3ix)")
        if any(k.split("@")[0] not in _BANDITS or not isinstance(v, dict) for k, v in self.extra_bandits.items()):
            raise _error(f"{where}.extra_bandits: expected {{'exp3ix@label': {{options}}}}, got {self.extra_bandits!r}")
        if self.return_bounds is not None and (len(self.return_bounds) != 2
                                               or not self.return_bounds[0] < self.return_bounds[1]):
            raise _error(f"{where}.return_bounds: expected [low, high] with low < high, got {self.return_bounds!r}")


@dataclass
class StagesConfig:
    """``stages``: the options of each later stage of ``sindyrl run``, under the stage's name.

    ``robust`` is opt-in (minutes of attacker and policy training): the stage runs only when the config
    has a ``stages.robust`` section.
    """

    export: ExportOptions = field(default_factory=ExportOptions)
    control: ControlOptions = field(default_factory=ControlOptions)
    hil: HILOptions = field(default_factory=HILOptions)
    robust: RobustOptions | None = None

    def validate(self, where: str = "stages") -> None:
        for f in dataclasses.fields(self):
            o = getattr(self, f.name)
            if o is not None:
                o.validate(f"{where}.{f.name}")


#: keys of the release before: ``stages.<package>`` -> ``stages.<stage>`` (accepted, with a warning, for one release)
LEGACY_STAGE_KEYS = {"controllers": "control", "firmware_bridge": "hil"}
