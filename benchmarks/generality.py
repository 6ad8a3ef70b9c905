"""Systems sindyrl has never seen, with defaults: does every stage run (or skip with its reason), and how good is it?

Each system's config names only the env (plus a known reward function for a ``module:Class`` system that has
no built-in one), so every other setting is sindyrl's default but one that learns nothing: the final
evaluation is 10 episodes (``dyna.final_eval_episodes``; the default pays a fifth of the training's real steps,
a single episode on a 1,000-step task): model selection, the Dyna budget, the
distillation, the control, export and HIL stages. For each system the table gives which stages ran and which
were skipped (with the reason), the real steps of training, the final return of the neural and the sparse
policy and of MPC, against SAC trained on the real env for the same number of real training steps, and the
zero-action and random-action returns, all on the same reset seeds.

    python benchmarks/generality.py --jobs 2 --write-docs
    python benchmarks/generality.py --systems double_well_known --quick     # a smoke test

"How far": (return - random) / (SAC - random), 1 = as good as SAC at the same real-step budget.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "envs"))  # "double_well:DoubleWell", "lorenz:ControlledLorenz"

#: name -> (what it is, the defaults-only config)
SYSTEMS: dict[str, tuple[str, dict]] = {
    "mountain_car": ("gymnasium classic control, continuous action; learned reward, episodes end at the goal",
                     {"env": {"id": "MountainCarContinuous-v0"}}),
    "inverted_pendulum": ("MuJoCo, terminates when the pole falls; built-in reward and termination",
                          {"env": {"id": "InvertedPendulum-v5"}}),
    "inverted_double_pendulum": ("MuJoCo, terminates when the tip drops; built-in reward and termination",
                                 {"env": {"id": "InvertedDoublePendulum-v5"}}),
    "dmc_cartpole_balance": ("dm_control cart-pole balance (another task than the swing-up), learned reward",
                             {"env": {"id": "dm_control/cartpole-balance-v0"}}),
    "dmc_pendulum_swingup": ("dm_control pendulum swing-up (a second domain): a reward of 1 only within 8 degrees "
                             "of upright, given as a module:function (dm_control has no built-in one in sindyrl)",
                             {"env": {"id": "dm_control/pendulum-swingup-v0"},
                              "reward": {"known": "dmc_rewards:pendulum_swingup"}}),
    "double_well_known": ("a module:Class system of our own with a cubic term; known module:function reward",
                          {"env": {"id": "double_well:DoubleWell"}, "reward": {"known": "double_well:reward"}}),
    "double_well_learned": ("the same system; learned reward",
                            {"env": {"id": "double_well:DoubleWell"}}),
    "lorenz_learned": ("a chaotic module:Class system of our own: the controlled Lorenz system, held on its "
                       "unstable fixed point C+; learned reward",
                       {"env": {"id": "lorenz:ControlledLorenz"}}),
    # not a new system: the termination gate of the issue, "a known reward, within 5,000 real steps"
    "inverted_pendulum_5k": ("inverted_pendulum with the training budget cut to 5,000 real steps "
                             "(`collect.max_real_steps`): the built-in reward is known, so only the surrogate's "
                             "termination tells the agent about falling",
                             {"env": {"id": "InvertedPendulum-v5"}, "collect": {"max_real_steps": 5000}}),
}
#: rows that rerun a system above with another budget: shown, not counted as systems
BUDGET_VARIANTS = {"inverted_pendulum_5k": "inverted_pendulum"}

QUICK = {"collect.random_steps": 300, "collect.steps_per_iteration": 100, "dyna.iterations": 2,
         "agent.initial_steps": 2048, "agent.steps_per_iteration": 1024, "distill.passes": 1,
         "distill.n_rollouts": 4, "env.max_episode_steps": 60}
EPISODES = 10  # baselines' evaluation episodes (the sindyrl run's final evaluation is its own)


def _set(data: dict, key: str, value) -> None:
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _returns(act, make_env, n: int, seed: int) -> list[float]:
    from sindyrl.evaluation import evaluate_policy

    return [float(r) for r in evaluate_policy(act, make_env, n, seed=seed)]


def run_system(name: str, runs_dir: str, seed: int, quick: bool) -> dict:
    """One system: the sindyrl pipeline with defaults, then SAC, zero and random actions on the same starts."""
    import copy

    from sindyrl.config import config_from_dict
    from sindyrl.pipeline import run_pipeline
    from sindyrl.runs import Run, limit_threads

    limit_threads(1)
    sys.path.insert(0, str(ROOT / "benchmarks" / "envs"))
    what, base = SYSTEMS[name]
    data = copy.deepcopy(base)
    data["seed"] = seed
    data["name"] = name
    if quick:
        for k, v in QUICK.items():
            _set(data, k, v)
    else:
        # evaluation only (no learning setting): the default final evaluation is a fifth of the training's real
        # steps, one episode on a 1,000-step task, too few to compare against SAC's 10-episode mean
        _set(data, "dyna.final_eval_episodes", EPISODES)
    cfg = config_from_dict(data, source=f"generality:{name}")
    path = Path(runs_dir) / f"{name}-s{seed}"
    t0 = time.time()
    if (path / "summary.json").is_file() and json.loads((path / "summary.json").read_text()).get("report_html"):
        run = Run.open(path)  # finished earlier: reuse it
    else:
        if (path / "config.yaml").is_file() and _same_learning(Run.open(path).config, cfg):
            run = Run.open(path)  # interrupted: the pipeline resumes (the Dyna loop from its last checkpoint)
        else:
            if path.exists():
                import shutil

                shutil.rmtree(path)
            run = Run.create(cfg, root=path.parent, name=path.name)
        log = open(path / "pipeline.log", "a")
        try:
            run_pipeline(run.config, run, echo=lambda *a: print(*a, file=log, flush=True), progress_bar=False)
        finally:
            log.close()
    s = run.read_summary()
    wall = time.time() - t0
    timings = json.loads((path / "manifest.json").read_text()).get("timings", {}) \
        if (path / "manifest.json").is_file() else {}
    n_real = int(s["real_steps_collect"])
    make = run.make_env
    env = make()
    space = env.action_space
    env.close()
    rng = np.random.default_rng(seed)
    out = {
        "system": name, "what": what, "env_id": cfg.env.id, "seed": seed, "path": str(path),
        "real_steps_train": n_real, "real_steps_total": s.get("real_steps_total"),
        "neural": s.get("eval_return_mean"), "neural_worst": s.get("eval_return_min"),
        "sparse": s.get("sparse_policy_return_mean"), "sparse_nnz": s.get("sparse_policy_nnz"),
        "mpc": s.get("control_mpc_return_mean"), "lqr": s.get("control_lqr_return_mean"),
        "skipped": s.get("skipped") or {}, "dynamics_library": s.get("dynamics_library"),
        # the stages' own wall times (manifest.json), so that a reused run still reports what it took
        "pipeline_seconds": float(sum(timings.values())) if timings else wall,
        # the Dyna loop's own time, summed over resumes (the manifest has the last attempt's: a resumed run
        # whose training had finished took seconds)
        "train_seconds": s.get("train_wall_seconds") or timings.get("train"), "distill_seconds": timings.get("distill"),
        "stages_ran": [k for k in ("train", "distill", "export", "control", "hil", "report")
                       if k not in (s.get("skipped") or {})],
    }
    n_eval = int(s.get("eval_episodes") or EPISODES)
    cache = path / "baselines.json"  # the baselines of this run, so that a rerun of the table costs nothing
    key = {"real_steps": n_real, "episodes": n_eval, "seed": seed}
    old = json.loads(cache.read_text()) if cache.is_file() else {}
    if old.get("key") == key:
        out.update(old["returns"])
    else:
        out["zero"] = float(np.mean(_returns(lambda o: np.zeros(space.shape), make, n_eval, seed)))
        out["random"] = float(np.mean(_returns(lambda o: rng.uniform(space.low, space.high), make, n_eval, seed)))
        out["sac"] = _sac(make, n_real, n_eval, seed)
        cache.write_text(json.dumps({"key": key, "returns": {k: out[k] for k in ("zero", "random", "sac")}}))
    for k in ("neural", "sparse", "mpc"):
        out[f"{k}_how_far"] = how_far(out[k], out["random"], out["sac"])
    return out


def how_far(value: float | None, random: float, sac: float) -> float | None:
    """(value - random) / (SAC - random); None where SAC is no better than random actions (the ratio then says
    nothing: the table shows the returns themselves)."""
    span = sac - random
    if value is None or span <= 1e-9 * max(1.0, abs(random)):
        return None
    return float((value - random) / span)


def meets(r: dict, key: str, fraction: float) -> bool:
    """At least ``fraction`` of the way from random to SAC; where SAC is no better than random, at least SAC."""
    if r.get(key) is None:
        return False
    hf = r.get(f"{key}_how_far")
    return hf >= fraction if hf is not None else r[key] >= r["sac"]


def _same_learning(a, b) -> bool:
    """The same run but for the later stages' options (whose defaults may have changed since it started)."""
    from sindyrl.config import config_to_dict

    da, db = config_to_dict(a), config_to_dict(b)
    for d in (da, db):
        d.pop("stages", None)
    return da == db


def _sac(make_env, n_steps: int, n_eval: int, seed: int) -> float:
    """SAC (SB3 defaults but learning_starts scaled to the budget) on the real env for ``n_steps`` real steps."""
    from stable_baselines3 import SAC

    from sindyrl.evaluation import sb3_act

    env = make_env()
    model = SAC("MlpPolicy", env, learning_starts=min(1000, max(100, n_steps // 10)), seed=seed, device="cpu",
                verbose=0)
    model.learn(n_steps)
    env.close()
    return float(np.mean(_returns(sb3_act(model), make_env, n_eval, seed)))


def _safe(name: str, runs_dir: str, seed: int, quick: bool) -> dict:
    try:
        return run_system(name, runs_dir, seed, quick)
    except Exception as e:  # one system failing is a finding: report it, keep the others
        return {"system": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


def _fmt(v, pattern="{:.1f}") -> str:
    return "–" if v is None else pattern.format(v)


def _minutes(seconds) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "## Generality: systems sindyrl has never seen, with defaults", "",
        f"Command: `{command}`. Each config names only the env (and, for the `module:Class` system with a known "
        "reward, its `module:function` reward); everything else is a default. Returns are final deterministic "
        "episodes on the same reset seeds for every controller. SAC is trained on the real env for as many real "
        "steps as sindyrl's training collected (evaluation steps are not counted for either). *How far* = "
        "(return − random) / (SAC − random).", "",
        "| system | stages ran / skipped | real steps (train) | neural (how far) | sparse (how far, nnz) | LQR | "
        "MPC | SAC | zero action | random | minutes (train / distill) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['system']} | **failed**: {r['error']} | | | | | | | | | |")
            continue
        skipped = "; ".join(f"{k}: {v}" for k, v in r["skipped"].items() if k != "robust") or "none"
        lines.append(
            f"| {r['system']} ({r['env_id']}) | {', '.join(r['stages_ran'])} / {skipped} | {r['real_steps_train']:,} | "
            f"{_fmt(r['neural'])} ({_fmt(r['neural_how_far'], '{:.0%}')}) | "
            f"{_fmt(r['sparse'])} ({_fmt(r['sparse_how_far'], '{:.0%}')}, {r['sparse_nnz']}) | {_fmt(r.get('lqr'))} | "
            f"{_fmt(r['mpc'])} | "
            f"{_fmt(r['sac'])} | {_fmt(r['zero'])} | {_fmt(r['random'])} | "
            f"{_minutes(r.get('train_seconds'))} / {_minutes(r.get('distill_seconds'))} |")
    systems = [r for r in rows if r["system"] not in BUDGET_VARIANTS]
    ok_n = [r for r in systems if "error" not in r and meets(r, "neural", 0.8)]
    ok_s = [r for r in systems if "error" not in r and meets(r, "sparse", 0.7)]
    both = [r for r in ok_n if r in ok_s]
    learned = [r for r in both if r.get("sparse_how_far") is not None]
    if systems:
        lines += ["", f"Neural policy at ≥ 80% of the way from random to SAC on {len(ok_n)} of {len(systems)} "
                  f"systems; sparse policy at ≥ 70% on {len(ok_s)}; both on {len(both)}, of which {len(learned)} "
                  "where SAC beat random actions (where SAC is no better than random, *how far* is –, and a policy "
                  "counts when it is at least as good as SAC: a weak test)"
                  + (f"; budget variants ({', '.join(f'`{k}`' for k in BUDGET_VARIANTS)}) are not counted"
                     if len(systems) < len(rows) else "") + "."]
    lines += ["", "What each system is:", ""]
    lines += [f"- `{r['system']}`: {r.get('what', '')}" + (f"; dynamics library chosen: {r['dynamics_library']}"
                                                         if r.get("dynamics_library") else "") for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--runs-dir", default="runs/generality")
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test of the script")
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"))
    args = p.parse_args(argv)
    names = [n for n in args.systems.split(",") if n]
    bad = [n for n in names if n not in SYSTEMS]
    if bad:
        p.error(f"unknown system(s) {bad}; known: {', '.join(SYSTEMS)}")
    rows: dict[str, dict] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(_safe, n, args.runs_dir, args.seed, args.quick): n for n in names}
        for f in as_completed(futs):
            r = f.result()
            rows[r["system"]] = r
            print(f"[{len(rows)}/{len(names)}] {r['system']}: " + (r["error"] if "error" in r else
                  f"neural {_fmt(r['neural'])}, sparse {_fmt(r['sparse'])}, LQR {_fmt(r.get('lqr'))}, MPC {_fmt(r['mpc'])}, SAC "
                  f"{_fmt(r['sac'])}, random {_fmt(r['random'])}, skipped {list(r['skipped'])}"), flush=True)
    ordered = [rows[n] for n in names]
    command = "python benchmarks/generality.py" + (f" --systems {args.systems}" if args.systems != ",".join(SYSTEMS)
                                                  else "") + (" --quick" if args.quick else "") + f" --jobs {args.jobs}"
    md = markdown(ordered, command)
    print(md)
    failed = [r for r in ordered if "error" in r]
    for r in failed:
        print(r["traceback"], file=sys.stderr)
    if args.write_docs and not failed:
        from benchmarks.docs_output import write_results, write_section

        write_section("generality", md, docs=args.docs)
        figures = {r["system"]: {k: r[k] for k in ("real_steps_train", "neural", "neural_how_far", "sparse",
                                                   "sparse_how_far", "sparse_nnz", "lqr", "mpc", "sac", "zero", "random",
                                                   "pipeline_seconds", "train_seconds", "distill_seconds")} for r in ordered}
        write_results("generality", figures, command, docs=args.docs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
