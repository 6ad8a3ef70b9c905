"""Hardware-in-the-loop: the real (simulated) plant on the host, the policy on a board.

``run_hil(run, board="qemu")`` generates C for the run's policy, builds the
firmware, starts the board (host process, Cortex-M4F in QEMU, or the ONNX edge
server), and runs closed-loop episodes on the real gymnasium env with every
action computed on the board and sent back over the serial protocol. It
reports return, per-step round-trip latency, the largest action difference
against the Python reference on the same observations, protocol errors,
flash/RAM and, on the Cortex-M4F, instructions per policy call, and the real
steps the session took. :meth:`HilReport.summary` gives the ``hil_`` figures;
the ``hil`` stage (:mod:`firmware_bridge.stage`) returns them and the pipeline
records them in ``summary.json``.

:func:`run_policy_hil` is the same without a run directory (a policy object
and an env factory), for scripts and tests.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sindyrl.sparse import SparseModel

from .boards import QEMU_BOARDS, Board, HostBoard, OnnxBoard, QemuBoard
from .build import build_firmware, missing_tools
from .codegen import GeneratedC, generate_neural_c, generate_sparse_c, neural_spec_from_sb3
from .link import BoardErrorReply, BoardLink, BoardLinkError
from .protocol import ErrorCode

__all__ = ["BOARDS", "HilReport", "hil_episodes", "run_policy_hil", "run_hil", "default_board"]

BOARDS = ("host", "onnx", *QEMU_BOARDS)  # "qemu" is mps2-an386


@dataclass
class HilReport:
    """Everything one HIL session measured."""

    board: str
    policy: str
    model_name: str
    model_hash: str
    seed: int
    returns: list[float]
    reference_returns: list[float]
    lengths: list[int]
    latency_p50_ms: float
    latency_p99_ms: float
    max_action_diff: float
    protocol_errors: int
    domain_events: int = 0  # OBS the board's domain guard answered with the safe action
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    instructions_per_call: float | None = None
    board_ns_per_call: float | None = None
    notes: list[str] = field(default_factory=list)
    #: real env steps of the session (board episodes and the Python reference episodes)
    real_steps: int = 0

    @property
    def return_rel_diff_max(self) -> float:
        b, r = np.asarray(self.returns), np.asarray(self.reference_returns)
        return float(np.max(np.abs(b - r) / np.maximum(np.abs(r), 1e-12)))

    def summary(self) -> dict:
        """Flat ``hil_`` keys for ``summary.json``."""
        out = {
            "hil_board": self.board,
            "hil_policy": self.policy,
            "hil_model_hash": self.model_hash,
            "hil_episodes": len(self.returns),
            "hil_return_mean": float(np.mean(self.returns)),
            "hil_returns": [float(v) for v in self.returns],
            "hil_reference_return_mean": float(np.mean(self.reference_returns)),
            "hil_return_rel_diff_max": self.return_rel_diff_max,
            "hil_latency_p50_ms": self.latency_p50_ms,
            "hil_latency_p99_ms": self.latency_p99_ms,
            "hil_max_action_diff": self.max_action_diff,
            "hil_protocol_errors": self.protocol_errors,
            "hil_domain_events": self.domain_events,
        }
        for key in ("flash_bytes", "ram_bytes", "instructions_per_call", "board_ns_per_call"):
            v = getattr(self, key)
            if v is not None:
                out[f"hil_{key}"] = v
        return out

    def format(self) -> str:
        """A few lines for the screen."""
        lines = [
            f"HIL {self.policy} policy '{self.model_name}' ({self.model_hash}) on the {self.board} board, "
            f"{len(self.returns)} episodes from seed {self.seed}",
            f"  return on board     {np.mean(self.returns):10.3f}  (per episode: "
            + ", ".join(f"{v:.3f}" for v in self.returns) + ")",
            f"  return in Python    {np.mean(self.reference_returns):10.3f}  "
            f"(max relative difference per episode {self.return_rel_diff_max:.2e})",
            f"  action difference   {self.max_action_diff:.3e} max abs, board vs Python on the same observations",
            f"  round trip          p50 {self.latency_p50_ms:.3f} ms, p99 {self.latency_p99_ms:.3f} ms",
            f"  protocol errors     {self.protocol_errors}",
            f"  domain guard        {self.domain_events} observations outside the input bounds (safe action applied)",
        ]
        if self.flash_bytes is not None:
            lines.append(f"  firmware            flash {self.flash_bytes} B, RAM {self.ram_bytes} B")
        if self.instructions_per_call is not None:
            lines.append(f"  policy call         {self.instructions_per_call:.1f} instructions (QEMU -icount)")
        if self.board_ns_per_call is not None:
            lines.append(f"  policy call         {self.board_ns_per_call:.0f} ns on the board (wall clock)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def board_episodes(
    link: BoardLink,
    make_env: Callable[[], Any],
    reference: Callable[[int], Callable[[np.ndarray], np.ndarray]],
    n_episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
    on_episode_end: Callable[[int, float], None] | None = None,
    label: Callable[[int], str] = lambda i: f"HIL episode {i}",
) -> dict:
    """The closed loop every HIL test shares: the env steps with the board's actions.

    Episode ``i`` starts from ``reset(seed=seed + i)``; ``reference(i)`` is the
    Python policy the board's actions are compared with during that episode
    and ``on_episode_end(i, return)`` runs after it. Actions are clipped to the
    action space and cast to its dtype exactly as
    :func:`sindyrl.evaluation.evaluate_policy` does, so the returns compare with
    the Python policy's. Raises :class:`BoardLinkError` (naming ``label(i)`` and
    the step) when the board stops answering. An ERROR ``OUT_OF_DOMAIN`` (the
    board's opt-in domain guard) applies the safe action it carries, is counted
    in ``domain_events`` and left out of the action comparison.
    """
    env = make_env()
    low, high = env.action_space.low, env.action_space.high
    returns, lengths, max_diff, domain_events = [], [], 0.0, 0
    try:
        for i in range(n_episodes):
            act_ref = reference(i)
            obs, _ = env.reset(seed=seed + i)
            total, t, done = 0.0, 0, False
            while not done:
                guarded = False
                try:
                    a_board = link.act(obs)
                except BoardErrorReply as e:
                    if e.reply.code != ErrorCode.OUT_OF_DOMAIN:
                        raise BoardLinkError(f"{label(i)}, step {t}: {e}") from None
                    a_board, guarded = e.reply.safe_action, True
                    domain_events += 1
                except BoardLinkError as e:
                    raise BoardLinkError(f"{label(i)}, step {t}: {e}") from None
                a_ref = np.clip(np.asarray(act_ref(np.asarray(obs)), dtype=np.float64).reshape(low.shape), low, high)
                a = np.clip(np.asarray(a_board, dtype=np.float64).reshape(low.shape), low, high)
                if not guarded:
                    max_diff = max(max_diff, float(np.max(np.abs(a - a_ref))))
                obs, r, term, trunc, _ = env.step(a.astype(env.action_space.dtype))
                total += float(r)
                t += 1
                done = term or trunc or (max_steps is not None and t >= max_steps)
            returns.append(total)
            lengths.append(t)
            if on_episode_end is not None:
                on_episode_end(i, total)
    finally:
        env.close()
    return {"returns": returns, "lengths": lengths, "max_action_diff": max_diff, "domain_events": domain_events}


def hil_episodes(
    link: BoardLink,
    make_env: Callable[[], Any],
    reference_act: Callable[[np.ndarray], np.ndarray],
    n_episodes: int = 5,
    seed: int = 0,
    max_steps: int | None = None,
) -> dict:
    """Closed-loop episodes with the board's actions, compared with ``reference_act`` (see :func:`board_episodes`).

    Returns ``returns``, ``lengths``, ``max_action_diff`` and ``domain_events``.
    """
    if n_episodes < 1:
        raise ValueError(f"hil_episodes: n_episodes must be >= 1, got {n_episodes}")
    return board_episodes(link, make_env, lambda i: reference_act, n_episodes, seed=seed, max_steps=max_steps)


def _reference_returns(act, make_env, n_episodes: int, seed: int, max_steps: int | None) -> list[float]:
    from sindyrl.evaluation import evaluate_policy

    return [float(v) for v in evaluate_policy(act, make_env, n_episodes=n_episodes, seed=seed, max_steps=max_steps)]


def default_board() -> str:
    """``qemu`` when arm-none-eabi-gcc and qemu-system-arm are installed, else ``host``."""
    return "qemu" if not missing_tools("mps2-an386", with_qemu=True) else "host"


def _export_onnx(policy: Any, kind: str, path: Path, vecnormalize: Any, obs_names, action_names) -> Path:
    try:  # submodules: they resolve even where ``export`` is installed as a namespace package
        if kind == "sparse":
            from export.sparse_model import export_sparse_model
        else:
            from export.neural import export_policy
    except ImportError as e:
        raise RuntimeError(f"--board onnx needs the export package to write the ONNX policy ({e})") from None
    if kind == "sparse":
        export_sparse_model(policy, path, n_states=1000 if policy.input_bounds is not None else 0)
    else:
        export_policy(policy, path, vecnormalize=vecnormalize, obs_names=obs_names, action_names=action_names,
                      n_states=1000)
    return path


def run_policy_hil(
    policy: Any,
    make_env: Callable[[], Any],
    board: str = "host",
    work_dir: str | os.PathLike | None = None,
    episodes: int = 5,
    seed: int = 0,
    vecnormalize: Any = None,
    obs_names: list[str] | None = None,
    action_names: list[str] | None = None,
    onnx_path: str | os.PathLike | None = None,
    max_steps: int | None = None,
    timeout: float | None = None,
    retries: int = 2,
    bench_calls: int = 1000,
    real: str | None = None,
    domain_guard: float | None = None,
    echo: Callable[[str], None] = print,
    reference_returns: Sequence[float] | None = None,
) -> HilReport:
    """HIL for a policy object: a SparseModel (sparse) or an SB3 agent (neural).

    Parameters
    ----------
    policy : SparseModel or stable_baselines3 BaseAlgorithm
        The policy to put on the board.
    make_env : callable
        Returns the real env (a fresh one per call).
    board : {"host", "onnx", "qemu", "mps2-an386", "stm32f405"}
        Which board runs the policy (``qemu`` is ``mps2-an386``; see
        :data:`firmware_bridge.boards.QEMU_BOARDS`).
    work_dir : path, optional
        Generated C, builds and ONNX files go here (default: a temporary directory).
    episodes, seed : int
        Episode ``i`` starts from ``reset(seed=seed + i)``, for the board and the Python reference.
    vecnormalize : VecNormalize, optional
        Observation statistics of a neural policy (folded into the C code).
    onnx_path : path, optional
        For ``board="onnx"``: serve this file instead of exporting the policy.
    timeout, retries : float, int
        Per-reply timeout (s) and retries of the link. Default timeout: 2 s, or 10 s on an emulated board,
        where a loaded host can stall QEMU for seconds (a timeout there would count as a protocol error).
    bench_calls : int
        Policy calls timed on the board itself (0 skips the measurement).
    real : {"float", "double", "fixed"}, optional
        Arithmetic of the generated sparse-policy C (the M4F's FPU is single
        precision). Default: ``"fixed"`` on a board without an FPU (the
        Cortex-M0 ``microbit``; ``"float"`` there is the soft-float baseline),
        else ``"float"``.
    domain_guard : float, optional
        Build the firmware with the domain guard at this margin (fraction of
        each input's bound width): observations outside the widened
        ``input_bounds`` get the safe action and are counted in
        ``HilReport.domain_events`` (sparse policies with input bounds).
    reference_returns : sequence of float, optional
        The Python policy's returns from the same reset seeds, already measured (the run's final evaluation):
        they are the reference, and no real episode is spent on it again. Default: run the reference.
    """
    from sindyrl.evaluation import StepCounter

    if board not in BOARDS:
        raise ValueError(f"board must be one of {BOARDS}, got {board!r}")
    make_env = StepCounter(make_env)
    kind = "sparse" if isinstance(policy, SparseModel) else "neural"
    if real is None:
        real = "fixed" if board in QEMU_BOARDS and not QEMU_BOARDS[board].has_fpu else "float"
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sindyrl-hil-")
        work_dir = tmp.name
    work_dir = Path(work_dir)
    try:
        gen: GeneratedC | None = None
        if kind == "sparse":
            def reference(obs):
                return policy.evaluate(obs)

            name, model_hash = policy.name, policy.content_hash()
            if board != "onnx":
                gen = generate_sparse_c(policy, "policy", work_dir / "sparse", real=real)
        else:
            spec = neural_spec_from_sb3(policy, obs_normalizer=vecnormalize, inputs=obs_names, outputs=action_names)

            def reference(obs):
                o = vecnormalize.normalize_obs(obs) if vecnormalize is not None else obs
                return policy.predict(o, deterministic=True)[0]

            name, model_hash = type(policy).__name__.lower(), spec.content_hash()
            if board != "onnx":
                gen = generate_neural_c(spec, "policy", work_dir / "neural")
        notes: list[str] = [f"sparse policy C in {real} arithmetic"] if gen is not None and kind == "sparse" else []
        build = None
        if board == "onnx":
            path = Path(onnx_path) if onnx_path is not None else _export_onnx(
                policy, kind, work_dir / f"{kind}_policy.onnx", vecnormalize, obs_names, action_names)
            runner: Board = OnnxBoard(path)
            notes.append(f"ONNX file {path} ({path.stat().st_size} bytes)")
        else:
            target = "host" if board == "host" else QEMU_BOARDS[board].target
            missing = missing_tools(target, with_qemu=board in QEMU_BOARDS)
            if missing:
                raise RuntimeError(f"--board {board} needs {', '.join(missing)} (Debian: gcc-arm-none-eabi "
                                   "libnewlib-arm-none-eabi qemu-system-arm)")
            echo(f"building {kind} policy firmware for {target} in {work_dir}")
            build = build_firmware(gen, target, domain_guard=domain_guard)
            runner = HostBoard(build.path) if board == "host" else QemuBoard(build.path, board=board)
        if timeout is None:
            timeout = 10.0 if board in QEMU_BOARDS else 2.0
        with runner, BoardLink(runner.url, timeout=timeout, retries=retries) as link:
            info = link.handshake()
            want = gen.model_hash if gen is not None else (model_hash if kind == "sparse" else None)
            if want is not None and info.model_hash != want:
                raise BoardLinkError(f"board runs model {info.model_hash}, expected {want} (an ONNX file exported "
                                     "from another model? re-run `sindyrl export`)")
            echo(f"board at {runner.url}: {info.kind.name.lower()} model '{info.name}' ({info.model_hash}), "
                 f"{info.n_in} -> {info.n_out}")
            res = hil_episodes(link, make_env, reference, n_episodes=episodes, seed=seed, max_steps=max_steps)
            env = make_env()
            obs0 = np.asarray(env.reset(seed=seed)[0], np.float32)
            env.close()
            ipc = ns = None
            if bench_calls:
                if board in QEMU_BOARDS:
                    ipc = link.instructions_per_call(bench_calls, obs0)
                else:
                    ns = link.bench(bench_calls, obs0).elapsed / bench_calls
            rtts = np.asarray(link.stats.rtts) * 1e3
            errors = link.stats.protocol_errors
        if reference_returns is not None and len(reference_returns) >= episodes and max_steps is None:
            ref = [float(v) for v in reference_returns[:episodes]]
        else:
            ref = _reference_returns(reference, make_env, episodes, seed, max_steps)
        report = HilReport(
            board=board, policy=kind, model_name=name, model_hash=model_hash, seed=seed,
            returns=res["returns"], reference_returns=ref, lengths=res["lengths"],
            latency_p50_ms=float(np.percentile(rtts, 50)), latency_p99_ms=float(np.percentile(rtts, 99)),
            max_action_diff=res["max_action_diff"], protocol_errors=int(errors), domain_events=res["domain_events"],
            flash_bytes=None if build is None else build.flash, ram_bytes=None if build is None else build.ram,
            instructions_per_call=ipc, board_ns_per_call=ns, notes=notes, real_steps=make_env.steps,
        )
        if tmp is None:
            log = work_dir / f"hil-{board}-{kind}.json"
            log.write_text(json.dumps({**asdict(report), "summary": report.summary()}, indent=1))
        return report
    finally:
        if tmp is not None:
            tmp.cleanup()


def run_hil(
    run: Any,
    board: str = "host",
    policy: str = "sparse",
    episodes: int = 5,
    seed: int | None = None,
    echo: Callable[[str], None] = print,
    **options: Any,
) -> HilReport:
    """HIL for a run directory: its policy, its real env (``sindyrl hil RUN`` runs the ``hil`` stage).

    ``policy`` is ``sparse`` (``run.load_model("policy")``) or ``neural``
    (``run.load_agent()``). ``options`` go to :func:`run_policy_hil`. The report's figures
    (:meth:`HilReport.summary`) are not written anywhere: the pipeline records what the stage returns.
    """
    if policy not in ("sparse", "neural"):
        raise ValueError(f"policy must be 'sparse' or 'neural', got {policy!r}")
    obj = run.load_model("policy") if policy == "sparse" else run.load_agent()
    seed = int(run.config.seed) if seed is None else int(seed)
    if board == "onnx" and options.get("onnx_path") is None:
        exported = Path(run.path) / "export" / ("sparse_policy.onnx" if policy == "sparse" else "policy.onnx")
        if exported.is_file():  # what `sindyrl export` wrote; otherwise export into the firmware directory
            options["onnx_path"] = exported
    report = run_policy_hil(
        obj, lambda: run.make_env(), board=board, work_dir=run.firmware_dir, episodes=episodes, seed=seed,
        vecnormalize=run.load_vecnormalize() if policy == "neural" else None,
        obs_names=run.obs_names, action_names=run.action_names, echo=echo, **options,
    )
    echo(report.format())
    return report
