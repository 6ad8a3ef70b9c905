"""The Dyna loop of SINDy-RL (Zolman, Fasel, Kutz, Brunton 2024, Algorithm 1).

random real data -> fit E-SINDy dynamics (+ reward) -> train an SB3 agent in the
batched surrogate -> evaluate on the real env -> collect real steps with the
policy -> refit -> ...

Every iteration checkpoints the real data, the models, the agent and the loop
state atomically, so ``Dyna(...).run()`` on the same run directory resumes
where a crash left it, without losing a real transition.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import numpy as np

from .config import Config
from .data import RandomPolicy, TransitionBuffer, collect
from .dynamics import SINDyDynamics
from .evaluation import evaluate_policy, sb3_act
from .reward import SINDyReward, known_reward
from .runs import Run, algorithm_class
from .sparse import SparseModel
from .surrogate import SurrogateVecEnv

__all__ = ["Dyna", "build_surrogate", "fit_models"]

log = logging.getLogger("sindyrl")


def fit_models(cfg: Config, buffer: TransitionBuffer, spec, seed: int):
    """Fit the dynamics (and the reward unless it is known) on ``buffer``; returns (dynamics, reward, scores)."""
    train_mask, val_mask = buffer.split_episodes(cfg.dynamics.holdout, seed)
    if cfg.dynamics.model == "nn":
        from .nn_dynamics import NNEnsembleDynamics

        dyn = NNEnsembleDynamics.from_config(cfg.dynamics, spec.obs_names, spec.action_names, spec.unit_pairs,
                                             seed).fit(buffer, val_mask)
    else:
        dyn = SINDyDynamics.from_config(cfg.dynamics, spec.obs_names, spec.action_names, spec.unit_pairs,
                                        seed).fit(buffer, val_mask)
    scores = dict(dyn.scores_)
    if cfg.reward.known:
        reward = known_reward(cfg.reward.known)
    else:
        reward = SINDyReward.from_config(cfg.reward, spec.obs_names, spec.action_names, seed).fit(buffer, val_mask)
        scores.update(reward.scores_)
    return dyn, reward, scores


def build_surrogate(cfg: Config, dynamics, reward, buffer: TransitionBuffer, spec, seed: int,
                    n_envs: int | None = None) -> SurrogateVecEnv:
    """The batched surrogate of a config, reset from every stored real state."""
    import gymnasium as gym

    horizon = cfg.surrogate.horizon or spec.horizon or 1000
    lo = np.minimum(buffer.obs.min(0), buffer.next_obs.min(0))
    hi = np.maximum(buffer.obs.max(0), buffer.next_obs.max(0))
    obs_space = gym.spaces.Box(spec.obs_low.astype(np.float32), spec.obs_high.astype(np.float32), dtype=np.float32)
    act_space = gym.spaces.Box(spec.act_low.astype(np.float32), spec.act_high.astype(np.float32), dtype=np.float32)
    return SurrogateVecEnv(
        dynamics, reward, buffer.obs, obs_space, act_space, horizon, n_envs=n_envs or cfg.agent.n_envs,
        ensemble_mode=cfg.surrogate.ensemble_mode, state_bounds=(lo, hi), bounds_margin=cfg.surrogate.bounds_margin,
        disagreement_threshold=cfg.surrogate.disagreement_threshold, seed=seed,
    )


def _save_agent(agent, path) -> None:
    """SB3 writes its zip in place; write a temporary file and rename it, so a crash never leaves half a zip."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.zip")
    agent.save(tmp)
    os.replace(tmp, path)


class _Progress:
    """SB3 callback printing surrogate training progress (one line, updated in place)."""

    def __new__(cls, total: int, label: str, enabled: bool):
        from stable_baselines3.common.callbacks import BaseCallback

        class _CB(BaseCallback):
            def _on_training_start(self) -> None:
                self.start = self.num_timesteps
                self.bar = None
                if enabled and sys.stderr.isatty():
                    from tqdm import tqdm

                    self.bar = tqdm(total=total, desc=label, unit="step", leave=False, mininterval=1.0)

            def _on_step(self) -> bool:
                if self.bar is not None:
                    self.bar.n = min(self.num_timesteps - self.start, total)
                    self.bar.refresh() if self.n_calls % 200 == 0 else None
                return True

            def _on_training_end(self) -> None:
                if self.bar is not None:
                    self.bar.close()

        return _CB()


class Dyna:
    """Dyna-style model-based RL with sparse surrogate models.

    Parameters
    ----------
    config : Config
        The run configuration.
    run : Run
        Where everything is written; an existing run directory resumes.
    echo : callable, default print
        Progress messages (pass ``lambda *a: None`` to silence).
    progress_bar : bool
        Show a progress bar while training in the surrogate.
    """

    def __init__(self, config: Config, run: Run, echo: Callable[..., None] = print, progress_bar: bool = True):
        self.cfg = config
        self.run_dir = run
        self.echo = echo
        self.progress_bar = progress_bar
        self.spec = run.spec

    # ----------------------------------------------------------- helpers
    def _make_agent(self, env):
        cfg = self.cfg.agent
        cls = algorithm_class(cfg.algo)
        kwargs = dict(cfg.kwargs)
        kwargs.setdefault("seed", self.cfg.seed)
        kwargs.setdefault("verbose", 0)
        kwargs.setdefault("device", "cpu")
        try:
            return cls(cfg.policy, env, **kwargs)
        except TypeError as e:
            raise ValueError(f"agent.kwargs: {e}") from None

    def _collect(self, buffer: TransitionBuffer, n: int, policy, seed: int, max_ep: int | None) -> None:
        env = self.run_dir.make_env(seed=seed)
        try:
            collect(env, n, policy=policy, seed=seed, buffer=buffer, max_episode_steps=max_ep)
        finally:
            env.close()
        buffer.save(self.run_dir.data_path)

    # -------------------------------------------------------------- loop
    def run(self) -> dict:
        cfg, run, echo = self.cfg, self.run_dir, self.echo
        state = run.read_state()
        rows = run.read_metrics()
        t_start = time.time() - float(state.get("wall_seconds", 0.0))
        seed = cfg.seed
        from stable_baselines3.common.utils import set_random_seed

        set_random_seed(seed)
        # ---- real data: resume from disk, or random off-policy collection
        if run.data_path.is_file():
            buffer = run.load_data()
            echo(f"[data] resumed {len(buffer)} real transitions from {run.data_path}")
        else:
            buffer = TransitionBuffer(len(self.spec.obs_names), len(self.spec.action_names))
        real_collect = int(state.get("real_steps_collect", 0))
        real_eval = int(state.get("real_steps_eval", 0))
        surrogate_steps = int(state.get("surrogate_steps", 0))
        if real_collect == 0 and len(buffer) == 0:
            env0 = run.make_env(seed=seed)
            policy = RandomPolicy(env0.action_space, seed)
            env0.close()
            self._collect(buffer, cfg.collect.random_steps, policy, seed, cfg.collect.random_episode_steps)
            real_collect = len(buffer)
            echo(f"[collect] {real_collect} random real steps ({buffer.n_episodes} episodes) -> {run.data_path}")
            state.update(real_steps_collect=real_collect)
            run.write_state(state)
        elif real_collect != len(buffer):
            # the buffer on disk is the truth: it is saved before the state is
            real_collect = len(buffer)
        agent = None
        if run.agent_path.is_file():
            agent = run.load_agent()
            echo(f"[agent] resumed {cfg.agent.algo.upper()} from {run.agent_path}")
        start_it = int(state.get("iteration", 0))
        best = state.get("best_eval_return")
        for it in range(start_it, cfg.dyna.iterations):
            t_it = time.time()
            # ---- fit models on all real data
            n_fit = len(buffer)
            dyn, reward, scores = fit_models(cfg, buffer, self.spec, seed + it)
            sparse = isinstance(getattr(dyn, "model_", None), SparseModel)
            if sparse:
                run.save_model("dynamics", dyn.model_)
            if not cfg.reward.known:
                run.save_model("reward", reward.model_)
            size = f"{dyn.model_.nnz} terms, {dyn.model_.n_models} members" if sparse else f"{dyn.n_models} networks"
            echo(f"[fit {it + 1}/{cfg.dyna.iterations}] dynamics on {len(buffer)} transitions: "
                 f"{size}, one-step error "
                 f"{scores['model_one_step_error']:.4f}, {cfg.dynamics.rollout_steps}-step rollout error "
                 f"{scores['model_rollout_error']:.4f}")
            if it == start_it and sparse:
                echo("  learned dynamics:\n    " + "\n    ".join(dyn.equations()))
                if not cfg.reward.known:
                    echo("  learned reward:\n    " + "\n    ".join(reward.equations()))
            # ---- train the agent in the surrogate
            venv = build_surrogate(cfg, dyn.model_ if sparse else dyn, reward, buffer, self.spec,
                                   seed + 1000 * (it + 1))
            if agent is None:
                agent = self._make_agent(venv)
                n_train = cfg.agent.initial_steps
            else:
                agent.set_env(venv)
                n_train = cfg.agent.steps_per_iteration
            if n_train > 0:
                cb = _Progress(n_train, f"[train {it + 1}] surrogate", self.progress_bar)
                agent.learn(n_train, reset_num_timesteps=False, callback=cb)
            surrogate_steps += n_train
            # ---- evaluate on the real env (counted separately from collection)
            returns = evaluate_policy(sb3_act(agent), run.make_env, cfg.dyna.eval_episodes, seed=10_000 + seed)
            real_eval += int(returns.lengths.sum())
            # ---- collect real steps with the current policy (not after the last iteration)
            last = it == cfg.dyna.iterations - 1
            reached = cfg.dyna.target_return is not None and returns.mean() >= cfg.dyna.target_return
            if not last and not reached and cfg.collect.steps_per_iteration > 0:
                act = sb3_act(agent, deterministic=not cfg.collect.stochastic)
                self._collect(buffer, cfg.collect.steps_per_iteration, act, seed + 100 * (it + 1), None)
                real_collect = len(buffer)
            # ---- checkpoint (data first, then agent, then state: a crash in between is harmless)
            _save_agent(agent, run.agent_path)
            if best is None or returns.mean() > best:
                best = float(returns.mean())
                _save_agent(agent, run.path / "agent" / "best.zip")
            row = {
                "iteration": it + 1, "real_steps_fit": n_fit, "real_steps_collect": real_collect, "real_steps_eval": real_eval,
                "surrogate_steps": surrogate_steps, "eval_return_mean": float(returns.mean()),
                "eval_return_std": float(returns.std()), "eval_return_min": float(returns.min()),
                "model_one_step_error": scores["model_one_step_error"],
                "model_rollout_error": scores["model_rollout_error"],
                "dynamics_nnz": dyn.model_.nnz if sparse else None,
                "dynamics_members": dyn.model_.n_models if sparse else dyn.n_models,
                "wall_seconds": time.time() - t_start,
            }
            if "reward_error" in scores:
                row["reward_error"] = scores["reward_error"]
            for k, v in (getattr(agent, "beer_stats", None) or {}).items():
                row[k] = v
            rows.append(row)
            run.write_metrics(rows)
            state.update(iteration=it + 1, real_steps_collect=real_collect, real_steps_eval=real_eval,
                         surrogate_steps=surrogate_steps, wall_seconds=time.time() - t_start, best_eval_return=best)
            run.write_state(state)
            per_ep = " ".join(f"{r:.0f}" for r in returns)
            echo(f"[iter {it + 1}/{cfg.dyna.iterations}] real return {returns.mean():.1f} ± {returns.std():.1f} "
                 f"(episodes: {per_ep}) | real steps {real_collect} (+{real_eval} eval) | surrogate steps "
                 f"{surrogate_steps} | {time.time() - t_it:.0f}s")
            if reached:
                echo(f"[dyna] target return {cfg.dyna.target_return} reached: stopping early")
                state.update(iteration=cfg.dyna.iterations)
                run.write_state(state)
                break
        if agent is None:
            raise RuntimeError("Dyna: no agent was trained (dyna.iterations must be >= 1)")
        # ---- final evaluation: fixed seeds, deterministic
        n_final = cfg.dyna.final_eval_episodes
        final = evaluate_policy(sb3_act(agent), run.make_env, n_final, seed=seed)
        real_eval += int(final.lengths.sum())
        summary = {
            "env_id": cfg.env.id, "algo": cfg.agent.algo, "seed": seed,
            "real_steps_collect": real_collect, "real_steps_eval": real_eval, "surrogate_steps": surrogate_steps,
            "eval_return_mean": float(final.mean()), "eval_return_std": float(final.std()),
            "eval_return_min": float(final.min()), "eval_episodes": n_final,
            "eval_returns": [float(r) for r in final],
            "dynamics_nnz": (rows[-1].get("dynamics_nnz") or None) if rows else None,
            "train_wall_seconds": time.time() - t_start,
        }
        run.update_summary(summary)
        run.write_manifest(timings={"train": summary["train_wall_seconds"]})
        echo(f"[eval] {n_final} real episodes (seeds {seed}..{seed + n_final - 1}): return "
             f"{final.mean():.1f} ± {final.std():.1f} (min {final.min():.1f}) after {real_collect} real steps")
        try:
            from .plots import plot_training

            for p in plot_training(run):
                echo(f"[plot] {p}")
        except Exception as e:  # plots never fail a run
            log.warning("plotting failed: %s", e)
            echo(f"[plot] skipped ({e})")
        return summary
