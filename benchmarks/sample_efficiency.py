"""Sample efficiency: sindyrl's Dyna loop (E-SINDy) against model-free SB3 PPO and SAC on the real env,
and against the same Dyna loop on a neural-network ensemble (Dyna-NN), same seeds.

For every (task, method, seed) it records the real-env evaluation return against the number of real
training steps (evaluation steps are counted separately), the return at fixed real-step budgets, the
real steps to reach a task threshold, and the wall time. It then distils the E-SINDy runs' neural
policies into sparse policies (``sindyrl.policy.distill_run``) for the compactness table.

Outputs: ``results/sample_efficiency.json`` (every trial and the aggregates), one JSON per trial under
``results/sample_efficiency/`` (reused on a restart while the settings it was run with are unchanged),
``results/sample_efficiency.png`` (return vs real steps, log x) and, with ``--write-docs``, the table in
docs/benchmarks.md and its headline figures in docs/results/sample_efficiency.json.

    python benchmarks/sample_efficiency.py --jobs 2 --write-docs   # the scaled benchmark (~1-2 hours on 2 cores)
    python benchmarks/sample_efficiency.py --quick --out-dir /tmp/se   # a smoke test, Pendulum only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.docs_output import write_results, write_section  # noqa: E402
from sindyrl.runs import limit_threads  # noqa: E402


@dataclass
class Args:
    tasks: str = "pendulum,cartpole_swingup,swimmer"
    """comma-separated tasks (pendulum, cartpole_swingup, swimmer)"""
    methods: str = "sindy,nn,ppo,sac"
    """comma-separated methods: sindy (Dyna, E-SINDy), nn (Dyna-NN), ppo, sac (model-free on the real env)"""
    seeds: str = ""
    """seeds per task, e.g. 'pendulum=3,cartpole_swingup=1' (default: the task's own)"""
    quick: bool = False
    """tiny budgets on Pendulum only (the test uses this)"""
    out_dir: str = "results"
    """where the JSON files and the plot go"""
    runs_dir: str = "runs/bench_sample_efficiency"
    """parent of the Dyna run directories"""
    distill: bool = True
    """distil the E-SINDy runs' policies for the compactness table"""
    write_docs: bool = False
    """replace the sample_efficiency section of --docs and write results/sample_efficiency.json beside it"""
    docs: str = "docs/benchmarks.md"
    """the markdown file --write-docs rewrites (relative to the repository root)"""
    fresh: bool = False
    """ignore stored per-trial results (default: reuse them, so a restart only runs what is missing)"""
    deadline: str = ""
    """UTC time HH:MM after which no new trial is started (the table marks the rest as not measured)"""
    jobs: int = 1
    """trials run side by side in this many processes (one thread each); 1 runs them one after another"""
    low_data: bool = True
    """the low-data budgets of the tasks that have them (Pendulum: 250, 500, 1,000, 2,000 real steps), one Dyna
    run per budget with its own schedule, plus MPC on the learned sparse model; --no-low-data skips them"""
    low_budgets: str = ""
    """comma-separated low-data budgets to run now (default: all; stored trials of the others are still shown)"""
    only_low_data: bool = False
    """run the low-data budgets alone (no main table; --write-docs then rewrites only their own section)"""


#: Per task: config, threshold, fixed real-step budgets, scaled Dyna overrides, model-free settings.
TASKS: dict[str, dict] = {
    "pendulum": {
        "config": "examples/configs/pendulum.yaml", "env_id": "Pendulum-v1", "threshold": -200.0, "seeds": 3,
        "budgets": [1_500, 3_000, 5_000, 10_000, 20_000, 50_000],
        "eval_episodes": 5, "final_eval_episodes": 10,
        "dyna": {"dyna.iterations": 5, "agent.initial_steps": 120_000, "agent.steps_per_iteration": 30_000},
        "nn": {"epochs": 100, "patience": 10},
        "ppo": {"steps": 50_000, "eval_every": 5_000, "n_envs": 4,
                "kwargs": {"n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9, "n_epochs": 10, "ent_coef": 0.0,
                           "learning_rate": 1e-3, "clip_range": 0.2, "use_sde": True, "sde_sample_freq": 4}},
        "sac": {"steps": 10_000, "eval_every": 1_000, "kwargs": {"learning_rate": 1e-3, "learning_starts": 200}},
        "reference": "SB3 zoo: SAC -157 / TD3 -152 at 20k steps, PPO -172 at 100k; PILCO solves the swing-up "
                     "in <= 440 steps",
        # one Dyna run per budget: random warm-up in short episodes (many real starts), then short policy
        # batches, the config's own surrogate budget (PPO 300k, then 50k per iteration); model-free methods
        # evaluated at each budget on the same 10 reset seeds as the Dyna runs' final evaluation
        "low_data": {
            "budgets": [250, 500, 1_000, 2_000], "seeds": 5, "final_eval_episodes": 10,
            "targets": {"500": -200.0, "1000": -160.0},
            "random_fraction": 0.4, "random_episode_steps": 50, "batches": 3, "dyna": {},
            "mpc": {"horizon": 30},
            "ppo": {"n_envs": 1, "kwargs": {"n_steps": 250, "batch_size": 50, "gae_lambda": 0.95, "gamma": 0.9,
                                            "n_epochs": 10, "ent_coef": 0.0, "learning_rate": 1e-3,
                                            "clip_range": 0.2, "use_sde": True, "sde_sample_freq": 4}},
            "sac": {"kwargs": {"learning_rate": 1e-3, "learning_starts": 100}},
        },
    },
    "cartpole_swingup": {
        "config": "examples/configs/cartpole_swingup.yaml", "env_id": "dm_control/cartpole-swingup-v0",
        "threshold": 600.0, "seeds": 3,
        "budgets": [10_000, 20_000, 50_000, 100_000, 1_000_000],
        "eval_episodes": 1, "final_eval_episodes": 3,
        # the config's own surrogate budget (200k, then 40k per 500 real steps); 26 refits = 20,500 real steps
        "dyna": {"dyna.iterations": 26, "agent.initial_steps": 200_000, "agent.steps_per_iteration": 40_000},
        "nn": {"epochs": 60, "patience": 8},
        "ppo": {"steps": 1_000_000, "eval_every": 50_000, "n_envs": 4,
                "kwargs": {"n_steps": 1000, "batch_size": 250}},
        "sac": {"steps": 80_000, "eval_every": 5_000, "kwargs": {"learning_starts": 1000}},
        "reference": "paper: SINDy-RL curves span 8e4 real steps vs 5e6 for PPO; state SAC 835 +- 22 at 100k "
                     "env steps (CURL table)",
    },
    "swimmer": {
        "config": "examples/configs/swimmer.yaml", "env_id": "Swimmer-v5", "threshold": 100.0, "seeds": 3,
        "budgets": [15_000, 31_000, 50_000, 200_000],
        "eval_episodes": 1, "final_eval_episodes": 3,
        # the config's own loop: 20 refits, 12,000 random + 19 x 1,000 policy steps = 31,000 real steps
        "dyna": {"dyna.iterations": 20, "agent.initial_steps": 200_000, "agent.steps_per_iteration": 50_000,
                 # 8 inputs make a degree-3 library of 165 terms: a smaller distillation grid to fit the budget
                 "distill.passes": 1, "distill.n_models": 5, "distill.n_rollouts": 10, "distill.alphas": [1e-4],
                 "distill.eval_episodes": 3},
        "nn": {"epochs": 60, "patience": 8},
        "ppo": {"steps": 200_000, "eval_every": 20_000, "n_envs": 4,
                "kwargs": {"n_steps": 1000, "batch_size": 250, "gamma": 0.9999}},
        "sac": {"steps": 40_000, "eval_every": 5_000, "kwargs": {"learning_starts": 1000, "gamma": 0.9999}},
        "reference": "paper: 1.25e6 real steps for SINDy-RL vs 8e7 for PPO; SB3 zoo at 1M: SAC 346, TD3 359, "
                     "PPO 282 (Swimmer-v3)",
    },
}

#: what --quick uses instead (Pendulum only; seconds, not minutes)
QUICK = {
    "pendulum": {
        "seeds": 1, "budgets": [300, 600], "eval_episodes": 1, "final_eval_episodes": 2,
        "dyna": {"dyna.iterations": 2, "agent.initial_steps": 1024, "agent.steps_per_iteration": 512,
                 "agent.n_envs": 4, "agent.kwargs.n_steps": 128, "agent.kwargs.batch_size": 128,
                 "agent.kwargs.n_epochs": 2, "collect.random_steps": 200, "collect.steps_per_iteration": 100,
                 "env.max_episode_steps": 50, "dynamics.n_models": 5,
                 "distill.passes": 1, "distill.n_rollouts": 4, "distill.n_models": 3, "distill.eval_episodes": 2,
                 "distill.thresholds": [1e-3, 1e-2], "distill.alphas": [1e-4]},
        "nn": {"epochs": 10, "n_models": 3},
        "ppo": {"steps": 512, "eval_every": 256, "n_envs": 2,
                "kwargs": {"n_steps": 128, "batch_size": 64, "n_epochs": 2}},
        "sac": {"steps": 300, "eval_every": 150, "kwargs": {"learning_starts": 100}},
        "max_episode_steps": 50,
        "low_data": {
            "budgets": [150], "seeds": 1, "final_eval_episodes": 1, "targets": {},
            "random_fraction": 0.4, "random_episode_steps": 25, "batches": 2,
            "dyna": {"agent.initial_steps": 1024, "agent.steps_per_iteration": 512, "agent.n_envs": 4,
                     "agent.kwargs.n_steps": 128, "agent.kwargs.batch_size": 128, "agent.kwargs.n_epochs": 2,
                     "env.max_episode_steps": 50, "dynamics.n_models": 5},
            "mpc": {"horizon": 10},
            "ppo": {"n_envs": 1, "kwargs": {"n_steps": 64, "batch_size": 32, "n_epochs": 2}},
            "sac": {"kwargs": {"learning_starts": 50}},
        },
    },
}

METHODS = {"sindy": "sindyrl Dyna (E-SINDy)", "nn": "Dyna-NN (5 MLPs 64x64)", "ppo": "PPO (model-free)",
           "sac": "SAC (model-free)"}


def task_settings(task: str, quick: bool) -> dict:
    s = json.loads(json.dumps(TASKS[task]))
    if quick:
        q = QUICK.get(task)
        if q is None:
            raise ValueError(f"--quick runs Pendulum only, not {task!r}")
        for k, v in q.items():
            if isinstance(v, dict) and isinstance(s.get(k), dict) and k in ("ppo", "sac"):
                s[k] = {**s[k], **v, "kwargs": {**s[k].get("kwargs", {}), **v.get("kwargs", {})}}
            elif k == "dyna":
                s[k] = {**s[k], **v}
            else:
                s[k] = v
    return s


#: distillation scaled for the benchmark: 2 DAgger passes of the config default 4 (50 surrogate rollouts each)
DISTILL = {"distill.passes": 2, "distill.eval_episodes": 10}


def dyna_config(task: str, method: str, seed: int, settings: dict):
    """The task's example config with the scaled budget, the seed and (for nn) the neural dynamics."""
    from sindyrl.config import apply_overrides, config_from_dict

    data = yaml.safe_load((ROOT / settings["config"]).read_text())
    sets = {**DISTILL, **settings["dyna"], "seed": seed, "name": f"{task}-{method}-s{seed}",
            "dyna.eval_episodes": settings["eval_episodes"],
            "dyna.final_eval_episodes": settings["final_eval_episodes"]}
    if method == "nn":
        sets["dynamics.model"] = "nn"
        sets["dynamics.nn"] = settings["nn"]
        sets["surrogate.ensemble_mode"] = "mean"  # the paper's Dyna-NN steps the ensemble mean
    apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in sets.items()])
    return config_from_dict(data, source=f"{settings['config']} (benchmark overrides)")


def _training_settings(cfg) -> dict:
    """What a Dyna run's training depends on: its config without the distillation settings."""
    from sindyrl.config import config_to_dict

    d = json.loads(json.dumps(config_to_dict(cfg)))
    d.pop("distill", None)
    return d


def trial_settings(method: str, st: dict) -> dict:
    """The part of a task's settings one method's trial depends on (budgets and threshold only change the table)."""
    keys = ["config", "env_id", "eval_episodes", "final_eval_episodes", "max_episode_steps"]
    keys += ["dyna", "nn"] if method == "nn" else ["dyna"] if method == "sindy" else [method]
    return json.loads(json.dumps({k: st.get(k) for k in keys}))


def run_dyna(task: str, method: str, seed: int, settings: dict, args: Args) -> dict:
    from sindyrl.dyna import Dyna
    from sindyrl.runs import Run

    cfg = dyna_config(task, method, seed, settings)
    root = Path(args.runs_dir) / task
    path = root / f"{method}-s{seed}"
    run = Run.open(path) if (path / "config.yaml").is_file() else None
    if run is not None and _training_settings(run.config) != _training_settings(cfg):
        print(f"  [{task}/{method}/s{seed}] {path} was trained with other settings: starting it again", flush=True)
        shutil.rmtree(path)
        run = None
    if run is None:
        run = Run.create(cfg, root=root, name=path.name)
    # distillation settings are the benchmark's, also for a run directory made by an earlier version of it
    run.config.distill = cfg.distill
    t0 = time.time()
    summary = Dyna(run.config, run, echo=lambda *a: print(f"  [{task}/{method}/s{seed}]", *a, flush=True),
                   progress_bar=False).run()
    wall = time.time() - t0
    rows = run.read_metrics()
    # row i evaluates the policy trained on the data collected *before* that iteration's collection
    steps = [int(cfg.collect.random_steps)] + [int(r["real_steps_collect"]) for r in rows[:-1]]
    curve = [[s, float(r["eval_return_mean"])] for s, r in zip(steps, rows)]
    # the final evaluation (more episodes) belongs to the last policy
    curve[-1][1] = float(summary["eval_return_mean"])
    out = {"curve": curve, "final_return": float(summary["eval_return_mean"]),
           "final_return_std": float(summary["eval_return_std"]),
           "real_steps": int(summary["real_steps_collect"]), "real_steps_eval": int(summary["real_steps_eval"]),
           "surrogate_steps": int(summary["surrogate_steps"]), "wall_seconds": float(summary["train_wall_seconds"]),
           "wall_seconds_this_call": wall, "run_dir": str(run.path)}
    if method == "sindy":
        out["dynamics_nnz"] = summary.get("dynamics_nnz")
        if args.distill:
            from sindyrl.policy import distill_run

            t1 = time.time()
            d = run.read_summary()
            settings_now = dataclasses.asdict(cfg.distill)
            if "sparse_policy_nnz" not in d or d.get("distill_settings") != settings_now:
                d = distill_run(run, echo=lambda *a: print(f"  [{task}/distill/s{seed}]", *a, flush=True))
                d["distill_settings"] = settings_now
                run.update_summary(d)
            out.update({k: d[k] for k in ("neural_policy_params", "sparse_policy_nnz", "neural_policy_return_mean",
                                          "sparse_policy_return_mean", "sparse_policy_return_std")})
            out["distill_seconds"] = time.time() - t1
            out["distill_settings"] = settings_now
    return out


def run_model_free(task: str, method: str, seed: int, settings: dict) -> dict:
    """SB3 PPO or SAC on the real env; evaluated every ``eval_every`` real steps on the Dyna loop's reset seeds."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from sindyrl.config import EnvConfig
    from sindyrl.envs import make_env
    from sindyrl.evaluation import evaluate_policy, sb3_act
    from sindyrl.policy import policy_param_count

    s = settings[method]
    env_cfg = EnvConfig(id=settings["env_id"], max_episode_steps=settings.get("max_episode_steps"))

    def mk():
        return make_env(env_cfg)

    curve: list[list[float]] = []

    # ``eval_at``: evaluate at these real steps instead, on ``eval_at_episodes`` episodes from reset seed ``seed``
    # (the low-data table: the same starts as the Dyna runs' final evaluation)
    points = list(s.get("eval_at") or [])
    n_eval = int(s.get("eval_at_episodes", settings["eval_episodes"])) if points else settings["eval_episodes"]
    eval_seed = seed if points else 10_000 + seed

    class EvalEvery(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next_eval = points.pop(0) if points else s["eval_every"]

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval:
                self.next_eval = (points.pop(0) if points else float("inf")) if "eval_at" in s else \
                    self.next_eval + s["eval_every"]
                r = evaluate_policy(sb3_act(self.model), mk, n_eval, seed=eval_seed)
                curve.append([int(self.num_timesteps), float(r.mean())])
                print(f"  [{task}/{method}/s{seed}] {self.num_timesteps} real steps: return {r.mean():.1f}",
                      flush=True)
            return True

    t0 = time.time()
    kwargs = dict(s.get("kwargs", {}))
    if method == "ppo":
        venv = make_vec_env(mk, n_envs=s.get("n_envs", 1), seed=seed)
        model = sb3.PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **kwargs)
    else:
        venv = make_vec_env(mk, n_envs=1, seed=seed)
        model = sb3.SAC("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **kwargs)
    model.learn(s["steps"], callback=EvalEvery())
    if "eval_at" in s and curve and curve[-1][0] == model.num_timesteps:
        # the last evaluation point is the final evaluation (same episodes, same seeds)
        return {"curve": curve, "final_return": curve[-1][1], "final_return_std": float("nan"),
                "real_steps": int(model.num_timesteps), "wall_seconds": time.time() - t0,
                "neural_policy_params": policy_param_count(model)}
    final = evaluate_policy(sb3_act(model), mk, settings["final_eval_episodes"], seed=seed)
    wall = time.time() - t0
    if curve and curve[-1][0] == model.num_timesteps:
        curve[-1][1] = float(final.mean())
    else:
        curve.append([int(model.num_timesteps), float(final.mean())])
    return {"curve": curve, "final_return": float(final.mean()), "final_return_std": float(final.std()),
            "real_steps": int(model.num_timesteps), "wall_seconds": wall,
            "neural_policy_params": policy_param_count(model)}


# ------------------------------------------------------------------ low-data budgets
LOW_METHODS = {"sindy": "sindyrl Dyna (E-SINDy)", "nn": "Dyna-NN (same data schedule)",
               "mpc": "MPC on the learned sparse model", "sac": "SAC (model-free)", "ppo": "PPO (model-free)"}


def low_data_schedule(budget: int, ld: dict) -> dict:
    """The Dyna overrides of one real-step budget: ``random_fraction`` of it as random steps in episodes of
    ``random_episode_steps`` (many real starts), the rest in ``batches`` equal policy batches, and
    ``collect.max_real_steps`` so the loop can never spend more."""
    ep = int(ld["random_episode_steps"])
    random_steps = max(ep, int(round(ld["random_fraction"] * budget / ep)) * ep)
    batch = (budget - random_steps) // int(ld["batches"])
    return {**ld.get("dyna", {}), "collect.random_steps": random_steps, "collect.random_episode_steps": ep,
            "collect.steps_per_iteration": batch, "collect.max_real_steps": budget,
            "dyna.iterations": int(ld["batches"]) + 1}


def low_data_trial_settings(method: str, st: dict) -> dict:
    keys = ["config", "env_id", "low_data", "max_episode_steps"] + (["nn"] if method == "nn" else [])
    return json.loads(json.dumps({k: st.get(k) for k in keys}))


def run_low_dyna(task: str, method: str, budget: int, seed: int, st: dict, args: Args) -> dict:
    """One Dyna (E-SINDy or NN) run at a real-step budget; for E-SINDy also MPC on its final sparse model."""
    from sindyrl.dyna import Dyna
    from sindyrl.runs import Run

    ld = st["low_data"]
    sets = {**low_data_schedule(budget, ld), "dyna.eval_episodes": 0,
            "dyna.final_eval_episodes": ld["final_eval_episodes"]}
    cfg = dyna_config(task, method, seed, {**st, "dyna": sets, "eval_episodes": 0,
                                            "final_eval_episodes": ld["final_eval_episodes"]})
    root = Path(args.runs_dir) / f"{task}_low"
    path = root / f"{method}-b{budget}-s{seed}"
    if path.exists():
        shutil.rmtree(path)  # a stored trial JSON is the reuse unit; a run directory without one is stale
    run = Run.create(cfg, root=root, name=path.name)
    tag = f"  [{task}/{method}@{budget}/s{seed}]"
    summary = Dyna(run.config, run, echo=lambda *a: print(tag, *a, flush=True), progress_bar=False).run()
    rows = run.read_metrics()
    out = {"return": float(summary["eval_return_mean"]), "return_min": float(summary["eval_return_min"]),
           "real_steps": int(summary["real_steps_collect"]), "real_steps_eval": int(summary["real_steps_final_eval"]),
           "surrogate_steps": int(summary["surrogate_steps"]), "wall_seconds": float(summary["train_wall_seconds"]),
           "batches": [int(r.get("collect_steps") or 0) for r in rows], "run_dir": str(run.path)}
    if method == "sindy":
        from controllers.stage import control

        t0 = time.time()
        res = control(run, method="mpc", horizon=int(ld["mpc"]["horizon"]), n_episodes=int(ld["final_eval_episodes"]),
                      compare=False, echo=lambda *a: print(tag, *a, flush=True))
        out["mpc"] = {"return": float(res["control_mpc_return_mean"]), "return_min": float(res["control_mpc_return_min"]),
                      "real_steps": int(summary["real_steps_collect"]), "wall_seconds": time.time() - t0,
                      "failures": int(res.get("control_mpc_failures", 0))}
    return out


def run_low_model_free(task: str, method: str, seed: int, st: dict) -> dict:
    """PPO or SAC for the largest budget, evaluated at every budget on the Dyna runs' final-evaluation seeds."""
    ld = st["low_data"]
    budgets = sorted(int(b) for b in ld["budgets"])
    s = {**ld[method], "steps": budgets[-1], "eval_every": budgets[0], "eval_at": budgets,
         "eval_at_episodes": ld["final_eval_episodes"]}
    res = run_model_free(task, method, seed, {**st, method: s, "final_eval_episodes": ld["final_eval_episodes"]})
    return {"returns": {str(int(b)): r for b, r in res["curve"]}, "real_steps": res["real_steps"],
            "wall_seconds": res["wall_seconds"]}


def run_low_trial(task: str, method: str, budget: int | None, seed: int, st: dict, args: Args,
                  trial_dir: Path) -> dict | None:
    if _past_deadline(args.deadline):
        return None
    print(f"=== low data {task} / {method}" + (f" @ {budget}" if budget else "") + f" / seed {seed}", flush=True)
    if method in ("sindy", "nn"):
        res = run_low_dyna(task, method, int(budget), seed, st, args)
    else:
        res = run_low_model_free(task, method, seed, st)
    res.update(task=task, method=method, budget=budget, seed=seed, settings=low_data_trial_settings(method, st))
    name = f"low_{task}_{method}" + (f"_b{budget}" if budget else "") + f"_s{seed}.json"
    (trial_dir / name).write_text(json.dumps(res, indent=1))
    return res


def low_data_keys(task: str, st: dict, methods: list[str], n_seeds: int) -> list[tuple]:
    ld = st["low_data"]
    keys = []
    for seed in range(n_seeds):
        for m in methods:
            if m in ("sindy", "nn"):
                keys += [(task, m, int(b), seed) for b in ld["budgets"]]
            elif m in ("ppo", "sac"):
                keys.append((task, m, None, seed))
    return keys


def low_data_aggregate(trials: list[dict], st: dict) -> dict:
    """Per method and budget: the per-seed returns, their mean, std and worst seed, and the targets met."""
    ld = st["low_data"]
    out: dict = {"budgets": [int(b) for b in ld["budgets"]], "targets": ld.get("targets", {}), "methods": {}}
    for m in LOW_METHODS:
        per_b = {}
        for b in ld["budgets"]:
            if m in ("sindy", "nn"):
                vals = {t["seed"]: t["return"] for t in trials if t["method"] == m and t["budget"] == b}
            elif m == "mpc":
                vals = {t["seed"]: t["mpc"]["return"] for t in trials
                        if t["method"] == "sindy" and t["budget"] == b and "mpc" in t}
            else:
                vals = {t["seed"]: t["returns"].get(str(b)) for t in trials if t["method"] == m}
                vals = {k: v for k, v in vals.items() if v is not None}
            if not vals:
                continue
            v = np.array([vals[k] for k in sorted(vals)])
            per_b[str(b)] = {"seeds": sorted(vals), "returns": v.tolist(), "mean": float(v.mean()),
                             "std": float(v.std()), "worst_seed": float(v.min())}
            tgt = ld.get("targets", {}).get(str(b))
            if tgt is not None:
                per_b[str(b)]["target"] = tgt
                per_b[str(b)]["every_seed_meets_target"] = bool((v >= tgt).all())
        if per_b:
            out["methods"][m] = per_b
    return out


def first_budget(per_b: dict, threshold: float) -> int | None:
    """The smallest budget whose mean return over seeds reaches ``threshold`` (None: none of those run)."""
    ok = [int(b) for b, c in per_b.items() if c["mean"] >= threshold]
    return min(ok) if ok else None


def models_compared(agg: dict, threshold: float) -> str:
    """E-SINDy against Dyna-NN on the same data schedule: the real steps each needs to reach ``threshold``
    (mean over seeds), and their ratio; '' unless both were run."""
    sindy, nn = agg["methods"].get("sindy"), agg["methods"].get("nn")
    if not sindy or not nn:
        return ""
    bs, bn = first_budget(sindy, threshold), first_budget(nn, threshold)
    top_s, top_n = max(int(b) for b in sindy), max(int(b) for b in nn)

    def say(b, top):
        return f"{b:,}" if b is not None else f"not within {top:,}"

    text = (f"Real steps to a mean return of {threshold:g}: E-SINDy Dyna {say(bs, top_s)}, Dyna-NN on the same "
            f"schedule {say(bn, top_n)}")
    if bs is not None and bn is not None:
        text += f": E-SINDy needs {bs / bn:.2g}× the steps Dyna-NN needs"
    elif bs is not None:
        text += f": E-SINDy needs < {bs / top_n:.2g}× the steps Dyna-NN needs (a lower bound on Dyna-NN)"
    return text + "."


def low_data_table(task: str, agg: dict, st: dict) -> str:
    ld = st["low_data"]
    bs = agg["budgets"]
    lines = [f"### {st['env_id']}: low-data budgets ({', '.join(f'{b:,}' for b in bs)} real training steps)", "",
             "Steps are simulator steps at the env's own control rate (Pendulum-v1: 0.05 s per step), no action "
             "repeat; real evaluation episodes are excluded for every method (each cell is the mean return of "
             f"{ld['final_eval_episodes']} deterministic episodes on reset seeds seed..seed+"
             f"{ld['final_eval_episodes'] - 1}, the same for every method). Dyna: one run per budget, "
             f"{ld['random_fraction']:.0%} of it random steps in {ld['random_episode_steps']}-step episodes, the rest "
             f"in {ld['batches']} equal policy batches (`collect.max_real_steps` = the budget), surrogate budget "
             f"{ld.get('dyna') or 'of the config'}; Dyna-NN: the same schedule on the neural ensemble; MPC: the control stage's CasADi "
             f"MPC (horizon {ld['mpc']['horizon']}, cost: the known reward) on the E-SINDy run's final sparse "
             "model, so the same real training steps; SAC and PPO: one run per seed on the real env, evaluated "
             "at each budget. Cells: mean ± std over seeds, [worst seed].", "",
             "| method | seeds | " + " | ".join(f"{b:,} steps" for b in bs) + " |", "|" + "---|" * (2 + len(bs))]
    for m, per_b in agg["methods"].items():
        n = max(len(c["seeds"]) for c in per_b.values())
        cells = []
        for b in bs:
            c = per_b.get(str(b))
            cells.append("—" if c is None else f"{c['mean']:.0f} ± {c['std']:.0f} [{c['worst_seed']:.0f}]")
        lines.append(f"| {LOW_METHODS[m]} | {n} | " + " | ".join(cells) + " |")
    tg = []
    for b, t in agg["targets"].items():
        c = agg["methods"].get("sindy", {}).get(str(b))
        if c is not None:
            tg.append(f"≥ {t:g} with ≤ {int(b):,} steps: {'met' if c['every_seed_meets_target'] else 'NOT met'} "
                      f"on every seed (per seed: {', '.join(f'{r:.0f}' for r in c['returns'])})")
    if tg:
        lines += ["", "Targets (E-SINDy Dyna, every seed): " + "; ".join(tg) + "."]
    cmp = models_compared(agg, st["threshold"])
    if cmp:
        lines += ["", cmp]
    missing = [LOW_METHODS[m] for m in LOW_METHODS if m not in agg["methods"]]
    if missing:
        lines += ["", "Not measured in this run: " + ", ".join(missing) + " (— : a budget not run)."]
    return "\n".join(lines + [""])


# ------------------------------------------------------------------ aggregation
def return_at(curve: list, budget: int) -> float | None:
    """Return of the last policy evaluated with at most ``budget`` real training steps."""
    pts = [r for s, r in curve if s <= budget]
    return pts[-1] if pts else None


def steps_to(curve: list, threshold: float) -> int | None:
    for s, r in curve:
        if r >= threshold:
            return int(s)
    return None


def _ms(vals: list) -> tuple[float | None, float | None, int]:
    v = [x for x in vals if x is not None]
    if not v:
        return None, None, 0
    return float(np.mean(v)), float(np.std(v)), len(v)


def aggregate(trials: list[dict], settings_by_task: dict[str, dict]) -> dict:
    out: dict = {}
    for task, st in settings_by_task.items():
        rows = {}
        for method in METHODS:
            ts = [t for t in trials if t["task"] == task and t["method"] == method]
            if not ts:
                continue
            reached = [steps_to(t["curve"], st["threshold"]) for t in ts]
            row = {
                "n_seeds": len(ts),
                "final_return": _ms([t["final_return"] for t in ts])[:2],
                "real_steps": _ms([t["real_steps"] for t in ts])[0],
                "max_real_steps": max(t["real_steps"] for t in ts),
                "wall_seconds": _ms([t["wall_seconds"] for t in ts])[:2],
                "at_budget": {str(b): _ms([return_at(t["curve"], b) for t in ts]) for b in st["budgets"]},
                "steps_to_threshold": _ms(reached)[:2],
                "reached_threshold": sum(r is not None for r in reached),
            }
            for k in ("neural_policy_params", "sparse_policy_nnz", "neural_policy_return_mean",
                      "sparse_policy_return_mean", "dynamics_nnz"):
                if any(k in t for t in ts):
                    row[k] = _ms([t.get(k) for t in ts])[0]
            rows[method] = row
        # ratio of real steps to the threshold: model-free over sindyrl, from this run's trials
        ratios = {}
        base = rows.get("sindy", {})
        for mf in ("ppo", "sac", "nn"):
            if mf not in rows or not base:
                continue
            b, m = base["steps_to_threshold"][0], rows[mf]["steps_to_threshold"][0]
            if b is None:
                ratios[mf] = {"ratio": None, "note": "sindyrl did not reach the threshold"}
            elif m is None or rows[mf]["reached_threshold"] < rows[mf]["n_seeds"]:
                lower = rows[mf]["max_real_steps"] / b
                ratios[mf] = {"ratio": None, "lower_bound": lower,
                              "note": f"{mf} did not reach the threshold on every seed within its budget"}
            else:
                ratios[mf] = {"ratio": m / b}
        # the same ratio at the return every sindyrl seed ended at or above (a level fixed by this run, not by hand)
        match = {}
        finals = [t["final_return"] for t in trials if t["task"] == task and t["method"] == "sindy"]
        if base and finals:
            level = min(finals)
            b = _ms([steps_to(t["curve"], level) for t in trials if t["task"] == task and t["method"] == "sindy"])
            for mf in ("ppo", "sac", "nn"):
                ts = [t for t in trials if t["task"] == task and t["method"] == mf]
                if not ts or b[0] is None:
                    continue
                hit = [steps_to(t["curve"], level) for t in ts]
                if all(h is not None for h in hit):
                    match[mf] = {"ratio": float(np.mean(hit)) / b[0]}
                else:
                    match[mf] = {"ratio": None, "lower_bound": max(t["real_steps"] for t in ts) / b[0],
                                 "note": f"{mf} did not reach it on every seed within its budget"}
            match = {"level": level, "sindy_steps": b[0], "ratios": match}
        out[task] = {"threshold": st["threshold"], "match": match, "budgets": st["budgets"], "methods": rows, "ratios": ratios,
                     "reference": st.get("reference", "")}
    return out


def _f(v, fmt="{:.0f}") -> str:
    return "—" if v is None else fmt.format(v)


def _scaled_note(st: dict) -> str:
    """What this run used, in words (so the table never hides how small the budgets were)."""
    d = st["dyna"]
    return (f"Budgets used: Dyna {d.get('dyna.iterations')} iterations on `{st['config']}` (surrogate PPO "
            f"{d.get('agent.initial_steps', 0):,} steps, then {d.get('agent.steps_per_iteration', 0):,} per "
            f"iteration; Dyna-NN: same loop, {st['nn']}); PPO {st['ppo']['steps']:,} and SAC {st['sac']['steps']:,}"
            f" real steps (evaluated every {st['ppo']['eval_every']:,} / {st['sac']['eval_every']:,}). Curve "
            f"points: {st['eval_episodes']} evaluation episode(s); the last point of each curve (and \"final "
            f"return\") is the final evaluation, {st['final_eval_episodes']} episodes on reset seeds seed..seed+"
            f"{st['final_eval_episodes'] - 1}. Real steps count training interactions only (evaluation episodes "
            "are not counted, for any method).")


def markdown_table(agg: dict, settings_by_task: dict, command: str, notes: list[str]) -> str:
    lines = ["## Sample efficiency (sindyrl Dyna vs model-free SB3 and Dyna-NN)", "",
             f"Command: `{command}`. " + " ".join(notes), ""]
    for task, a in agg.items():
        st = settings_by_task[task]
        budgets = a["budgets"]
        lines += [f"### {st['env_id']} (threshold {a['threshold']:g})", "", _scaled_note(st), ""]
        head = "| method | seeds | real steps used | final return | " + " | ".join(
            f"return @ {b:,}" for b in budgets) + " | real steps to threshold (reached) | wall time (s) |"
        lines += [head, "|" + "---|" * (6 + len(budgets))]
        for m, r in a["methods"].items():
            fr = r["final_return"]
            cells = [METHODS[m], str(r["n_seeds"]), f"{r['real_steps']:,.0f}", f"{_f(fr[0])} ± {_f(fr[1])}"]
            for b in budgets:
                mean, std, n = r["at_budget"][str(b)]
                cell = "—" if mean is None else f"{mean:.0f} ± {std:.0f}" + ("" if n == r["n_seeds"] else f" ({n})")
                # past its own budget a method has stopped: the cell repeats its final value
                cells.append(cell + ("†" if mean is not None and b > r["max_real_steps"] else ""))
            st_mean = r["steps_to_threshold"][0]
            cells.append(f"{_f(st_mean, '{:,.0f}')} ({r['reached_threshold']}/{r['n_seeds']})")
            cells.append(f"{_f(r['wall_seconds'][0])}")
            lines.append("| " + " | ".join(cells) + " |")
        rat = []
        for m, v in a["ratios"].items():
            if v.get("ratio") is not None:
                rat.append(f"{METHODS[m]}: **{v['ratio']:.1f}×**")
            elif "lower_bound" in v:
                rat.append(f"{METHODS[m]}: > {v['lower_bound']:.1f}× ({v['note']})")
            else:
                rat.append(f"{METHODS[m]}: n/a ({v['note']})")
        if rat:
            lines += ["", "Real steps to the threshold, relative to sindyrl (same run): " + "; ".join(rat) + "."]
        mt = a.get("match") or {}
        if mt.get("ratios"):
            parts = []
            for m, v in mt["ratios"].items():
                parts.append(f"{METHODS[m]}: **{v['ratio']:.1f}×**" if v.get("ratio") is not None else
                             f"{METHODS[m]}: > {v['lower_bound']:.1f}× (not reached within its budget)")
            lines += ["", f"Real steps to reach the lowest final return of the sindyrl seeds ({mt['level']:.0f}; "
                      f"sindyrl first reached it after {mt['sindy_steps']:,.0f} real steps, seed mean), relative to "
                      "sindyrl: "
                      + "; ".join(parts) + "."]
        lines += ["", f"Reference points: {a['reference']}. † the method had stopped before this budget (its "
                  "final value is repeated). Steps to threshold are quantised by the evaluation points (Dyna: every "
                  "refit; model-free: every evaluation interval).", ""]
    comp = [(t, m, r) for t, a in agg.items() for m, r in a["methods"].items()
            if r.get("sparse_policy_nnz") is not None or r.get("neural_policy_params") is not None]
    if comp:
        lines += ["### Compactness: neural policy parameters vs sparse policy nonzero coefficients", "",
                  "| task | method | neural actor parameters | neural return | sparse policy nnz | sparse return |",
                  "|---|---|---:|---:|---:|---:|"]
        for t, m, r in comp:
            nr = r.get("neural_policy_return_mean", r["final_return"][0])
            lines.append(f"| {settings_by_task[t]['env_id']} | {METHODS[m]} | {_f(r.get('neural_policy_params'))} | "
                         f"{_f(nr)} | {_f(r.get('sparse_policy_nnz'))} | {_f(r.get('sparse_policy_return_mean'))} |")
        lines.append("")
    return "\n".join(lines)


def plot(trials: list[dict], settings_by_task: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(settings_by_task)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    colors = {"sindy": "C0", "nn": "C1", "ppo": "C2", "sac": "C3"}
    for ax, task in zip(axes[0], tasks):
        for m in METHODS:
            ts = [t for t in trials if t["task"] == task and t["method"] == m]
            for i, t in enumerate(ts):
                c = np.asarray(t["curve"], dtype=float)
                ax.plot(c[:, 0], c[:, 1], "-o", ms=3, color=colors[m], alpha=0.35 if len(ts) > 1 else 1.0,
                        label=METHODS[m] if i == 0 else None)
            if len(ts) > 1:
                n = min(len(t["curve"]) for t in ts)
                c = np.mean([np.asarray(t["curve"][:n], dtype=float) for t in ts], axis=0)
                ax.plot(c[:, 0], c[:, 1], "-", lw=2.5, color=colors[m])
        ax.axhline(settings_by_task[task]["threshold"], ls="--", color="grey", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("real training steps")
        ax.set_ylabel("real-env return")
        ax.set_title(settings_by_task[task]["env_id"])
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def figures(agg: dict) -> dict:
    """The headline figures for docs/results/sample_efficiency.json, per task: each method's final return, return
    at every budget and real steps to the threshold, and the real-step ratios against sindyrl (None: not reached)."""
    out: dict = {}
    for task, a in agg.items():
        t: dict = {"threshold": a["threshold"]}
        for m, r in a["methods"].items():
            t[m] = {"final_return": r["final_return"][0], "final_return_std": r["final_return"][1],
                    "real_steps": r["real_steps"], "steps_to_threshold": r["steps_to_threshold"][0],
                    "reached_threshold": r["reached_threshold"], "n_seeds": r["n_seeds"],
                    "return_at": {str(b): r["at_budget"][str(b)][0] for b in a["budgets"]},
                    **{k: r[k] for k in ("neural_policy_params", "sparse_policy_nnz", "sparse_policy_return_mean",
                                         "dynamics_nnz") if k in r}}
        t["steps_to_threshold_ratio"] = {m: v.get("ratio") for m, v in a["ratios"].items()}
        t["steps_to_threshold_ratio_lower_bound"] = {m: v["lower_bound"] for m, v in a["ratios"].items()
                                                     if "lower_bound" in v}
        mt = a.get("match") or {}
        if mt.get("ratios"):
            t["match_level"] = mt["level"]
            t["match_ratio"] = {m: v.get("ratio") for m, v in mt["ratios"].items()}
            t["match_ratio_lower_bound"] = {m: v["lower_bound"] for m, v in mt["ratios"].items() if "lower_bound" in v}
        out[task] = t
    return out


def _absolute_deadline(deadline: str) -> str:
    """``HH:MM`` (UTC) -> the first such moment from now, as an ISO timestamp (a 00:45 deadline given at 23:40
    is tomorrow's, not already past); an ISO timestamp or "" is returned as it is."""
    if not deadline or "T" in deadline:
        return deadline
    import datetime as dt

    h, m = (int(x) for x in deadline.split(":"))
    now = dt.datetime.now(dt.timezone.utc)
    at = now.replace(hour=h, minute=m, second=0, microsecond=0)
    if at <= now:
        at += dt.timedelta(days=1)
    return at.isoformat()


def _past_deadline(deadline: str) -> bool:
    if not deadline:
        return False
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc) >= dt.datetime.fromisoformat(_absolute_deadline(deadline))


def _stale_distillation(trial: dict, st: dict, args: Args) -> bool:
    """A stored E-SINDy trial distilled with other settings than this version's (its run is reused, the
    distillation is redone)."""
    if trial["method"] != "sindy" or not args.distill:
        return False
    cfg = dyna_config(trial["task"], "sindy", int(trial["seed"]), st)
    return trial.get("distill_settings") != dataclasses.asdict(cfg.distill)


def run_trial(task: str, method: str, seed: int, st: dict, args: Args, trial_dir: Path) -> dict | None:
    """One (task, method, seed) trial; its JSON is written as soon as it ends. None when past the deadline."""
    if _past_deadline(args.deadline):
        return None
    print(f"=== {task} / {method} / seed {seed}", flush=True)
    res = run_dyna(task, method, seed, st, args) if method in ("sindy", "nn") else run_model_free(task, method, seed, st)
    res.update(task=task, method=method, seed=seed, settings=trial_settings(method, st))
    (trial_dir / f"{task}_{method}_s{seed}.json").write_text(json.dumps(res, indent=1))
    return res


def _run_trials(fn, pending: list, settings: dict, args, trial_dir, jobs: int, results: dict, failure) -> None:
    """``results[key] = fn(*key, settings[task], args, trial_dir)`` for every pending key, one after another or in
    ``jobs`` spawned processes (workers start clean: no forked torch / MuJoCo state); a failing trial goes to
    ``failure(key, exc)`` and the others go on."""
    if not pending:
        return
    if jobs == 1:
        for key in pending:
            try:
                results[key] = fn(*key, settings[key[0]], args, trial_dir)
            except Exception as e:
                failure(key, e)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=limit_threads,
                                initargs=(1,)) as pool:
        futs = {key: pool.submit(fn, *key, settings[key[0]], args, trial_dir) for key in pending}
        for key, fut in futs.items():
            try:
                results[key] = fut.result()
            except Exception as e:
                failure(key, e)


def main(args: Args) -> dict:
    limit_threads(1)
    # fixed once, so every trial (and every worker process) compares against the same moment
    args = dataclasses.replace(args, deadline=_absolute_deadline(args.deadline))
    tasks = [t for t in args.tasks.split(",") if t]
    if args.quick:
        tasks = ["pendulum"]
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"--tasks: unknown task {t!r} (known: {', '.join(TASKS)})")
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"--methods: unknown method {m!r} (known: {', '.join(METHODS)})")
    seeds_override = dict(kv.split("=") for kv in args.seeds.split(",") if kv)
    settings = {t: task_settings(t, args.quick) for t in tasks}
    out_dir = Path(args.out_dir)
    trial_dir = out_dir / "sample_efficiency"
    trial_dir.mkdir(parents=True, exist_ok=True)
    # seeds outermost within a task, so an early stop still leaves every method with the same seeds
    todo = [(task, method, seed) for task in tasks
            for seed in range(int(seeds_override.get(task, settings[task]["seeds"]))) for method in methods]
    if args.only_low_data:
        todo = []
    results: dict[tuple, dict | None] = {}
    pending = []
    for key in todo:
        f = trial_dir / "{}_{}_s{}.json".format(*key)
        stored = json.loads(f.read_text()) if f.is_file() and not args.fresh else None
        st = settings[key[0]]
        if (stored is not None and stored.get("settings") == trial_settings(key[1], st)
                and not _stale_distillation(stored, st, args)):
            results[key] = stored
        else:
            pending.append(key)
    jobs = max(1, int(args.jobs))
    failed: dict[str, str] = {}

    def failure(key: tuple, e: BaseException) -> None:
        # one broken trial must not cost the hours of the others: report it, keep going, exit non-zero at the end
        name = "{}/{}/s{}".format(*key)
        failed[name] = f"{type(e).__name__}: {e}"
        print(f"=== {name} FAILED: {failed[name]}", flush=True)
        results[key] = None

    _run_trials(run_trial, pending, settings, args, trial_dir, jobs, results, failure)
    # the low-data budgets: one Dyna run per (budget, seed), model-free runs evaluated at every budget
    low_todo = []
    if args.low_data:
        for task in tasks:
            if "low_data" in settings[task]:
                n = int(seeds_override.get(task, settings[task]["low_data"]["seeds"]))
                keys = low_data_keys(task, settings[task], methods, n)
                if args.low_budgets:
                    only = {int(b) for b in args.low_budgets.split(",") if b}
                    keys = [k for k in keys if k[2] is None or k[2] in only]
                low_todo += keys
    low_results: dict[tuple, dict | None] = {}
    low_pending = []
    for key in low_todo:
        task, m, b, seed = key
        f = trial_dir / (f"low_{task}_{m}" + (f"_b{b}" if b else "") + f"_s{seed}.json")
        stored = json.loads(f.read_text()) if f.is_file() and not args.fresh else None
        if stored is not None and stored.get("settings") == low_data_trial_settings(m, settings[task]):
            low_results[key] = stored
        else:
            low_pending.append(key)

    def low_name(key: tuple) -> str:
        task, m, b, seed = key
        return f"low/{task}/{m}" + (f"@{b}" if b else "") + f"/s{seed}"

    def low_failure(key: tuple, e: BaseException) -> None:
        name = low_name(key)
        failed[name] = f"{type(e).__name__}: {e}"
        print(f"=== {name} FAILED: {failed[name]}", flush=True)
        low_results[key] = None

    _run_trials(run_low_trial, low_pending, settings, args, trial_dir, jobs, low_results, low_failure)
    low_trials = [low_results[k] for k in low_todo if low_results[k] is not None]
    low_agg = {t: low_data_aggregate([x for x in low_trials if x["task"] == t], settings[t])
               for t in tasks if any(x["task"] == t for x in low_trials)}
    trials = [results[k] for k in todo if results[k] is not None]
    skipped = ["{}/{}/s{}".format(*k) for k in todo if results[k] is None and "{}/{}/s{}".format(*k) not in failed]
    skipped += [low_name(k) for k in low_todo if low_results[k] is None and low_name(k) not in failed]
    agg = aggregate(trials, settings)
    png = plot(trials, settings, out_dir / "sample_efficiency.png")
    import platform

    import stable_baselines3
    import torch

    cmd = "python benchmarks/sample_efficiency.py" + (" --quick" if args.quick else "") + (
        " --only-low-data" if args.only_low_data else "") + (
        f" --low-budgets {args.low_budgets}" if args.low_budgets else "") + (f" --methods {args.methods}" if args.methods != Args.methods
                                                              else "") + (
        f" --tasks {args.tasks}" if args.tasks != Args.tasks else "") + (
        f" --seeds {args.seeds}" if args.seeds else "") + (f" --jobs {jobs}" if jobs > 1 else "")
    side = "one after another" if jobs == 1 else f"{jobs} at a time (wall times share the machine)"
    notes = [f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, SB3 "
             f"{stable_baselines3.__version__}; one thread per trial, trials run {side}."]
    result = {"args": dataclasses.asdict(args), "settings": settings, "trials": trials, "aggregate": agg,
              "low_data_trials": low_trials, "low_data": low_agg,
              "not_run": skipped, "failed": failed, "plot": str(png)}
    (out_dir / "sample_efficiency.json").write_text(json.dumps(result, indent=1))
    md = markdown_table(agg, settings, cmd, notes) if todo else ""
    low_md = "\n".join(["## Sample efficiency at low-data budgets", "", f"Command: `{cmd}`. " + " ".join(notes), ""]
                        + [low_data_table(t, a, settings[t]) for t, a in low_agg.items()]) if low_agg else ""
    print(md + "\n" + low_md)
    if skipped:
        print("not run (deadline): " + ", ".join(skipped))
    if failed:
        print("failed (left out of the table; a restart runs them again): " + ", ".join(failed))
    if args.write_docs and failed:
        print(f"{args.docs} not rewritten: the table would miss the failed trials")
    elif args.write_docs:
        # the main table and the low-data table have a section each: --only-low-data rewrites the second alone
        if todo:
            write_section("sample_efficiency", md, ROOT / args.docs)
        if low_md:
            write_section("sample_efficiency_low_data", low_md, ROOT / args.docs)
        fig = figures(agg) if todo else {}
        for t, a in low_agg.items():
            fig[f"{t}_low_data"] = {m: {b: {k: c[k] for k in ("mean", "std", "worst_seed")}
                                        | ({"every_seed_meets_target": c["every_seed_meets_target"]}
                                           if "target" in c else {})
                                        for b, c in per_b.items()} for m, per_b in a["methods"].items()}
        write_results("sample_efficiency", fig, cmd, ROOT / args.docs)
    return result


def _parse() -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    return Args(**vars(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(1 if main(_parse())["failed"] else 0)
