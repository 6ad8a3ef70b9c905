"""Firmware benchmark: flash, RAM and instructions per policy call on the emulated Cortex-M4F.

Builds the mps2-an386 firmware for a sparse policy and for neural MLP
policies, reads flash and RAM from arm-none-eabi-size, and counts
instructions per policy call under QEMU ``-icount shift=0`` (exact and
repeatable). The baseline, measured in the same run, is the same firmware
serving a constant policy (one term): every figure is also given as the
increment over it and as a ratio to the sparse policy. Then closed-loop HIL
on Pendulum-v1 (host board and QEMU board, same episodes) and the neural
C code on the Cortex-M4F against onnxruntime.

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

from firmware_bridge.boards import QemuBoard
from firmware_bridge.build import build_firmware, missing_tools
from firmware_bridge.codegen import generate_c, neural_spec_from_sb3
from firmware_bridge.link import BoardLink
from sindyrl.sparse import SparseModel

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    run: str | None = None  # a run directory: benchmark its sparse policy and its agent instead
    calls: int = 2000  # policy calls per instruction count (one SysTick tick = 40 instructions)
    n_obs: int = 5  # observations the count is averaged over (sin/cos cost depends on the input)
    seed: int = 0  # seeds the built-in policies and the observations
    episodes: int = 5  # HIL episodes per board
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


def constant_policy() -> SparseModel:
    return SparseModel(["cos_th", "sin_th", "th_dot"], ["u"], [()], np.zeros((1, 1)),
                       output_bounds=(np.array([-2.0]), np.array([2.0])), name="baseline")


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
                       output_bounds=(np.array([-2.0]), np.array([2.0])), name="policy")


def fourier_policy(seed: int) -> SparseModel:
    """Cart-pole-sized policy with Fourier terms: sin/cos of the pole angle, alone and times the other inputs
    (14 terms sharing 4 trigonometric factors, as a distilled swing-up policy on a Fourier library has)."""
    trig = [(1, "sin", 1.0), (1, "cos", 1.0), (1, "sin", 2.0), (1, "cos", 2.0)]
    terms = [(), ((0, "pow", 1),), ((2, "pow", 1),), ((2, "pow", 3),), *[(f,) for f in trig],
             ((2, "pow", 1), trig[0]), ((2, "pow", 1), trig[1]), ((2, "pow", 2), trig[0]), ((0, "pow", 1), trig[1]),
             ((2, "pow", 1), trig[2]), ((0, "pow", 1), trig[3])]
    coef = np.random.default_rng(seed + 1).normal(size=(1, len(terms)))
    return SparseModel(["x", "th", "th_dot"], ["u"], terms, coef,
                       output_bounds=(np.array([-2.0]), np.array([2.0])), name="policy")


def pendulum_controller() -> SparseModel:
    """The small swing-up-ish controller the HIL tests use (5 terms, torque clipped to [-2, 2])."""
    return SparseModel(
        ["cos_th", "sin_th", "th_dot"], ["u"],
        [((1, "pow", 1),), ((2, "pow", 1),), ((0, "pow", 1), (2, "pow", 1)), ((2, "pow", 3),),
         ((0, "pow", 1), (1, "pow", 1))],
        coef=np.array([[-6.0, -1.5, 0.8, 0.05, -1.0]]), output_bounds=(np.array([-2.0]), np.array([2.0])),
        name="policy",
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

    The actor's weights get N(0, 0.2) noise first: an untrained actor's actions are all near 0, which
    would make the comparison easy. Returns (max abs difference, spread of the actions compared).
    """
    import onnxruntime as ort
    import torch

    from export.neural import export_policy

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in agent.policy.actor.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))

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
    import gymnasium as gym
    import stable_baselines3 as sb3

    return sb3.TD3("MlpPolicy", gym.make("Pendulum-v1"), seed=seed, device="cpu",
                   policy_kwargs={"net_arch": net_arch})


def measure(name: str, policy, work: Path, obs: np.ndarray, calls: int) -> dict:
    gen = generate_c(policy, "policy", work / name)
    build = build_firmware(gen, "mps2-an386")
    with QemuBoard(build.path) as board, BoardLink(board.url, timeout=10.0) as link:
        link.hello()
        ipc = [link.instructions_per_call(calls, o) for o in obs]
    n_params = neural_spec_from_sb3(policy).n_params if gen.kind == "neural" else policy.nnz
    return {"name": name, "kind": gen.kind, "parameters": int(n_params), "flash": build.flash, "ram": build.ram,
            "text": build.text, "data": build.data, "bss": build.bss,
            "instructions_per_call": float(np.mean(ipc)), "instructions_per_call_max": float(np.max(ipc))}


def table(rows: list[dict]) -> str:
    base = next(r for r in rows if r["name"] == "baseline")
    sparse = next(r for r in rows if r["kind"] == "sparse" and r["name"] != "baseline")
    lines = [
        "| firmware | parameters | flash (B) | RAM (B) | flash over baseline | RAM over baseline "
        "| instructions / call | × sparse |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['parameters']} | {r['flash']} | {r['ram']} | {r['flash'] - base['flash']:+d} "
            f"| {r['ram'] - base['ram']:+d} | {r['instructions_per_call']:.0f} "
            f"| {r['instructions_per_call'] / sparse['instructions_per_call']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    missing = missing_tools("mps2-an386", with_qemu=True)
    if missing:
        print(f"benchmarks/firmware.py needs {', '.join(missing)}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    obs = rng.uniform([-1, -1, -8], [1, 1, 8], size=(args.n_obs, 3)).astype(np.float32)
    policies: list[tuple[str, object]] = [("baseline", constant_policy())]
    if args.run:
        from sindyrl.runs import Run

        run = Run.open(args.run)
        policies += [("sparse (run)", run.load_model("policy")), ("neural (run)", run.load_agent())]
        obs = rng.uniform(-1, 1, size=(args.n_obs, len(run.obs_names))).astype(np.float32)
    else:
        policies += [
            ("sparse, degree 3, 20 terms", cubic_policy(args.seed)),
            ("sparse, Fourier, 14 terms", fourier_policy(args.seed)),
            ("neural 64x64 (tanh-squashed TD3 actor)", mlp_agent([64, 64], args.seed)),
            ("neural 256x256", mlp_agent([256, 256], args.seed)),
        ]
    with tempfile.TemporaryDirectory(prefix="sindyrl-fw-bench-") as tmp:
        rows = []
        for name, pol in policies:
            rows.append(measure(re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"), pol, Path(tmp), obs,
                                args.calls))
            rows[-1]["name"] = name
            print(f"{name}: flash {rows[-1]['flash']} B, RAM {rows[-1]['ram']} B, "
                  f"{rows[-1]['instructions_per_call']:.0f} instructions per call", flush=True)
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
        [f"HIL on Pendulum-v1, {args.episodes} episodes (seeds 0..{args.episodes - 1}), the 5-term test controller:",
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
            "<!-- firmware:start -->\n## Firmware: flash, RAM, instructions per call\n\n"
            f"Command: `{cmd}`. Target: mps2-an386 (Cortex-M4F, `-mfloat-abi=hard -mfpu=fpv4-sp-d16`, `-O2`, "
            "arm-none-eabi-gcc with newlib, nosys), the whole board firmware (protocol, UART HAL, start-up, "
            "policy). Flash = text + data, RAM = data + bss including the 8 KB stack reserve "
            "(arm-none-eabi-size). Instructions per call: QEMU `-icount shift=0`, SysTick around "
            f"{args.calls} calls through the board's model pointer, calibrated with a 2-instruction loop, "
            f"mean over {args.n_obs} observations. Baseline: the same firmware serving a constant policy. "
            "The sparse C computes each factor once and builds higher harmonics of sin/cos from the base "
            "frequency (codegen 2: degree-3 policy 129 -> 119, Fourier policy 369 -> 196 instructions per call "
            "against codegen 1 on the same policies).\n\n"
            f"{md}\n<!-- firmware:end -->"
        )
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text()
        new, n = re.subn(r"<!-- firmware:start -->.*?<!-- firmware:end -->", lambda m: section, text, flags=re.S)
        if n != 1:
            print("docs/benchmarks.md: firmware markers not found", file=sys.stderr)
            return 2
        doc.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
