"""Firmware benchmark: flash, RAM, instructions per policy call and HIL return on each emulated board.

For every board (mps2-an386 and STM32F405, Cortex-M4F with hard float; the nRF51 Cortex-M0 without an
FPU, in fixed point and in soft float) and every policy that fits it (sparse policies, neural MLP
policies), builds the firmware, reads flash and RAM from arm-none-eabi-size, counts instructions per
policy call under QEMU ``-icount shift=0`` (exact and repeatable) and runs closed-loop HIL episodes on
Pendulum-v1 against the same policy in Python (float64 numpy / SB3). The baseline, measured in the
same run, is the same firmware serving a constant policy. Then the host-vs-QEMU round-trip latency and
the neural C on the Cortex-M4F against onnxruntime.

    python benchmarks/firmware.py                 # built-in Pendulum-sized policies
    python benchmarks/firmware.py --run runs/X    # the run's sparse policy and agent
    python benchmarks/firmware.py --update-docs   # also rewrite the firmware section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.boards import QEMU_BOARDS, QemuBoard
from firmware_bridge.build import BuildError, build_firmware, missing_tools
from firmware_bridge.codegen import generate_c, neural_spec_from_sb3
from firmware_bridge.link import BoardLink
from sindyrl.sparse import SparseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.docs_output import numeric, slug, write_results, write_section  # noqa: E402


@dataclass
class Args:
    run: str | None = None  # a run directory: benchmark its sparse policy and its agent instead
    boards: str = "mps2-an386,stm32f405,microbit"  # emulated boards (firmware_bridge.boards.QEMU_BOARDS)
    calls: int = 2000  # sparse policy calls per instruction count (one timer tick = 40-62 instructions)
    neural_calls: int = 100  # neural policy calls per instruction count
    n_obs: int = 5  # observations the count is averaged over (sin/cos cost depends on the input)
    seed: int = 0  # seeds the built-in policies and the observations
    episodes: int = 5  # HIL episodes per row (Pendulum-v1, reset seeds 0..episodes-1)
    parity_obs: int = 1000  # observations for the neural C vs onnxruntime comparison
    out: str = "results/firmware.json"  # where the figures go
    update_docs: bool = False  # rewrite the <!-- firmware --> section of docs/benchmarks.md


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in vars(Args()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(default) if default is not None else str, default=default)
    return Args(**vars(p.parse_args()))


#: Pendulum-v1's observation box (cos, sin, angular velocity): the input bounds of the built-in policies
PENDULUM_BOUNDS = (np.array([-1.0, -1.0, -8.0]), np.array([1.0, 1.0, 8.0]))


def constant_policy() -> SparseModel:
    return SparseModel(["cos_th", "sin_th", "th_dot"], ["u"], [()], np.zeros((1, 1)),
                       output_bounds=(np.array([-2.0]), np.array([2.0])), input_bounds=PENDULUM_BOUNDS,
                       name="baseline")


def cubic_policy(seed: int) -> SparseModel:
    """Pendulum-sized distilled policy: full degree-3 polynomial in 3 inputs (20 terms, all nonzero)."""
    terms = [()]
    for i in range(3):
        terms.append(((i, "pow", 1),))
    for i in range(3):
        for j in range(i, 3):
            terms.append(((i, "pow", 1), (j, "pow", 1)))
    for i in range(3):
        for j in range(i, 3):
            for k in range(j, 3):
                terms.append(((i, "pow", 1), (j, "pow", 1), (k, "pow", 1)))
    coef = np.random.default_rng(seed).normal(size=(1, len(terms)))
    return SparseModel(["cos_th", "sin_th", "th_dot"], ["u"], terms, coef,
                       output_bounds=(np.array([-2.0]), np.array([2.0])), input_bounds=PENDULUM_BOUNDS, name="policy")


def fourier_policy(seed: int) -> SparseModel:
    """Policy with Fourier terms: sin/cos of the second input, alone and times the others (14 terms sharing
    4 trigonometric factors, as a distilled swing-up policy on a Fourier library has). On Pendulum-v1 its
    inputs are (cos, sin, angular velocity)."""
    trig = [(1, "sin", 1.0), (1, "cos", 1.0), (1, "sin", 2.0), (1, "cos", 2.0)]
    terms = [(), ((0, "pow", 1),), ((2, "pow", 1),), ((2, "pow", 3),), *[(f,) for f in trig],
             ((2, "pow", 1), trig[0]), ((2, "pow", 1), trig[1]), ((2, "pow", 2), trig[0]), ((0, "pow", 1), trig[1]),
             ((2, "pow", 1), trig[2]), ((0, "pow", 1), trig[3])]
    coef = np.random.default_rng(seed + 1).normal(size=(1, len(terms)))
    return SparseModel(["x", "th", "th_dot"], ["u"], terms, coef,
                       output_bounds=(np.array([-2.0]), np.array([2.0])), input_bounds=PENDULUM_BOUNDS, name="policy")


def pendulum_controller() -> SparseModel:
    """The small swing-up-ish controller the HIL tests use (5 terms, torque clipped to [-2, 2])."""
    return SparseModel(
        ["cos_th", "sin_th", "th_dot"], ["u"],
        [((1, "pow", 1),), ((2, "pow", 1),), ((0, "pow", 1), (2, "pow", 1)), ((2, "pow", 3),),
         ((0, "pow", 1), (1, "pow", 1))],
        coef=np.array([[-6.0, -1.5, 0.8, 0.05, -1.0]]), output_bounds=(np.array([-2.0]), np.array([2.0])),
        input_bounds=PENDULUM_BOUNDS, name="policy",
    )


def hil_rows(episodes: int, work: Path) -> list[dict]:
    import gymnasium as gym

    from firmware_bridge.hil import run_policy_hil

    rows = []
    for board in ("host", "qemu"):
        r = run_policy_hil(pendulum_controller(), lambda: gym.make("Pendulum-v1"), board=board,
                           work_dir=work / f"hil-{board}", episodes=episodes, seed=0, echo=lambda s: None)
        rows.append({"board": board, "return_mean": float(np.mean(r.returns)),
                     "reference_return_mean": float(np.mean(r.reference_returns)),
                     "return_rel_diff_max": r.return_rel_diff_max, "max_action_diff": r.max_action_diff,
                     "latency_p50_ms": r.latency_p50_ms, "latency_p99_ms": r.latency_p99_ms,
                     "protocol_errors": r.protocol_errors})
    return rows


def neural_parity(agent, n_obs: int, seed: int, work: Path) -> tuple[float, float]:
    """Max abs action difference, neural C on the Cortex-M4F vs the exported ONNX file in onnxruntime.

    Returns (max abs difference, spread of the actions compared).
    """
    import onnxruntime as ort

    from export.neural import export_policy

    path = work / "policy.onnx"
    export_policy(agent, path, n_states=1000)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    obs = np.random.default_rng(seed + 1).uniform([-1, -1, -8], [1, 1, 8], size=(n_obs, 3)).astype(np.float32)
    want = sess.run(None, {sess.get_inputs()[0].name: obs})[0]
    build = build_firmware(generate_c(agent, "policy", work / "parity"), "mps2-an386")
    with QemuBoard(build.path) as board, BoardLink(board.url, timeout=10.0) as link:
        got = np.array([link.act(o) for o in obs])
    return float(np.max(np.abs(got - want))), float(np.ptp(want))


def mlp_agent(net_arch: list[int], seed: int):
    """An untrained TD3 actor with its weights spread by N(0, 0.2) noise: its actions then use the whole
    range, so the comparisons with Python are not trivially exact."""
    import gymnasium as gym
    import stable_baselines3 as sb3
    import torch

    agent = sb3.TD3("MlpPolicy", gym.make("Pendulum-v1"), seed=seed, device="cpu",
                    policy_kwargs={"net_arch": net_arch})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in agent.policy.actor.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return agent


def board_row(name: str, policy, board: str, real: str | None, work: Path, obs: np.ndarray, calls: int,
              make_env, episodes: int) -> dict:
    """One table row: build for ``board``, count instructions per call on ``obs``, run HIL against Python."""
    from firmware_bridge.hil import hil_episodes
    from sindyrl.evaluation import evaluate_policy

    sparse = isinstance(policy, SparseModel)
    machine = QEMU_BOARDS[board]
    row = {"board": board, "arithmetic": real if sparse else ("float" if machine.has_fpu else "soft float"),
           "name": name, "kind": "sparse" if sparse else "neural"}
    if sparse and real == "float" and not machine.has_fpu:
        row["arithmetic"] = "soft float"
    row["parameters"] = int(policy.nnz if sparse else neural_spec_from_sb3(policy).n_params)
    tag = re.sub(r"[^a-z0-9]+", "_", f"{board} {real} {name}".lower()).strip("_")
    gen = generate_c(policy, "policy", work / tag, **({"real": real} if sparse else {}))
    try:
        build = build_firmware(gen, machine.target)
    except BuildError as e:
        overflow = re.search(r"region `?(\w+)'? overflowed by (\d+) bytes", str(e))
        row["fits"] = False
        row["note"] = (f"does not fit: {overflow.group(1)} overflowed by {overflow.group(2)} bytes" if overflow
                       else "build failed")
        return row
    if sparse:
        def reference(o):
            return policy.evaluate(o)
    else:
        def reference(o):
            return policy.predict(o, deterministic=True)[0]
    with QemuBoard(build.path, board=board) as qb, BoardLink(qb.url, timeout=60.0) as link:
        link.hello()
        ipc = [link.instructions_per_call(calls, o) for o in obs]
        res = hil_episodes(link, make_env, reference, n_episodes=episodes, seed=0)
        errors = link.stats.protocol_errors
    ref = [float(v) for v in evaluate_policy(reference, make_env, n_episodes=episodes, seed=0)]
    b, r = np.asarray(res["returns"]), np.asarray(ref)
    row.update({
        "fits": True, "flash": build.flash, "ram": build.ram, "text": build.text, "data": build.data, "bss": build.bss,
        "instructions_per_call": float(np.mean(ipc)), "instructions_per_call_max": float(np.max(ipc)),
        "return_board": float(np.mean(b)), "return_python": float(np.mean(r)),
        "return_rel_diff_max": float(np.max(np.abs(b - r) / np.maximum(np.abs(r), 1e-12))),
        "max_action_diff": res["max_action_diff"], "protocol_errors": int(errors),
        "error_bound": None if gen.error_bound is None else float(np.max(gen.error_bound)),
    })
    return row


def table(rows: list[dict]) -> str:
    base = {(r["board"], r["arithmetic"]): r for r in rows if r["name"] == "baseline" and r.get("fits")}
    lines = [
        "| board | arithmetic | policy | parameters | flash (B) | RAM (B) | flash over baseline "
        "| instructions / call | HIL return (board) | HIL return (Python) | max rel. return diff "
        "| max action diff | protocol errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r['board']} | {r['arithmetic']} | {r['name']} | {r['parameters']} "
        if not r.get("fits"):
            lines.append(head + f"| {r['note']} | | | | | | | | |")
            continue
        b = base.get((r["board"], r["arithmetic"]))
        over = f"{r['flash'] - b['flash']:+d}" if b is not None else ""
        lines.append(
            head + f"| {r['flash']} | {r['ram']} | {over} | {r['instructions_per_call']:.0f} "
            f"| {r['return_board']:.3f} | {r['return_python']:.3f} | {r['return_rel_diff_max']:.1e} "
            f"| {r['max_action_diff']:.1e} | {r['protocol_errors']} |"
        )
    return "\n".join(lines)


def main() -> int:
    import gymnasium as gym

    args = parse_args()
    boards = [b for b in args.boards.split(",") if b]
    unknown = [b for b in boards if b not in QEMU_BOARDS]
    if unknown:
        print(f"--boards: unknown {unknown}; expected names from {sorted(QEMU_BOARDS)}", file=sys.stderr)
        return 2
    missing = missing_tools("mps2-an386", with_qemu=True)
    if missing:
        print(f"benchmarks/firmware.py needs {', '.join(missing)}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    obs = rng.uniform([-1, -1, -8], [1, 1, 8], size=(args.n_obs, 3)).astype(np.float32)

    def pendulum():
        return gym.make("Pendulum-v1")

    make_env = pendulum
    policies: list[tuple[str, object]] = [("baseline", constant_policy())]
    if args.run:
        from sindyrl.runs import Run

        run = Run.open(args.run)
        policies += [("sparse (run)", run.load_model("policy")), ("neural (run)", run.load_agent())]
        obs = rng.uniform(-1, 1, size=(args.n_obs, len(run.obs_names))).astype(np.float32)
        make_env = run.make_env
    else:
        policies += [
            ("sparse, 5-term controller", pendulum_controller()),
            ("sparse, degree 3, 20 terms", cubic_policy(args.seed)),
            ("sparse, Fourier, 14 terms", fourier_policy(args.seed)),
            ("neural 64x64 (tanh-squashed TD3 actor)", mlp_agent([64, 64], args.seed)),
            ("neural 256x256", mlp_agent([256, 256], args.seed)),
        ]
    with tempfile.TemporaryDirectory(prefix="sindyrl-fw-bench-") as tmp:
        rows = []
        for board in boards:
            has_fpu = QEMU_BOARDS[board].has_fpu
            for name, pol in policies:
                sparse = isinstance(pol, SparseModel)
                for real in (["float"] if has_fpu else ["fixed", "float"]) if sparse else [None]:
                    row = board_row(name, pol, board, real, Path(tmp), obs, args.calls if sparse else args.neural_calls,
                                    make_env, args.episodes)
                    rows.append(row)
                    print(f"{board} {row['arithmetic']} {name}: " + (
                        f"flash {row['flash']} B, RAM {row['ram']} B, {row['instructions_per_call']:.0f} instructions "
                        f"per call, HIL return {row['return_board']:.3f} vs {row['return_python']:.3f} in Python, "
                        f"{row['protocol_errors']} protocol errors" if row["fits"] else row["note"]), flush=True)
        hil = hil_rows(args.episodes, Path(tmp))
        neural = next(p for n, p in policies if n.startswith("neural"))
        parity, spread = neural_parity(neural, args.parity_obs, args.seed, Path(tmp))
    print(f"neural C on the Cortex-M4F vs onnxruntime: max abs action difference {parity:.2e} "
          f"(actions spanning {spread:.2f})")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "hil": hil, "neural_parity_max_abs": parity,
                               "neural_parity_action_spread": spread}, indent=1))
    host = next(h for h in hil if h["board"] == "host")
    md = table(rows) + "\n\n" + "\n".join(
        ["Round trip on the host and in QEMU (mps2-an386), same HIL, the 5-term controller:",
         "",
         "| board | return (board) | return (Python) | max rel. return diff | max action diff "
         "| round trip p50 / p99 (ms) | p50 × host | protocol errors |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
        + [f"| {h['board']} | {h['return_mean']:.3f} | {h['reference_return_mean']:.3f} "
           f"| {h['return_rel_diff_max']:.1e} | {h['max_action_diff']:.1e} "
           f"| {h['latency_p50_ms']:.3f} / {h['latency_p99_ms']:.3f} "
           f"| {h['latency_p50_ms'] / host['latency_p50_ms']:.1f} | {h['protocol_errors']} |" for h in hil]
        + ["", f"Neural C (emlearn eml_net, float32) on the Cortex-M4F against onnxruntime on the exported "
               f"ONNX file, 64x64 TD3 actor with its weights spread by N(0, 0.2) noise, {args.parity_obs} random "
               f"observations: max abs action difference {parity:.1e} (actions spanning {spread:.2f} of [-2, 2])."]
    )
    print(md)
    if args.update_docs:
        cmd = "python benchmarks/firmware.py --update-docs" + (f" --run {args.run}" if args.run else "")
        section = (
            "## Firmware: flash, RAM, instructions per call, HIL on each board\n\n"
            f"Command: `{cmd}`. Boards (docs/boards.md): mps2-an386 and stm32f405 (Cortex-M4F, "
            "`-mfloat-abi=hard -mfpu=fpv4-sp-d16`), microbit (nRF51822, Cortex-M0 without an FPU, "
            "`-mfloat-abi=soft`: the sparse policies in fixed point and in soft float, the neural ones in soft "
            "float); `-O2`, arm-none-eabi-gcc with newlib, nosys; the whole board firmware (protocol, UART HAL, "
            "start-up, policy). Flash = text + data, RAM = data + bss including the stack reserve (8 KB on the "
            "M4F boards, 4 KB on the M0). Instructions per call: QEMU `-icount shift=0`, the board's timer "
            f"(SysTick, or TIMER0 on the nRF51) around {args.calls} calls ({args.neural_calls} for neural "
            "policies) through the board's model pointer, calibrated with a 2-instruction loop, mean over "
            f"{args.n_obs} observations. HIL: Pendulum-v1, {args.episodes} episodes (reset seeds "
            f"0..{args.episodes - 1}), every action from the board, against the same policy in Python (float64 "
            "numpy for sparse policies, SB3 predict for neural ones). Baseline: the same firmware serving a "
            "constant policy. The sparse C computes each factor once and builds higher harmonics of sin/cos "
            "from the base frequency (codegen 2: degree-3 policy 129 -> 119, Fourier policy 369 -> 196 "
            "instructions per call on mps2-an386 against codegen 1). Fixed point: 16-bit Q formats from the "
            "input bounds, error bound in the generated header.\n\n"
            f"{md}"
        )
        write_section("firmware", section)
        write_results("firmware", {"neural_parity_max_abs": parity, **{slug(r["name"]): numeric(r) for r in rows},
                                   "hil": {h["board"]: numeric(h) for h in hil}}, cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
