"""Benchmark: per-call latency and file size of a policy in torch, onnxruntime (float, int8) and sparse form.

One run, one machine, one thread everywhere. For each neural policy (the
trained agent of ``--run`` when given, and an SB3-default 256x256 SAC actor),
the same deterministic action is computed by

    torch        the exported module (policy networks + rescale/clip) under inference_mode
    sb3 predict  model.predict(obs, deterministic=True), what users call in Python
    ort float    onnxruntime on policy.onnx
    ort int8     onnxruntime on policy.int8.onnx (dynamic quantisation)

and a sparse polynomial policy by ``SparseModel.evaluate`` (numpy) and by
onnxruntime on its ONNX graph. Latency is the median over repeats of the mean
per-call time at batch 1 and batch 1024; ratios are against torch at the same
batch size, measured in the same run. With ``--run``, the real-env return of
the float and int8 policies is compared on the same reset seeds. Writes
results/inference.json and, with --write-docs, the ``inference`` section of
docs/benchmarks.md.

    .venv/bin/python benchmarks/inference.py --run runs/pend1 --write-docs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations_with_replacement
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# run as a script, this file's directory comes first on sys.path and a sibling's name could hide a package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from benchmarks.docs_output import slug, write_results, write_section  # noqa: E402
from export import export_policy, export_sparse_model, load_onnx, quantize, sample_states  # noqa: E402
from export.neural import PolicyModule, policy_family  # noqa: E402
from sindyrl.sparse import SparseModel  # noqa: E402


@dataclass
class Args:
    run: str = ""
    """run directory whose agent (and sparse policy, data bounds) to benchmark; empty: only the SAC actor"""
    repeats: int = 7
    """timing repeats (the median is reported)"""
    min_time: float = 0.2
    """seconds per repeat (the number of calls is calibrated to reach it)"""
    net_arch: str = "256,256"
    """hidden layers of the stand-alone SAC actor (SB3's default)"""
    n_states: int = 10_000
    """parity states per exported file"""
    episodes: int = 10
    """real episodes for the float/int8 return comparison (with --run)"""
    seed: int = 0
    """seed of states, networks and reset seeds"""
    out: str = "results/inference.json"
    """where the JSON results go"""
    write_docs: bool = False
    """rewrite the inference section of docs/benchmarks.md (and write docs/results/inference.json)"""
    docs: str = "docs/benchmarks.md"
    """the markdown file --write-docs rewrites (relative to the repository root)"""


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    return Args(**vars(p.parse_args()))


def per_call_us(fn: Callable[[], object], repeats: int, min_time: float) -> float:
    """Median over repeats of the mean time of one call, in microseconds."""
    fn()  # warm-up (allocations, lazy init)
    n, t = 1, 0.0
    while True:  # calibrate the number of calls per repeat
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t >= min_time / 4 or n >= 1 << 20:
            break
        n *= 4
    n = max(1, int(n * min_time / max(t, 1e-9)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return float(np.median(times) * 1e6)


def distil_sparse_policy(act: Callable[[np.ndarray], np.ndarray], low: np.ndarray, high: np.ndarray,
                         obs_names: list[str], act_names: list[str], act_low: np.ndarray, act_high: np.ndarray,
                         seed: int) -> SparseModel:
    """A small sparse policy for timing: degree-3 polynomial least squares on the neural actions, thresholded.

    Not the project's distillation (sindyrl.policy); only a realistic model of the size it produces.
    """
    n = len(obs_names)
    terms = [()] + [tuple((i, "pow", 1) for i in c) for d in (1, 2, 3) for c in combinations_with_replacement(range(n), d)]
    X = sample_states(low, high, n=5000, seed=seed).astype(np.float64)
    Y = np.asarray(act(X.astype(np.float32)), dtype=np.float64).reshape(len(X), -1)
    full = SparseModel(obs_names, act_names, terms, np.zeros((len(act_names), len(terms))))
    F = full.features(X)
    coef = np.linalg.lstsq(F, Y, rcond=None)[0].T
    keep = np.abs(coef) >= 0.05 * np.abs(coef).max(axis=1, keepdims=True)
    for o in range(coef.shape[0]):  # refit on the kept terms
        coef[o] = 0.0
        coef[o, keep[o]] = np.linalg.lstsq(F[:, keep[o]], Y[:, o], rcond=None)[0]
    return SparseModel(obs_names, act_names, terms, coef, output_bounds=(act_low, act_high),
                       input_bounds=(low, high), name="policy").pruned()


def bench_policy(label: str, agent, workdir: Path, low: np.ndarray, high: np.ndarray, args: Args,
                 obs_names: list[str], act_names: list[str], checkpoint: Path | None,
                 make_env: Callable[[], gym.Env] | None, sparse: SparseModel | None) -> dict:
    from sindyrl.evaluation import evaluate_policy

    f_res = export_policy(agent, workdir / f"{label}.onnx", obs_names=obs_names, action_names=act_names,
                          checkpoint=checkpoint, low=low, high=high, n_states=args.n_states, seed=args.seed)
    q_res = quantize(f_res.path)
    fm, qm = load_onnx(f_res.path, threads=1), load_onnx(q_res.path, threads=1)
    module = PolicyModule(agent.policy, policy_family(agent)).eval()
    space = agent.action_space
    from_run = sparse is not None
    if sparse is None:
        sparse = distil_sparse_policy(fm, low, high, obs_names, act_names, space.low, space.high, args.seed)
    s_res = export_sparse_model(sparse, workdir / f"{label}_sparse.onnx", n_states=args.n_states, seed=args.seed)
    sm = load_onnx(s_res.path, threads=1)

    out: dict = {"label": label, "algorithm": type(agent).__name__,
                 "neural_params": int(sum(p.numel() for p in agent.policy.parameters()
                                          if p.requires_grad and _is_actor_param(agent, p))),
                 "sparse_nnz": sparse.nnz, "sparse_source": "run" if from_run else "least-squares stand-in",
                 "latency_us": {}, "bytes": {}}
    out["bytes"] = {
        "checkpoint_zip": checkpoint.stat().st_size if checkpoint is not None else None,
        "onnx_float": f_res.n_bytes, "onnx_int8": q_res.n_bytes,
        "sparse_json": len(sparse.to_json(indent=None).encode()), "sparse_onnx": s_res.n_bytes,
    }
    out["parity_max_abs"] = {"onnx_float": f_res.parity_max_abs, "sparse_onnx": s_res.parity_max_abs}
    out["n_states"] = args.n_states
    X_all = sample_states(low, high, n=1024, seed=args.seed + 1)
    out["int8_max_abs_action_change"] = float(np.abs(qm(X_all) - fm(X_all)).max())
    for batch in (1, 1024):
        X = X_all[:batch]
        Xt = torch.as_tensor(X)
        X64 = X.astype(np.float64)
        feeds = {"float": (fm, {fm.input_name: X}), "int8": (qm, {qm.input_name: X}),
                 "sparse": (sm, {sm.input_name: X})}

        def torch_call(Xt=Xt):
            with torch.inference_mode():
                return module(Xt)

        calls = {
            "torch": torch_call,
            "sb3_predict": lambda X=X: agent.predict(X, deterministic=True),
            "ort_float": lambda f=feeds["float"]: f[0].session.run(None, f[1]),
            "ort_int8": lambda f=feeds["int8"]: f[0].session.run(None, f[1]),
            "numpy_sparse": lambda X=X64: sparse.evaluate(X),
            "ort_sparse": lambda f=feeds["sparse"]: f[0].session.run(None, f[1]),
        }
        out["latency_us"][str(batch)] = {k: per_call_us(fn, args.repeats, args.min_time) for k, fn in calls.items()}
    if make_env is not None:
        seed = args.seed
        rets = {name: evaluate_policy(fn, make_env, n_episodes=args.episodes, seed=seed)
                for name, fn in (("sb3_predict", lambda o: agent.predict(o, deterministic=True)[0]),
                                 ("onnx_float", fm), ("onnx_int8", qm))}
        if from_run:  # the timing stand-in is not a distilled policy: its return would mislead
            rets["sparse"] = evaluate_policy(sparse.evaluate, make_env, n_episodes=args.episodes, seed=seed)
        out["return_mean"] = {k: float(np.mean(v)) for k, v in rets.items()}
        out["return_episodes"] = args.episodes
    return out


def _is_actor_param(agent, p: torch.nn.Parameter) -> bool:
    """Parameters used by the deterministic action (the actor, not critics or value heads)."""
    fam = policy_family(agent)
    pol = agent.policy
    if fam in ("sac", "td3"):
        mods = [pol.actor]
    else:
        mods = [pol.pi_features_extractor, pol.mlp_extractor.policy_net, pol.action_net]
    return any(p is q for m in mods for q in m.parameters())


def table(results: list[dict], cmd: str) -> str:
    names = [("torch", "torch module"), ("sb3_predict", "SB3 `predict`"), ("ort_float", "onnxruntime float32"),
             ("ort_int8", "onnxruntime int8"), ("numpy_sparse", "numpy `SparseModel.evaluate`"),
             ("ort_sparse", "onnxruntime sparse graph")]
    rows = ["## Inference latency and size (export)", "",
            f"Command: `{cmd}` ({platform.machine()}, one thread for torch and onnxruntime, "
            f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}). "
            "Per-call latency: median of repeats of the mean over many calls; ratio = torch module time / this "
            "time at the same batch size (higher is faster), measured in the same run.", ""]
    for r in results:
        lat = r["latency_us"]
        src = "the run's distilled" if r["sparse_source"] == "run" else "a least-squares timing stand-in,"
        rows += [f"### {r['label']} ({r['algorithm']}, {r['neural_params']:,} actor parameters; sparse policy: "
                 f"{src} {r['sparse_nnz']} nonzero coefficients)", "",
                 "| path | batch 1 (µs) | ratio | batch 1024 (µs) | ratio |", "|---|---:|---:|---:|---:|"]
        for k, name in names:
            rows.append(f"| {name} | {lat['1'][k]:.1f} | {lat['1']['torch'] / lat['1'][k]:.2f} | "
                        f"{lat['1024'][k]:.1f} | {lat['1024']['torch'] / lat['1024'][k]:.2f} |")
        b = r["bytes"]
        rows += ["", "| file | bytes | ratio to float ONNX |", "|---|---:|---:|"]
        for k, name in (("checkpoint_zip", "SB3 checkpoint (.zip, with critic and optimiser)"),
                        ("onnx_float", "policy.onnx (float32)"), ("onnx_int8", "policy.int8.onnx"),
                        ("sparse_json", "sparse policy JSON"), ("sparse_onnx", "sparse_policy.onnx")):
            if b.get(k) is not None:
                rows.append(f"| {name} | {b[k]:,} | {b[k] / b['onnx_float']:.2f} |")
        p = r["parity_max_abs"]
        rows += ["", f"Parity (max abs vs Python, {r['n_states']:,} states): float ONNX {p['onnx_float']:.2g}, sparse ONNX "
                 f"{p['sparse_onnx']:.2g}. int8 max abs action change on 1,024 states: "
                 f"{r['int8_max_abs_action_change']:.3g}."]
        if "return_mean" in r:
            m = r["return_mean"]
            rows.append(f"Real-env return over {r['return_episodes']} episodes (same reset seeds): SB3 predict "
                        f"{m['sb3_predict']:.1f}, float ONNX {m['onnx_float']:.1f}, int8 ONNX {m['onnx_int8']:.1f} "
                        f"(change {m['onnx_int8'] - m['onnx_float']:+.1f})"
                        + (f", sparse policy {m['sparse']:.1f}." if "sparse" in m else "."))
        rows.append("")
    rows.append("Absolute times are for orientation only (shared 2-core machine); the ratios are the result.")
    return "\n".join(rows) + "\n"


def figures(results: list[dict]) -> dict:
    """The headline figures for docs/results/inference.json: per policy, latency ratios to torch, sizes, returns."""
    out: dict = {}
    for r in results:
        lat, b = r["latency_us"], r["bytes"]
        key = "run" if r["sparse_source"] == "run" else slug(r["label"].split(" (")[0])
        out[key] = {
            "neural_params": r["neural_params"], "sparse_nnz": r["sparse_nnz"],
            "latency_ratio_to_torch": {f"batch{n}": {k: lat[n]["torch"] / v for k, v in lat[n].items() if k != "torch"}
                                       for n in lat},
            "latency_us": {f"batch{n}": lat[n] for n in lat},
            "bytes": b, "bytes_ratio_to_onnx_float": {k: v / b["onnx_float"] for k, v in b.items() if v is not None},
            "parity_max_abs": r["parity_max_abs"], "int8_max_abs_action_change": r["int8_max_abs_action_change"],
        }
        if "return_mean" in r:
            out[key]["return_mean"] = r["return_mean"]
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.run:
            from sindyrl.runs import Run

            run = Run.open(args.run)
            agent = run.load_agent()
            data = run.load_data()
            low = np.vstack([data.obs, data.next_obs]).min(axis=0)
            high = np.vstack([data.obs, data.next_obs]).max(axis=0)
            sparse = run.load_model("policy") if run.model_path("policy").is_file() else None
            results.append(bench_policy(f"run {Path(args.run).name}", agent, work, low, high, args, run.obs_names,
                                        run.action_names, run.agent_path, run.make_env, sparse))
        from stable_baselines3 import SAC

        env = gym.make("Pendulum-v1")
        arch = [int(v) for v in args.net_arch.split(",") if v.strip()]
        sac = SAC("MlpPolicy", env, seed=args.seed, device="cpu", policy_kwargs={"net_arch": arch})  # untrained
        sac.save(work / "sac.zip")
        space = env.observation_space
        label = f"SAC {'x'.join(map(str, arch))} (untrained, Pendulum-v1 spaces)"
        results.append(bench_policy(label, sac, work, space.low, space.high,
                                    args, ["cos_th", "sin_th", "th_dot"], ["u"], work / "sac.zip", None, None))
    # the command line that reproduces these figures (non-default options only)
    opts = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if not isinstance(v, bool) and k != "out" and v != getattr(Args, k)]
    opts = [o for o in opts if not o.startswith("--docs ")]  # where the section goes, not what is measured
    cmd = " ".join([".venv/bin/python benchmarks/inference.py", *opts] + (["--write-docs"] if args.write_docs else []))
    doc = {"args": dataclasses.asdict(args), "machine": platform.platform(), "results": results}
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    text = table(results, cmd)
    print(text)
    if args.write_docs:
        write_section("inference", text, ROOT / args.docs)
        write_results("inference", figures(results), cmd, ROOT / args.docs)


if __name__ == "__main__":
    main()
