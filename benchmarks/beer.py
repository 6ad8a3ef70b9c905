"""BEER against DDPG and TD3: returns, critic effective rank and gradient-step cost, same seeds and budgets.

All three algorithms use the BEER paper's DDPG settings (256-256 networks, Adam 3e-4, batch 256,
tau 0.005, Gaussian exploration noise 0.1, gamma 0.99); DDPG and TD3 are SB3's own classes, BEER is
``sindyrl.agents.BEER`` (base "ddpg", beta = 1e-3). For each task and seed every algorithm gets the
same seed and step budget; the policy is evaluated deterministically every ``eval_every`` steps on
the same initial states. The gradient-step time ratio BEER/DDPG is measured twice in the same run:
interleaved ``train()`` calls on one shared replay buffer (the headline figure), and the time spent
in ``train()`` during the learning runs.

Run (figures in docs/benchmarks.md, section ``beer``):

    .venv/bin/python benchmarks/beer.py --out results/beer --write-docs docs/benchmarks.md

Tiny smoke run (the test suite does this): ``--pendulum-steps 300 --swimmer-steps 0 --seeds 1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import DDPG, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.noise import NormalActionNoise

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.docs_output import slug, write_results, write_section  # noqa: E402
from sindyrl.agents import BEER, critic_features, effective_rank  # noqa: E402


@dataclass
class Args:
    pendulum_steps: int = 15_000
    """environment steps per Pendulum-v1 run"""
    swimmer_steps: int = 10_000
    """environment steps per Swimmer-v5 run (0 skips Swimmer; the zoo's budget is 1M)"""
    seeds: int = 3
    """seeds 0..seeds-1, the same for every algorithm"""
    eval_episodes: int = 5
    """deterministic evaluation episodes per evaluation point"""
    evals_per_run: int = 10
    """evaluation points along each run"""
    timing_steps: int = 200
    """gradient steps per timed train() call"""
    timing_repeats: int = 9
    """interleaved timing repeats (the median ratio is reported)"""
    threads: int = 1
    """torch threads (1: steadier timings on a shared machine)"""
    out: str = "results/beer"
    """output directory for beer.json and beer_curves.png (not committed)"""
    write_docs: str = ""
    """if set, replace the beer section of this markdown file with the results (and write results/beer.json
    beside it)"""


ALGOS = ("BEER", "DDPG", "TD3")
SHARED = dict(learning_rate=3e-4, batch_size=256, tau=0.005, gamma=0.99, buffer_size=1_000_000)


def make_model(algo: str, env_id: str, seed: int, learning_starts: int) -> BaseAlgorithm:
    """One of the compared algorithms with the shared settings."""
    env = gym.make(env_id)
    n_act = int(np.prod(env.action_space.shape))
    kwargs = dict(
        SHARED,
        learning_starts=learning_starts,
        action_noise=NormalActionNoise(np.zeros(n_act), 0.1 * np.ones(n_act)),
        policy_kwargs=dict(net_arch=[256, 256]),  # a fresh dict: SB3's DDPG writes n_critics into it
        seed=seed,
        device="cpu",
    )
    if algo == "BEER":
        return BEER("MlpPolicy", env, beer_coef=1e-3, base="ddpg", **kwargs)
    return {"DDPG": DDPG, "TD3": TD3}[algo]("MlpPolicy", env, **kwargs)


def evaluate(model: BaseAlgorithm, env_id: str, n_episodes: int) -> float:
    """Mean deterministic return; episode i starts from reset(seed=10_000 + i) for every algorithm."""
    env = gym.make(env_id)
    returns = []
    for i in range(n_episodes):
        obs, _ = env.reset(seed=10_000 + i)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, r, terminated, truncated, _ = env.step(action)
            total, done = total + float(r), terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def critic_srank(model: BaseAlgorithm, seed: int) -> int:
    """srank (delta 0.01) of the first critic's features on 256 replay transitions (a fixed draw)."""
    rng_state = np.random.get_state()
    np.random.seed(seed)  # SB3's replay buffer samples with numpy's global generator
    data = model.replay_buffer.sample(256)
    np.random.set_state(rng_state)
    with th.no_grad():
        phi = critic_features(model.critic, data.observations, data.actions)[0]
    return effective_rank(phi, 0.01)


class Curve(BaseCallback):
    """Evaluates every ``every`` steps and records (step, return, srank)."""

    def __init__(self, env_id: str, every: int, episodes: int, seed: int):
        super().__init__()
        self.env_id, self.every, self.episodes, self.seed = env_id, every, episodes, seed
        self.points: list[tuple[int, float, int]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.points.append(
                (self.num_timesteps, evaluate(self.model, self.env_id, self.episodes), critic_srank(self.model, self.seed))
            )
        return True


def timed_train(model: BaseAlgorithm) -> dict[str, float]:
    """Wrap the model's train() to accumulate its wall time and gradient steps."""
    acc = {"seconds": 0.0, "steps": 0}
    inner = model.train

    def train(gradient_steps: int, batch_size: int = 100) -> None:
        t0 = time.perf_counter()
        inner(gradient_steps, batch_size)
        acc["seconds"] += time.perf_counter() - t0
        acc["steps"] += gradient_steps

    model.train = train  # type: ignore[method-assign]
    return acc


def learning_runs(env_id: str, steps: int, args: Args) -> dict:
    """Every algorithm on every seed: curves, final return, srank, time per gradient step."""
    learning_starts = min(1000, steps // 3)
    every = max(steps // args.evals_per_run, 1)
    out: dict = {"steps": steps, "learning_starts": learning_starts, "eval_every": every, "runs": {}}
    for algo in ALGOS:
        runs = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            model = make_model(algo, env_id, seed, learning_starts)
            model.set_logger(configure(None, []))
            acc = timed_train(model)
            curve = Curve(env_id, every, args.eval_episodes, seed)
            model.learn(steps, callback=curve)
            final = curve.points[-1] if curve.points and curve.points[-1][0] == steps else None
            final_return = final[1] if final else evaluate(model, env_id, args.eval_episodes)
            run = {
                "seed": seed,
                "curve": curve.points,
                "final_return": final_return,
                "srank": critic_srank(model, seed),
                "ms_per_gradient_step": 1e3 * acc["seconds"] / max(acc["steps"], 1),
                "gradient_steps": acc["steps"],
                "wall_seconds": time.perf_counter() - t0,
            }
            if isinstance(model, BEER):
                run["beer_stats"] = dict(model.beer_stats)
            runs.append(run)
            print(
                f"{env_id} {algo} seed {seed}: return {final_return:.1f}, srank {run['srank']}, "
                f"{run['ms_per_gradient_step']:.2f} ms/step, {run['wall_seconds']:.0f} s",
                flush=True,
            )
        out["runs"][algo] = runs
    return out


def interleaved_timing(env_id: str, args: Args) -> dict:
    """Time per gradient step of BEER, DDPG and TD3 on one shared replay buffer, interleaved repeats."""
    models = {algo: make_model(algo, env_id, 0, learning_starts=2000) for algo in ALGOS}
    models["BEER"].learn(2000)  # random actions only: fills the buffer without training
    for model in models.values():
        model.replay_buffer = models["BEER"].replay_buffer
        model.set_logger(configure(None, []))
        model.train(20, 256)  # warm-up
    times: dict[str, list[float]] = {algo: [] for algo in ALGOS}
    for _ in range(args.timing_repeats):
        for algo, model in models.items():
            t0 = time.perf_counter()
            model.train(args.timing_steps, 256)
            times[algo].append(1e3 * (time.perf_counter() - t0) / args.timing_steps)
    ratios = np.array(times["BEER"]) / np.array(times["DDPG"])
    return {
        "ms_per_step": {a: float(np.median(t)) for a, t in times.items()},
        "beer_over_ddpg_median": float(np.median(ratios)),
        "beer_over_ddpg_quartiles": [float(np.quantile(ratios, 0.25)), float(np.quantile(ratios, 0.75))],
        "td3_over_ddpg_median": float(np.median(np.array(times["TD3"]) / np.array(times["DDPG"]))),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, env_id in zip(axes[0], tasks):
        for algo, runs in results["tasks"][env_id]["runs"].items():
            if not runs[0]["curve"]:
                continue
            steps = np.array([p[0] for p in runs[0]["curve"]])
            returns = np.array([[p[1] for p in r["curve"]] for r in runs])
            mean, std = returns.mean(0), returns.std(0)
            ax.plot(steps, mean, label=algo)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set(title=env_id, xlabel="environment steps", ylabel="return (mean ± std over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(results: dict, command: str) -> str:
    a = results["args"]
    lines = [
        "## BEER against DDPG and TD3",
        "",
        f"Command: `{command}` (torch threads {a['threads']}; {results['date']}).",
        "",
        "Same seeds (0..{}) and budgets for all three; the BEER paper's DDPG settings for all "
        "(256-256, Adam 3e-4, batch 256, tau 0.005, Gaussian exploration 0.1, gamma 0.99); BEER is "
        "`sindyrl.agents.BEER(base='ddpg', beer_coef=1e-3)`. Final return: deterministic policy, "
        "{} episodes from fixed initial states, mean ± std over seeds. srank (delta 0.01) of the "
        "first critic's last hidden layer on 256 replay transitions at the end of training.".format(
            a["seeds"] - 1, a["eval_episodes"]
        ),
        "",
        "| task | steps (learning starts) | algorithm | final return | srank | ms / gradient step (in the runs) |",
        "|---|---|---|---|---|---|",
    ]
    for env_id, task in results["tasks"].items():
        for algo, runs in task["runs"].items():
            fr = np.array([r["final_return"] for r in runs])
            sr = np.array([r["srank"] for r in runs])
            ms = np.array([r["ms_per_gradient_step"] for r in runs])
            lines.append(
                f"| {env_id} | {task['steps']:,} ({task['learning_starts']:,}) | {algo} | "
                f"{fr.mean():.1f} ± {fr.std():.1f} | {sr.mean():.0f} ± {sr.std():.0f} | {ms.mean():.2f} |"
            )
    lines += [
        "",
        "Gradient-step cost, interleaved `train()` calls on one shared replay buffer "
        f"({a['timing_repeats']} repeats × {a['timing_steps']} steps, batch 256; median, quartiles):",
        "",
        "| task | BEER ms | DDPG ms | TD3 ms | BEER / DDPG | TD3 / DDPG |",
        "|---|---|---|---|---|---|",
    ]
    for env_id, t in results["timing"].items():
        ms = t["ms_per_step"]
        q = t["beer_over_ddpg_quartiles"]
        lines.append(
            f"| {env_id} | {ms['BEER']:.2f} | {ms['DDPG']:.2f} | {ms['TD3']:.2f} | "
            f"**{t['beer_over_ddpg_median']:.2f}** ({q[0]:.2f}–{q[1]:.2f}) | {t['td3_over_ddpg_median']:.2f} |"
        )
    lines += ["", "Return curves: `beer_curves.png` in the output directory (not committed)."]
    return "\n".join(lines)


def figures(results: dict) -> dict:
    """The headline figures for docs/results/beer.json: gradient-step cost ratios and final returns per task."""
    out: dict = {}
    for env_id, t in results["timing"].items():
        out[slug(env_id)] = {"beer_over_ddpg_median": t["beer_over_ddpg_median"],
                             "td3_over_ddpg_median": t["td3_over_ddpg_median"],
                             "ms_per_gradient_step": t["ms_per_step"]}
    for env_id, task in results["tasks"].items():
        for algo, runs in task["runs"].items():
            fr = [r["final_return"] for r in runs]
            out.setdefault(slug(env_id), {})[algo] = {"final_return_mean": float(np.mean(fr)),
                                                      "final_return_std": float(np.std(fr)),
                                                      "srank_mean": float(np.mean([r["srank"] for r in runs]))}
    return out


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    return Args(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    th.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = {"Pendulum-v1": args.pendulum_steps, "Swimmer-v5": args.swimmer_steps}
    results: dict = {"args": dataclasses.asdict(args), "date": time.strftime("%Y-%m-%d"), "tasks": {}, "timing": {}}
    for env_id, steps in tasks.items():
        if steps <= 0:
            continue
        results["timing"][env_id] = interleaved_timing(env_id, args)
        print(f"{env_id} timing: {results['timing'][env_id]}", flush=True)
        results["tasks"][env_id] = learning_runs(env_id, steps, args)
        (out / "beer.json").write_text(json.dumps(results, indent=1))  # partial results survive a kill
    plot(results, out / "beer_curves.png")
    command = "python benchmarks/beer.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in dataclasses.asdict(args).items() if k != "write_docs"
    )
    text = markdown(results, command)
    print(text)
    if args.write_docs:
        write_section("beer", text, Path(args.write_docs))
        write_results("beer", figures(results), command, Path(args.write_docs))
    return results


if __name__ == "__main__":
    main()
