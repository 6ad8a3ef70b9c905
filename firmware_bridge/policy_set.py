"""A policy set on the board: K sparse policies in one firmware and EXP3-IX choosing among them.

The robust stage (``sindyrl.robust``) ends with a small set of non-dominated
policies and a bandit that picks one per episode. Here that runs on the board:

- :func:`generate_policy_set_c` writes C for each policy
  (:func:`~firmware_bridge.codegen.generate_sparse_c`) and a small set file with
  ``sindyrl_<name>_select(arm)`` / ``sindyrl_<name>_eval`` (the selected arm)
  and the bandit's configuration; ``build_firmware`` links it with the
  board's EXP3-IX (``board/sindyrl_bandit.c``).
- The host reports each episode's return with EPISODE_END; the board
  normalises it by the configured bounds, updates its loss estimates, draws
  the next arm with a seeded xorshift32 and answers with the arm and its
  probabilities (BANDIT_STATE, docs/protocol.md).
- :class:`BoardEXP3IX` is the same selector in Python, float32 in the C's
  order of operations, so a test can replay the board's draws exactly.
- :func:`policy_set_hil_episodes` is the closed loop: episodes on the real env
  with the board's actions, the return reported after each.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sindyrl.sparse import SparseModel

from .codegen import GeneratedC, _check_name, _f32, _safe_action, _write_header, generate_sparse_c
from .hil import board_episodes
from .link import BoardLink, BoardLinkError
from .protocol import MAX_ARMS, BanditState

__all__ = [
    "PolicySetConfig", "generate_policy_set_c", "BoardEXP3IX", "policy_set_hil_episodes", "ZERO_SEED",
    "load_policy_set", "robust_return_bounds", "run_policy_set_hil",
]

#: xorshift32 has no zero state; seed 0 starts from this (``SINDYRL_BANDIT_ZERO_SEED``).
ZERO_SEED = 0x6D2B79F5
_F = np.float32


@dataclass(frozen=True)
class PolicySetConfig:
    """The bandit built into a policy-set firmware (a BANDIT_RESET may override it).

    ``eta = c * sqrt(ln K / (K T))`` and ``gamma = eta / 2`` as in
    :class:`sindyrl.robust.bandits.EXP3IX`, unless given.
    """

    n_arms: int
    return_bounds: tuple[float, float]
    horizon: int = 200
    c: float = math.sqrt(2)
    eta: float | None = None
    gamma: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= int(self.n_arms) <= MAX_ARMS:
            raise ValueError(f"PolicySetConfig: n_arms must be in 1..{MAX_ARMS}, got {self.n_arms}")
        if int(self.horizon) < 1:
            raise ValueError(f"PolicySetConfig: horizon must be >= 1, got {self.horizon}")
        lo, hi = (float(v) for v in self.return_bounds)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"PolicySetConfig: return_bounds must be finite with low < high, got {self.return_bounds}")
        if not 0 <= int(self.seed) <= 0xFFFFFFFF:
            raise ValueError(f"PolicySetConfig: seed must be in 0..2**32-1, got {self.seed}")
        if not (math.isfinite(self.eta_value) and self.eta_value >= 0 and math.isfinite(self.gamma_value)
                and self.gamma_value >= 0):
            raise ValueError(f"PolicySetConfig: eta and gamma must be finite and >= 0, got "
                             f"{self.eta_value}, {self.gamma_value}")

    @property
    def eta_value(self) -> float:
        K, T = int(self.n_arms), int(self.horizon)
        return float(self.c) * math.sqrt(math.log(K) / (K * T)) if self.eta is None else float(self.eta)

    @property
    def gamma_value(self) -> float:
        return self.eta_value / 2 if self.gamma is None else float(self.gamma)

    def as_reset(self) -> tuple[float, float, float, float]:
        """``(eta, gamma, return_low, return_high)`` as a BANDIT_RESET carries them."""
        return (self.eta_value, self.gamma_value, float(self.return_bounds[0]), float(self.return_bounds[1]))


def _check_policies(policies: Sequence[SparseModel]) -> list[SparseModel]:
    policies = list(policies)
    if not 1 <= len(policies) <= MAX_ARMS:
        raise ValueError(f"policy set: need 1..{MAX_ARMS} policies, got {len(policies)}")
    for i, p in enumerate(policies):
        if not isinstance(p, SparseModel):
            raise TypeError(f"policy set: policy {i} is a {type(p).__name__}, expected a SparseModel")
    first = policies[0]
    for i, p in enumerate(policies[1:], 1):
        if list(p.inputs) != list(first.inputs) or list(p.outputs) != list(first.outputs):
            raise ValueError(f"policy set: policy {i} maps {list(p.inputs)} -> {list(p.outputs)}, policy 0 maps "
                             f"{list(first.inputs)} -> {list(first.outputs)}; all must have the same inputs/outputs")
        same = (p.output_bounds is None) == (first.output_bounds is None) and (
            p.output_bounds is None or all(np.array_equal(a, b) for a, b in zip(p.output_bounds, first.output_bounds)))
        if not same:
            raise ValueError(f"policy set: policy {i} has other output_bounds than policy 0 (the board has one "
                             "safe action for the whole set)")
    return policies


def set_hash(policies: Sequence[SparseModel], config: PolicySetConfig) -> str:
    """16 hex digits naming the policies (in order) and the bandit's configuration: the INFO hash."""
    text = "sindyrl-policy-set|" + "|".join(p.content_hash() for p in policies)
    text += "|" + ",".join(repr(float(v)) for v in config.as_reset()) + f"|{int(config.seed)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate_policy_set_c(
    policies: Sequence[SparseModel], name: str, out_dir, config: PolicySetConfig, real: str = "float"
) -> GeneratedC:
    """Write C for K sparse policies and the set that selects among them.

    Files: ``<name>_a<i>.[ch]`` per policy and ``<name>.[ch]`` with
    ``int sindyrl_<name>_select(size_t arm)``, ``sindyrl_<name>_eval`` (the
    selected arm, arm 0 at first) and ``SINDYRL_<NAME>_N_ARMS``, ``_ETA``,
    ``_GAMMA``, ``_RETURN_LOW``, ``_RETURN_HIGH``, ``_SEED``. The result goes
    to :func:`firmware_bridge.build.build_firmware` like any generated model.

    Parameters
    ----------
    policies : sequence of SparseModel
        1..32 policies with the same inputs, outputs and output bounds.
    name : str
        C name of the set (at most 28 characters: arms are ``<name>_a<i>``).
    out_dir : path
    config : PolicySetConfig
        Its ``n_arms`` must equal ``len(policies)``.
    real : {"float", "double"}
        Arithmetic inside each policy.
    """
    policies = _check_policies(policies)
    name = _check_name(name)
    if len(name) > 28:
        raise ValueError(f"generate_policy_set_c: name {name!r} is longer than 28 characters")
    if not isinstance(config, PolicySetConfig) or config.n_arms != len(policies):
        raise ValueError(f"generate_policy_set_c: config must be a PolicySetConfig with n_arms={len(policies)}")
    out_dir = Path(out_dir)
    arms = [generate_sparse_c(p, f"{name}_a{i}", out_dir, real=real) for i, p in enumerate(policies)]
    first = policies[0]
    lo, hi = first.output_bounds if first.output_bounds is not None else (None, None)
    gen = GeneratedC(
        name=name, kind="sparse", header=out_dir / f"{name}.h", source=out_dir / f"{name}.c",
        n_in=first.n_inputs, n_out=first.n_outputs, model_hash=set_hash(policies, config),
        inputs=list(first.inputs), outputs=list(first.outputs), safe_action=_safe_action(lo, hi, first.n_outputs),
        extra_sources=[a.source for a in arms], n_arms=len(policies),
    )
    m = gen.macro
    eta, gamma, r_lo, r_hi = config.as_reset()
    defs = "\n".join([
        f"#define {m}_N_ARMS {len(policies)}u",
        "/* EXP3-IX defaults: learning rate, implicit exploration, return bounds for [0, 1], xorshift32 seed */",
        f"#define {m}_ETA {_f32(eta)}",
        f"#define {m}_GAMMA {_f32(gamma)}",
        f"#define {m}_RETURN_LOW {_f32(r_lo)}",
        f"#define {m}_RETURN_HIGH {_f32(r_hi)}",
        f"#define {m}_SEED {int(config.seed)}u",
        "",
        "/* Make arm `arm` the policy sindyrl_" + name + "_eval runs. Returns 0, or SINDYRL_EVAL_ERR_ARG. */",
        f"int sindyrl_{name}_select(size_t arm);",
        f"size_t sindyrl_{name}_selected(void);",
        "",
    ])
    doc = [
        f" * Policy set '{name}': {len(policies)} sparse policies, one selected at a time (the board's EXP3-IX",
        " * picks it per episode). The eval function below runs the selected policy.",
        f" * Set hash: {gen.model_hash}. Arms (SparseModel.content_hash):",
        *[f" *   {i}: {a.name}.h ({a.model_hash})" for i, a in enumerate(arms)],
    ]
    _write_header(gen.header, gen, doc, extra_defs=defs)
    src = [
        f"/* Generated by firmware_bridge.policy_set. Do not edit. Set hash {gen.model_hash}. */",
        f'#include "{name}.h"',
        "",
        *[f'#include "{a.header.name}"' for a in arms],
        "",
        "typedef int (*arm_eval_fn)(const float *in, size_t n_in, float *out, size_t n_out);",
        "",
        f"static const arm_eval_fn arms[{m}_N_ARMS] = {{",
        *[f"    {a.symbol}," for a in arms],
        "};",
        "",
        "static size_t selected = 0;",
        "",
        f"int sindyrl_{name}_select(size_t arm)",
        "{",
        f"    if (arm >= {m}_N_ARMS) {{",
        "        return SINDYRL_EVAL_ERR_ARG;",
        "    }",
        "    selected = arm;",
        "    return SINDYRL_EVAL_OK;",
        "}",
        "",
        f"size_t sindyrl_{name}_selected(void)",
        "{",
        "    return selected;",
        "}",
        "",
        f"int {gen.symbol}(const float *in, size_t n_in, float *out, size_t n_out)",
        "{",
        "    return arms[selected](in, n_in, out, n_out);",
        "}",
        "",
    ]
    gen.source.write_text("\n".join(src))
    return gen


class BoardEXP3IX:
    """The board's EXP3-IX selector in Python, float32 in the same order as ``board/sindyrl_bandit.c``.

    Parameters
    ----------
    n_arms : int
    eta, gamma : float
        Learning rate and implicit exploration (rounded to float32, as the board holds them).
    return_bounds : (low, high)
        Returns are normalised to [0, 1] by these and clipped.
    seed : int
        xorshift32 seed (0 means :data:`ZERO_SEED`).
    """

    def __init__(self, n_arms: int, eta: float, gamma: float, return_bounds: tuple[float, float], seed: int = 0):
        self.n_arms = int(n_arms)
        self.eta, self.gamma = _F(eta), _F(gamma)
        self.low, self.high = _F(return_bounds[0]), _F(return_bounds[1])
        if not (1 <= self.n_arms <= MAX_ARMS and self.eta >= 0 and self.gamma >= 0 and self.low < self.high):
            raise ValueError(f"BoardEXP3IX: bad configuration K={n_arms}, eta={eta}, gamma={gamma}, "
                             f"bounds={return_bounds}")
        self.rng = int(seed) & 0xFFFFFFFF or ZERO_SEED
        self.loss = np.zeros(self.n_arms, np.float32)
        self.episodes = 0
        self.p = self._probabilities()
        self.arm = self._draw()

    @classmethod
    def from_config(cls, config: PolicySetConfig, seed: int | None = None) -> BoardEXP3IX:
        eta, gamma, lo, hi = config.as_reset()
        return cls(config.n_arms, eta, gamma, (lo, hi), config.seed if seed is None else seed)

    def _next(self) -> int:
        x = self.rng
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.rng = x
        return x

    def _probabilities(self) -> np.ndarray:
        m = self.loss.min()
        w = np.zeros(self.n_arms, np.float32)
        s = _F(0)
        with np.errstate(under="ignore"):
            for i in range(self.n_arms):
                w[i] = np.exp(-self.eta * _F(self.loss[i] - m), dtype=np.float32)
                s = _F(s + w[i])
            return (w / s).astype(np.float32)

    def _draw(self) -> int:
        u = _F(self._next() >> 8) * _F(2.0 ** -24)
        c, last = _F(0), 0
        for i in range(self.n_arms):
            if self.p[i] > 0:
                last = i
            c = _F(c + self.p[i])
            if u < c:
                return i
        return last

    def probabilities(self) -> np.ndarray:
        """The distribution the current arm was drawn from (float32)."""
        return self.p.copy()

    def episode_end(self, episode_return: float) -> int:
        """The return of the episode played on ``self.arm``; returns the next arm."""
        ret = _F(episode_return)
        if not np.isfinite(ret):
            raise ValueError(f"BoardEXP3IX.episode_end: return must be finite, got {episode_return}")
        r = min(max(_F((ret - self.low) / _F(self.high - self.low)), _F(0)), _F(1))
        self.loss[self.arm] = _F(self.loss[self.arm] + _F(_F(1) - r) / _F(self.p[self.arm] + self.gamma))
        self.episodes += 1
        self.p = self._probabilities()
        self.arm = self._draw()
        return self.arm


def policy_set_hil_episodes(
    link: BoardLink,
    make_env: Callable[[], Any],
    policies: Sequence[SparseModel],
    n_episodes: int = 5,
    seed: int = 0,
    max_steps: int | None = None,
) -> dict:
    """Closed-loop episodes on a policy-set board; the host reports each episode's return.

    Episode ``i`` starts from ``reset(seed=seed + i)`` and is played with the
    board's actions (clipped and cast as in
    :func:`sindyrl.evaluation.evaluate_policy`); each action is compared with
    ``policies[arm].evaluate`` of the arm the board said it acts with.

    Returns
    -------
    dict
        ``returns``, ``lengths``, ``arms`` (the arm of each episode),
        ``states`` (the :class:`BanditState` after each EPISODE_END) and
        ``max_action_diff``.
    """
    if n_episodes < 1:
        raise ValueError(f"policy_set_hil_episodes: n_episodes must be >= 1, got {n_episodes}")
    state = link.bandit_state()
    if state.n_arms != len(policies):
        raise ValueError(f"policy_set_hil_episodes: the board has {state.n_arms} arms, {len(policies)} policies given")
    arms: list[int] = []
    states: list[BanditState] = []

    def reference(i: int):
        arm = (states[-1] if states else state).arm
        arms.append(arm)
        return policies[arm].evaluate

    def report(i: int, episode_return: float) -> None:
        states.append(link.episode_end(episode_return))

    out = board_episodes(link, make_env, reference, n_episodes, seed=seed, max_steps=max_steps,
                         on_episode_end=report, label=lambda i: f"policy-set HIL episode {i} (arm {arms[i]})")
    return {**out, "arms": arms, "states": states}


def load_policy_set(directory: str | os.PathLike) -> list[SparseModel]:
    """The SparseModel ``*.json`` files of ``directory``, in name order (one arm each).

    The robust stage writes its policies as SB3 ``*.zip`` agents; those are
    neural and cannot go into a sparse policy set (distil them first), which
    the error says.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"policy set: {d} is not a directory")
    files = sorted(d.glob("*.json"))
    if not files:
        zips = sorted(p.name for p in d.glob("*.zip"))
        hint = (f" (it holds SB3 agents {zips[:4]}: the robust stage's policies are neural; distil each into a "
                "SparseModel and save it as JSON)") if zips else ""
        raise ValueError(f"policy set: no SparseModel *.json files in {d}{hint}")
    out = []
    for f in files:
        try:
            out.append(SparseModel.from_json(f))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"policy set: {f} is not a SparseModel JSON file ({e})") from None
    return out


def robust_return_bounds(run_path: str | os.PathLike) -> tuple[float, float] | None:
    """The return bounds the robust stage normalised with (``robust/adaptation.json``), if it ran."""
    path = Path(run_path) / "robust" / "adaptation.json"
    if not path.is_file():
        return None
    rep = json.loads(path.read_text())
    b = rep.get("options", {}).get("return_bounds")
    if b:
        return float(b[0]), float(b[1])
    return float(rep["random_return"]), float(np.max(rep["payoff"]["values"]))


def run_policy_set_hil(
    policies: Sequence[SparseModel],
    make_env: Callable[[], Any],
    config: PolicySetConfig,
    board: str = "host",
    work_dir: str | os.PathLike | None = None,
    episodes: int = 5,
    seed: int = 0,
    max_steps: int | None = None,
    timeout: float = 2.0,
    retries: int = 2,
    echo: Callable[[str], None] = print,
) -> dict:
    """Build a policy-set firmware, start the board and play ``episodes`` closed-loop episodes.

    The board picks each episode's policy with EXP3-IX (reset to
    ``config.seed``); the host reports every return. The board's choices and
    probabilities are replayed with :class:`BoardEXP3IX` and must agree.

    Returns
    -------
    dict
        ``hil_policy_set_*`` keys for ``summary.json``: board, arms, returns,
        arm per episode, final probabilities, max action difference against
        the chosen policy in Python, protocol errors, flash/RAM, and whether
        the Python replay agreed.
    """
    from .boards import QEMU_BOARDS, HostBoard, QemuBoard
    from .build import build_firmware, missing_tools

    if board != "host" and board not in QEMU_BOARDS:
        raise ValueError(f"policy-set HIL runs on the host or an emulated board {sorted(QEMU_BOARDS)}, got {board!r}")
    target = "host" if board == "host" else QEMU_BOARDS[board].target
    missing = missing_tools(target, with_qemu=board != "host")
    if missing:
        raise RuntimeError(f"--board {board} needs {', '.join(missing)}")
    tmp = tempfile.TemporaryDirectory(prefix="sindyrl-pset-") if work_dir is None else None
    wd = Path(tmp.name if tmp is not None else work_dir)
    try:
        gen = generate_policy_set_c(policies, "policy_set", wd / "policy_set", config)
        echo(f"building a {config.n_arms}-policy firmware for {target} in {wd}")
        fw = build_firmware(gen, target)
        runner = HostBoard(fw.path) if board == "host" else QemuBoard(fw.path, board=board)
        with runner, BoardLink(runner.url, timeout=timeout, retries=retries) as link:
            info = link.handshake()
            if info.model_hash != gen.model_hash:
                raise BoardLinkError(f"board runs {info.model_hash}, expected the policy set {gen.model_hash}")
            link.bandit_reset(config.seed)
            res = policy_set_hil_episodes(link, make_env, policies, episodes, seed, max_steps)
            errors = link.stats.protocol_errors
        ref = BoardEXP3IX.from_config(config)
        agree = True
        for arm, ret, st in zip(res["arms"], res["returns"], res["states"]):
            agree &= arm == ref.arm
            ref.episode_end(ret)
            agree &= st.arm == ref.arm and bool(np.allclose(st.probabilities, ref.probabilities(), rtol=1e-5,
                                                            atol=1e-6))
        return {
            "hil_policy_set_board": board, "hil_policy_set_arms": config.n_arms,
            "hil_policy_set_hash": gen.model_hash, "hil_policy_set_returns": [float(v) for v in res["returns"]],
            "hil_policy_set_return_mean": float(np.mean(res["returns"])),
            "hil_policy_set_chosen_arms": [int(a) for a in res["arms"]],
            "hil_policy_set_probabilities": [float(v) for v in res["states"][-1].probabilities],
            "hil_policy_set_max_action_diff": res["max_action_diff"], "hil_policy_set_protocol_errors": int(errors),
            "hil_policy_set_python_replay_agrees": bool(agree),
            "hil_policy_set_flash_bytes": fw.flash, "hil_policy_set_ram_bytes": fw.ram,
        }
    finally:
        if tmp is not None:
            tmp.cleanup()
