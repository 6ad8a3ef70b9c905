"""The Dyna loop of SINDy-RL (Zolman, Fasel, Kutz, Brunton 2024, Algorithm 1).

random real data -> fit E-SINDy dynamics (+ reward) -> train an SB3 agent in the
batched surrogate -> assess it in the surrogate from many stored real states ->
collect real steps with the policy -> refit -> ...

Each iteration runs the phases ``fit -> train -> assess -> collect ->
checkpoint``. *Assess* costs no real step: the agent runs one surrogate
episode from each of a few hundred stored real states at once. When some
starts fail (stuck, saturated, diverging) while the rest succeed, the agent
trains further and the checkpoint that does best on that test is kept. The
learning curve is the return of the real episodes collected anyway, next to
the surrogate estimate; a per-iteration real evaluation is opt-in
(``dyna.eval_episodes``), and one deterministic real evaluation confirms the
result at the end.

Every iteration checkpoints the real data, the models, the agent and the
loop state (:class:`DynaState`) atomically, so ``Dyna(...).run()`` on the
same run directory resumes where a crash left it, without losing a real
transition.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from .config import Config
from .data import RandomPolicy, TransitionBuffer, collect
from .dynamics import SINDyDynamics
from .evaluation import (
    SurrogateAssessment,
    assess_in_surrogate,
    assessment_starts,
    evaluate_policy,
    sb3_act,
    sb3_act_batch,
)
from .reward import SINDyReward, known_reward
from .runs import Run, algorithm_class, quiet_logger
from .surrogate import SurrogateVecEnv
from .tensorboard import DynaBoard, agent_log_dir
from .termination import BUILTIN_TERMINATIONS, BoxTermination, resolve_termination

__all__ = ["Dyna", "DynaState", "ProgressCallback", "build_surrogate", "fit_models", "final_eval_episodes"]

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
    # the library and threshold used, and with ``auto`` what was tried (``dynamics_selection``: a readable table)
    scores.update(getattr(dyn, "choice_", {}))
    if buffer.terminated.any() and cfg.env.termination in (None, "learned") and cfg.env.id not in BUILTIN_TERMINATIONS:
        # how well a rule learned on the training episodes finds the episode ends of the held-out ones
        rule = BoxTermination.fit(buffer.next_obs[train_mask], buffer.terminated[train_mask], spec.obs_names)
        if val_mask.any():
            scores.update(rule.score(buffer.next_obs[val_mask], buffer.terminated[val_mask]))
    if cfg.reward.known_spec:
        reward = known_reward(cfg.reward.known_spec)
    else:
        reward = SINDyReward.from_config(cfg.reward, spec.obs_names, spec.action_names, seed,
                                         spec.unit_pairs).fit(buffer, val_mask)
        scores.update(reward.scores_)
        scores.update(reward.choice_)
    return dyn, reward, scores


def build_surrogate(cfg: Config, dynamics, reward, buffer: TransitionBuffer, spec, seed: int,
                    n_envs: int | None = None, termination="auto") -> SurrogateVecEnv:
    """The batched surrogate of a config, reset from every stored real state.

    ``termination="auto"`` resolves ``env.termination`` (see :func:`sindyrl.termination.resolve_termination`).
    """
    import gymnasium as gym

    if isinstance(termination, str) and termination == "auto":
        termination = resolve_termination(cfg.env.termination, cfg.env.id, buffer, spec.obs_names)

    horizon = cfg.surrogate.horizon or spec.horizon or buffer.episode_limit() or 1000
    lo, hi = buffer.state_bounds()
    obs_space = gym.spaces.Box(spec.obs_low.astype(np.float32), spec.obs_high.astype(np.float32), dtype=np.float32)
    act_space = gym.spaces.Box(spec.act_low.astype(np.float32), spec.act_high.astype(np.float32), dtype=np.float32)
    return SurrogateVecEnv(
        dynamics, reward, buffer.obs, obs_space, act_space, horizon, n_envs=n_envs or cfg.agent.n_envs,
        ensemble_mode=cfg.surrogate.ensemble_mode, state_bounds=(lo, hi), bounds_margin=cfg.surrogate.bounds_margin,
        disagreement_threshold=cfg.surrogate.disagreement_threshold, seed=seed, termination=termination,
    )


#: real evaluations that confirm a run by default, each as many episodes as the final one: the neural policy,
#: the sparse policy, LQR, MPC and the board (whose Python reference reuses the sparse policy's returns)
CONFIRMATIONS = 5


def final_eval_episodes(cfg: Config, real_steps_collect: int, horizon: int | None) -> int:
    """Episodes of the final real evaluation: ``dyna.final_eval_episodes``, or by default as many as a fifth of
    the collected real steps pay for (at least 1, at most 20). The later stages confirm on as many episodes
    (:meth:`sindyrl.runs.Run.confirm_episodes`), so by default the run's real evaluation never costs more
    than its training."""
    if cfg.dyna.final_eval_episodes is not None:
        return int(cfg.dyna.final_eval_episodes)
    return int(min(20, max(1, real_steps_collect // (CONFIRMATIONS * max(int(horizon or 1000), 1)))))


def _snapshot(agent) -> dict:
    """A copy of the agent's parameters (and optimizer state) that later training leaves alone: SB3's
    ``get_parameters`` returns the live state dicts, whose tensors the optimizer updates in place."""
    import copy

    return copy.deepcopy(agent.get_parameters())


def _save_agent(agent, path) -> None:
    """SB3 writes its zip in place; write a temporary file and rename it, so a crash never leaves half a zip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.zip")
    agent.save(tmp)
    os.replace(tmp, path)


class ProgressCallback(BaseCallback):
    """Surrogate training progress on one line, updated in place (only on a terminal)."""

    def __init__(self, total: int, label: str, enabled: bool = True):
        super().__init__()
        self.total, self.label, self.enabled = int(total), label, enabled
        self.bar = None
        self.start = 0

    def _on_training_start(self) -> None:
        self.start = self.num_timesteps
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.label, unit="step", leave=False, mininterval=1.0)

    def _on_step(self) -> bool:
        if self.bar is not None and self.n_calls % 200 == 0:
            self.bar.n = min(self.num_timesteps - self.start, self.total)
            self.bar.refresh()
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class DynaState:
    """The loop's counters, saved whole to ``state.json`` after every iteration (and loaded whole on resume)."""

    iteration: int = 0
    real_steps_collect: int = 0
    #: real steps of the opt-in per-iteration evaluations
    real_steps_eval: int = 0
    surrogate_steps: int = 0
    wall_seconds: float = 0.0
    #: set once a target return was reached or the real-step budget used: the loop is finished
    stopped_early: bool = False
    #: real steps of the last policy batch (the adaptive batches of ``collect.min_steps_per_iteration``)
    last_batch: int = 0

    @classmethod
    def load(cls, run: Run) -> DynaState:
        data = run.read_state()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, run: Run) -> None:
        run.write_state(dataclasses.asdict(self))


@dataclass
class _Iteration:
    """What one iteration produced, for the metrics row and the console."""

    n_fit: int
    scores: dict
    dyn_nnz: int | None
    dyn_members: int
    n_train: int
    assessment: SurrogateAssessment
    extra_rounds: int = 0
    collected: np.ndarray | None = None
    evaluation: np.ndarray | None = None
    #: real steps collected with the policy in this iteration
    batch: int = 0
    #: the further training was undone (``dyna.keep_better``)
    kept_previous: bool = False
    #: a fresh agent replaced the continued one (``dyna.restart_on_drop``)
    restarted: bool = False


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
        self.agent = None
        self.last_choice: dict = {}
        self._episode_limit: int | None = None
        #: added to the agent's seed: a fresh agent of ``dyna.restart_on_drop`` draws other initial weights
        self._seed_offset = 0
        self.board = DynaBoard(run.path, enabled=False)

    # ----------------------------------------------------------- helpers
    def _make_agent(self, env):
        cfg = self.cfg.agent
        cls = algorithm_class(cfg.algo)
        kwargs = dict(cfg.kwargs)
        kwargs.setdefault("seed", self.cfg.seed + self._seed_offset)
        kwargs.setdefault("verbose", 0)
        kwargs.setdefault("device", "cpu")
        kwargs.setdefault("tensorboard_log", agent_log_dir(self.run_dir.path, cfg.tensorboard))
        try:
            return quiet_logger(cls(cfg.policy, env, **kwargs))
        except TypeError as e:
            raise ValueError(f"agent.kwargs: {e}") from None

    def _collect(self, buffer: TransitionBuffer, n: int, policy, seed: int, max_ep: int | None) -> None:
        env = self.run_dir.make_env(seed=seed)
        try:
            collect(env, n, policy=policy, seed=seed, buffer=buffer, max_episode_steps=max_ep)
        finally:
            env.close()
        buffer.save(self.run_dir.data_path)

    def _initial_data(self, state: DynaState) -> TransitionBuffer:
        """The real data on disk, or random off-policy collection when there is none yet."""
        cfg, run = self.cfg, self.run_dir
        if run.data_path.is_file():
            buffer = run.load_data()
            self.echo(f"[data] resumed {len(buffer)} real transitions from {run.data_path}")
        else:
            buffer = TransitionBuffer(len(self.spec.obs_names), len(self.spec.action_names))
        if len(buffer) == 0:
            env0 = run.make_env(seed=cfg.seed)
            policy = RandomPolicy(env0.action_space, cfg.seed)
            env0.close()
            self._collect(buffer, cfg.collect.random_steps, policy, cfg.seed, cfg.collect.random_episode_steps)
            self.echo(f"[collect] {len(buffer)} random real steps ({buffer.n_episodes} episodes) -> {run.data_path}")
        # the buffer on disk is the truth: it is saved before the state is
        state.real_steps_collect = len(buffer)
        state.save(run)
        return buffer

    # ------------------------------------------------------------ phases
    def fit(self, buffer: TransitionBuffer, it: int, first: bool):
        """Fit the models on all real data and save them; returns (dynamics, reward, scores)."""
        cfg, run = self.cfg, self.run_dir
        dyn, reward, scores = fit_models(cfg, buffer, self.spec, cfg.seed + it)
        sparse = dyn.sparse_model
        if sparse is not None:
            run.save_model("dynamics", sparse)
        if not cfg.reward.known_spec:
            run.save_model("reward", reward.model_)
        term = resolve_termination(cfg.env.termination, cfg.env.id, buffer, self.spec.obs_names)
        if isinstance(term, BoxTermination):
            run.save_termination(term)
        size = f"{sparse.nnz} terms, {sparse.n_models} members" if sparse is not None else f"{dyn.n_models} networks"
        steps = scores.get("model_rollout_steps", cfg.dynamics.rollout_steps)
        chosen = f" ({scores['dynamics_library']}, threshold {scores['dynamics_threshold']:.3g})" \
            if "dynamics_library" in scores else ""
        self.echo(f"[fit {it + 1}/{cfg.dyna.iterations}] dynamics on {len(buffer)} transitions: {size}{chosen}, "
                  f"one-step error {scores['model_one_step_error']:.4f}, {steps}-step rollout error "
                  f"{scores['model_rollout_error']:.4f}")
        if first:
            for key in ("dynamics_selection", "reward_selection"):
                if scores.get(key):
                    self.echo("  " + str(scores[key]).replace("\n", "\n  "))
        if term is not None and (first or isinstance(term, BoxTermination)):
            held = (f" (held-out episodes: {100 * scores['termination_recall']:.0f}% of the ends found, "
                    f"{100 * scores['termination_false_alarm']:.2f}% false alarms)"
                    if "termination_recall" in scores else "")
            self.echo(f"  episode ends: {term.describe()}{held}")
        if first and sparse is not None:
            self.echo("  learned dynamics:\n    " + "\n    ".join(dyn.equations()))
            if not cfg.reward.known_spec:
                self.echo("  learned reward:\n    " + "\n    ".join(reward.equations()))
        return dyn, reward, scores

    def train(self, venv: SurrogateVecEnv, n_steps: int, label: str) -> int:
        """Train the agent (made on first use) for ``n_steps`` surrogate steps; returns the steps taken."""
        if self.agent is None:
            self.agent = self._make_agent(venv)
        else:
            self.agent.set_env(venv)
        if n_steps > 0:
            self.agent.learn(n_steps, reset_num_timesteps=False,
                             callback=ProgressCallback(n_steps, label, self.progress_bar))
        return n_steps

    def assess(self, venv: SurrogateVecEnv, starts: np.ndarray, it: int) -> tuple[SurrogateAssessment, int, int]:
        """The agent in the surrogate from every start; while some starts fail, train more and keep the best.

        Returns (assessment of the kept agent, extra surrogate steps trained, extra rounds).
        """
        cfg = self.cfg
        seed = cfg.seed + 7919 * (it + 1)
        best = assess_in_surrogate(sb3_act_batch(self.agent), venv, starts, seed=seed)
        best_params, extra_steps, rounds = None, 0, 0
        n_round = cfg.agent.steps_per_iteration or cfg.agent.initial_steps
        for r in range(cfg.dyna.max_extra_rounds):
            if best.n_failed == 0 or n_round <= 0:
                break
            self.echo(f"  [assess] {best.n_failed}/{best.returns.size} surrogate starts fail "
                      f"({best.describe()}): training {n_round} more surrogate steps")
            if best_params is None:
                best_params = _snapshot(self.agent)
            extra_steps += self.train(venv, n_round, f"[train {it + 1}+{r + 1}] surrogate")
            rounds += 1
            cand = assess_in_surrogate(sb3_act_batch(self.agent), venv, starts, seed=seed)
            if cand.score > best.score:
                best, best_params = cand, None
        if best_params is not None:
            # the earlier checkpoint did better on the surrogate test than the extra training
            self.agent.set_parameters(best_params, exact_match=False)
            self.echo("  [assess] kept the checkpoint before the extra training (better on the surrogate test)")
        return best, extra_steps, rounds

    def batch_steps(self, state: DynaState, scores: dict, n_buffer: int) -> int:
        """Real steps of this iteration's policy batch: ``collect.steps_per_iteration``, or adaptive
        (``collect.min_steps_per_iteration``): short while the model's held-out rollout error is above
        ``collect.model_error_tolerance`` or not measurable, doubling once it is good; always cut to what is
        left of ``collect.max_real_steps``."""
        c = self.cfg.collect
        n = c.steps_per_iteration
        if c.min_steps_per_iteration is not None and n > 0:
            err = scores.get("model_rollout_error")
            good = err is not None and bool(np.isfinite(err)) and err <= c.model_error_tolerance
            short = min(c.min_steps_per_iteration, n)
            n = min(n, 2 * max(state.last_batch, short)) if good else short
        if c.max_real_steps is not None:
            n = min(n, max(0, c.max_real_steps - n_buffer))
        return int(n)

    def budget_used(self, n_buffer: int) -> bool:
        """``collect.max_real_steps`` is reached: the current iteration is the last."""
        return self.cfg.collect.max_real_steps is not None and n_buffer >= self.cfg.collect.max_real_steps

    def collect(self, buffer: TransitionBuffer, it: int, n_steps: int | None = None) -> np.ndarray:
        """Real steps with the current policy; returns the returns of the episodes completed in this batch."""
        cfg = self.cfg
        first_new = len(buffer)
        act = sb3_act(self.agent, deterministic=not cfg.collect.stochastic)
        n = cfg.collect.steps_per_iteration if n_steps is None else n_steps
        self._collect(buffer, n, act, cfg.seed + 100 * (it + 1), None)
        ep = buffer.episode[first_new:]
        done = (buffer.terminated | buffer.truncated)[first_new:]
        rewards = buffer.rewards[first_new:]
        return np.array([rewards[ep == e].sum() for e in np.unique(ep[done])])

    def checkpoint(self, state: DynaState, rows: list[dict], out: _Iteration, it: int, t_start: float) -> dict:
        """Agent, metrics row and loop state, in that order (the data were saved when collected)."""
        run = self.run_dir
        _save_agent(self.agent, run.agent_path)
        a = out.assessment
        row = {
            "iteration": it + 1, "real_steps_fit": out.n_fit, "real_steps_collect": state.real_steps_collect,
            "real_steps_eval": state.real_steps_eval, "surrogate_steps": state.surrogate_steps,
            **a.summary(), "extra_train_rounds": out.extra_rounds,
            "collect_return_mean": _mean(out.collected), "collect_return_min": _min(out.collected),
            "collect_episodes": 0 if out.collected is None else int(out.collected.size),
            "collect_steps": out.batch, "kept_previous_agent": int(out.kept_previous),
            "restarted_agent": int(out.restarted),
            "eval_return_mean": _mean(out.evaluation), "eval_return_std": _std(out.evaluation),
            "eval_return_min": _min(out.evaluation),
            "model_one_step_error": out.scores["model_one_step_error"],
            "model_rollout_error": out.scores["model_rollout_error"],
            "dynamics_nnz": out.dyn_nnz, "dynamics_members": out.dyn_members,
            "wall_seconds": time.time() - t_start,
        }
        for k, v in out.scores.items():  # the models' choice (library, degree, threshold) and other numbers
            if k not in row and k.startswith(("dynamics_", "reward_", "termination_", "model_")) and \
                    isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k] = v
        for k, v in (getattr(self.agent, "beer_stats", None) or {}).items():
            row[k] = v
        rows.append(row)
        run.write_metrics(rows)
        self.board.log_iteration(row)
        state.iteration = it + 1
        state.wall_seconds = time.time() - t_start
        state.save(run)
        return row

    # -------------------------------------------------------------- loop
    def run(self) -> dict:
        cfg, run, echo = self.cfg, self.run_dir, self.echo
        state = DynaState.load(run)
        rows = run.read_metrics()
        t_start = time.time() - state.wall_seconds
        from stable_baselines3.common.utils import set_random_seed

        set_random_seed(cfg.seed)
        buffer = self._initial_data(state)
        self._episode_limit = buffer.episode_limit()
        if run.agent_path.is_file():
            self.agent = run.load_agent()
            echo(f"[agent] resumed {cfg.agent.algo.upper()} from {run.agent_path}")
        start_it = state.iteration
        self.board = DynaBoard(run.path, enabled=cfg.agent.tensorboard)
        for it in range(start_it, cfg.dyna.iterations):
            if state.stopped_early:
                break
            t_it = time.time()
            n_fit = len(buffer)
            dyn, reward, scores = self.fit(buffer, it, first=it == start_it)
            self.last_choice = {k: v for k, v in scores.items() if k.startswith(("dynamics_", "reward_"))
                                and k.endswith(("_library", "_degree", "_control", "_fourier", "_threshold"))}
            venv = build_surrogate(cfg, dyn, reward, buffer, self.spec, cfg.seed + 1000 * (it + 1))
            n_train = cfg.agent.initial_steps if self.agent is None else cfg.agent.steps_per_iteration
            starts = assessment_starts(buffer, cfg.dyna.assess_starts, seed=cfg.seed + it)
            before = None
            if cfg.dyna.keep_better and self.agent is not None and n_train > 0:
                # the last iteration's agent on the new model: what the further training has to beat
                before = (assess_in_surrogate(sb3_act_batch(self.agent), venv, starts, seed=cfg.seed + 7919 * (it + 1)),
                          _snapshot(self.agent))
            state.surrogate_steps += self.train(venv, n_train, f"[train {it + 1}] surrogate")
            assessment, extra, rounds = self.assess(venv, starts, it)
            state.surrogate_steps += extra
            restarted = False
            drop = cfg.dyna.restart_on_drop
            if before is not None and drop is not None and rows and cfg.agent.initial_steps > 0:
                prev = rows[-1]
                old_score = 0.5 * (float(prev["surrogate_return_mean"]) + float(prev["surrogate_return_worst_decile"]))
                if before[0].score < old_score - drop * abs(old_score):
                    echo(f"  [restart] the refit dropped the agent's surrogate score from {old_score:.1f} to "
                         f"{before[0].score:.1f}: training a fresh agent for {cfg.agent.initial_steps} steps too")
                    continued = (assessment, _snapshot(self.agent), self.agent)
                    self.agent = None
                    self._seed_offset = 1 + it
                    state.surrogate_steps += self.train(venv, cfg.agent.initial_steps, f"[train {it + 1}] fresh agent")
                    fresh, extra2, rounds2 = self.assess(venv, starts, it)
                    state.surrogate_steps += extra2
                    rounds += rounds2
                    if fresh.score >= continued[0].score:
                        assessment, restarted = fresh, True
                        echo(f"  [restart] kept the fresh agent ({fresh.describe()})")
                    else:
                        self.agent = continued[2]
                        echo(f"  [restart] kept the continued agent ({continued[0].describe()})")
            kept_previous = False
            if before is not None and before[0].score > assessment.score:
                self.agent.set_parameters(before[1], exact_match=False)
                echo(f"  [assess] the further training scored worse on the new model ({assessment.describe()}) than "
                     f"the last iteration's agent ({before[0].describe()}): kept that agent")
                assessment, kept_previous = before[0], True
            evaluation = None
            if cfg.dyna.eval_episodes > 0:  # opt-in: it costs real steps
                evaluation = evaluate_policy(sb3_act(self.agent), run.make_env, cfg.dyna.eval_episodes,
                                             seed=10_000 + cfg.seed)
                state.real_steps_eval += int(evaluation.lengths.sum())
            last = it == cfg.dyna.iterations - 1 or self.budget_used(len(buffer))
            reached = cfg.dyna.target_return is not None and evaluation is not None and \
                evaluation.mean() >= cfg.dyna.target_return
            collected = None
            n_batch = 0 if last or reached else self.batch_steps(state, scores, len(buffer))
            if n_batch > 0:
                collected = self.collect(buffer, it, n_batch)
                state.real_steps_collect = len(buffer)
                state.last_batch = n_batch
                if cfg.dyna.target_return is not None and evaluation is None and collected.size:
                    reached = bool(collected.mean() >= cfg.dyna.target_return)
            sparse = dyn.sparse_model
            out = _Iteration(n_fit, scores, sparse.nnz if sparse is not None else None,
                             sparse.n_models if sparse is not None else dyn.n_models, n_train, assessment,
                             rounds, collected, evaluation)
            out.batch = n_batch
            out.kept_previous = kept_previous
            out.restarted = restarted
            state.stopped_early = bool(reached) or (last and it < cfg.dyna.iterations - 1)
            self.checkpoint(state, rows, out, it, t_start)
            echo(f"[iter {it + 1}/{cfg.dyna.iterations}] surrogate return {assessment.describe()}"
                 + (f" | real return {_fmt_returns(evaluation)}" if evaluation is not None else "")
                 + (f" | collected episodes {_fmt_returns(collected)}" if collected is not None and collected.size
                    else "")
                 + f" | real steps {state.real_steps_collect}"
                 + (f" (+{state.real_steps_eval} eval)" if state.real_steps_eval else "")
                 + f" | surrogate steps {state.surrogate_steps} | {time.time() - t_it:.0f}s")
            if reached:
                echo(f"[dyna] target return {cfg.dyna.target_return} reached: stopping early")
                break
            if last:
                if it < cfg.dyna.iterations - 1:
                    echo(f"[dyna] real-step budget collect.max_real_steps={cfg.collect.max_real_steps} used: "
                         "this was the last iteration")
                break
        if self.agent is None:
            raise RuntimeError("Dyna: no agent was trained (dyna.iterations must be >= 1)")
        return self._final(state, rows, t_start)

    def _final(self, state: DynaState, rows: list[dict], t_start: float) -> dict:
        """The deterministic real evaluation that confirms the result, and the train stage's summary."""
        cfg, run, echo = self.cfg, self.run_dir, self.echo
        n_final = final_eval_episodes(cfg, state.real_steps_collect, self.spec.horizon or self._episode_limit)
        final = evaluate_policy(sb3_act(self.agent), run.make_env, n_final, seed=cfg.seed, keep_trace=True)
        run.save_trace("neural", final.trace)
        last = rows[-1] if rows else {}
        summary = {
            "env_id": cfg.env.id, "algo": cfg.agent.algo, "seed": cfg.seed,
            "real_steps_collect": state.real_steps_collect, "real_steps_eval": state.real_steps_eval,
            "real_steps_final_eval": int(final.lengths.sum()), "surrogate_steps": state.surrogate_steps,
            "eval_return_mean": float(final.mean()), "eval_return_std": float(final.std()),
            "eval_return_min": float(final.min()), "eval_episodes": n_final,
            "eval_returns": [float(r) for r in final],
            **{k: last[k] for k in ("surrogate_return_mean", "surrogate_return_min", "surrogate_return_worst_decile",
                                    "surrogate_failed_starts", "surrogate_starts") if last.get(k) is not None},
            "dynamics_nnz": last.get("dynamics_nnz") or None,
            **{k: v for k, v in self.last_choice.items()},
            "train_wall_seconds": time.time() - t_start,
        }
        worst = int(np.argmin(final))
        echo(f"[eval] {n_final} real episodes (seeds {cfg.seed}..{cfg.seed + n_final - 1}): return "
             f"{final.mean():.1f} ± {final.std():.1f}, worst {final.min():.1f} (seed {cfg.seed + worst}); "
             f"surrogate estimate {last.get('surrogate_return_mean', float('nan')):.1f}, worst "
             f"{last.get('surrogate_return_min', float('nan')):.1f}; after {state.real_steps_collect} real steps "
             f"(+{state.real_steps_eval + int(final.lengths.sum())} evaluation)")
        self.board.log_final(summary, iteration=len(rows))
        self.board.close()
        try:
            from .plots import plot_training

            for p in plot_training(run, summary):
                echo(f"[plot] {p}")
        except Exception as e:  # plots never fail a run
            log.warning("plotting failed: %s", e)
            echo(f"[plot] skipped ({e})")
        return summary


def _mean(x) -> float | None:
    return None if x is None or len(x) == 0 else float(np.mean(x))


def _std(x) -> float | None:
    return None if x is None or len(x) == 0 else float(np.std(x))


def _min(x) -> float | None:
    return None if x is None or len(x) == 0 else float(np.min(x))


def _fmt_returns(x) -> str:
    return f"{np.mean(x):.1f} ± {np.std(x):.1f} (worst {np.min(x):.1f}, {len(x)} episodes)"
