"""The ``control`` stage: LQR or MPC designed on a run's learned dynamics, evaluated on the real env.

Options: ``stages.control`` (:class:`sindyrl.stage_options.ControlOptions`).
:func:`control` designs one controller, evaluates it with
:func:`sindyrl.evaluation.evaluate_policy` on the same reset seeds as the RL
evaluation, merges its figures into ``control.json`` (one entry per controller,
plus the neural and sparse policies for comparison) and rewrites
``control.md``, the table the run report includes; :func:`stage` does that
for every method of the options. Returned figures are prefixed
``control_<method>_``, plus ``real_steps_control``. Nothing here writes
``summary.json``: the pipeline records what the stage returns.

On a system the stage has never seen (a ``"module:Class"`` env with a
``"module:function"`` numpy reward) it builds what it needs from the run:

- the MPC cost: a known reward without a CasADi form gets a sparse reward model
  fitted to its values on the real data (:func:`controllers.reward_fit.fit_known_reward`,
  saved as ``models/reward_fit.json``); it is the cost when its normalised
  held-out RMSE is at most :data:`~controllers.reward_fit.MAX_HELDOUT_ERROR`,
  otherwise the MPC tracks the steady state below;
- the LQR equilibrium and the tracking target, when no ``target`` is given and
  the reward has no known maximiser (:data:`~controllers.costs.KNOWN_TARGETS`):
  the steady state of the learned model the reward prefers within the data box
  (:func:`controllers.steady_state.best_steady_state`);
- episode ends: where the run's termination has a box form
  (:func:`controllers.termination_box.termination_box`), the MPC keeps its
  predicted states inside it (a soft constraint), and the LQR row says whether
  its equilibrium lies inside.

What was found is printed and recorded in ``control.json`` (``reward_fit``,
``steady_state``, ``termination_box``) and in the returned figures.

A method that cannot apply to the system (no steady state for LQR or a tracking
cost to use) raises :class:`~sindyrl.stage_options.StageSkipped`; the stage
leaves that method out, and is skipped when no method applies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np

from sindyrl.evaluation import StepCounter, evaluate_policy
from sindyrl.runs import Run, atomic_write
from sindyrl.sparse import SparseModel
from sindyrl.stage_options import ControlOptions, StageSkipped

from .costs import CASADI_REWARDS, KNOWN_TARGETS, Cost, QuadraticCost, RewardCost
from .lqr import LQR
from .mpc import MPC, dynamics_split
from .reward_fit import RewardFit, data_digest, fit_known_reward
from .steady_state import NoSteadyState, SteadyState, best_steady_state
from .termination_box import TerminationBox, termination_box

__all__ = ["control", "stage", "compare_policies", "ControlOptions", "METHODS", "MPC_SOLVERS", "COSTS"]

METHODS = ("lqr", "mpc")
MPC_SOLVERS = ("ipopt", "sqpmethod", "c")
COSTS = ("auto", "reward", "quadratic")
#: the MPC aims this share of each state's data span inside the episode-end box
BOX_MARGIN = 1e-3


class _ResetHook(gym.Wrapper):
    """Calls ``hook()`` at each episode start so the controller drops the last episode's plan."""

    def __init__(self, env: gym.Env, hook: Callable[[], None]) -> None:
        super().__init__(env)
        self._hook = hook

    def reset(self, **kwargs):
        self._hook()
        return self.env.reset(**kwargs)


class _Timed:
    """Wraps ``act`` and records the wall time of every call."""

    def __init__(self, act: Callable[[np.ndarray], np.ndarray]) -> None:
        self.act = act
        self.times: list[float] = []

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        u = self.act(obs)
        self.times.append(time.perf_counter() - t0)
        return u

    def ms(self) -> tuple[float, float]:
        t = np.asarray(self.times) * 1e3
        return (float(t.mean()), float(np.percentile(t, 95))) if t.size else (float("nan"), float("nan"))


def _target(run: Run, target: Sequence[float] | None, n_x: int) -> np.ndarray | None:
    if target is not None:
        t = np.asarray(target, dtype=np.float64).reshape(-1)
        if t.shape != (n_x,):
            raise ValueError(f"control target has {t.size} values, expected {n_x} ({run.obs_names})")
        return t
    for key in (run.config.reward.known_spec, run.config.env.id):
        if key in KNOWN_TARGETS:
            return np.asarray(KNOWN_TARGETS[key], dtype=np.float64)
    return None


def _spans(run: Run, dyn: SparseModel, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranges of the states (real data, else the model's fitted input range) and actions (bounds), for Bryson's rule."""
    n_x = dyn.n_outputs
    try:
        lo, hi = run.load_data().state_bounds()
        span_x = hi - lo
    except FileNotFoundError:
        if dyn.input_bounds is not None:
            span_x = (dyn.input_bounds[1] - dyn.input_bounds[0])[:n_x]
        else:
            raise ValueError(f"{run.path}: no real data and no input_bounds in the dynamics model to scale the "
                             "quadratic cost / LQR weights with") from None
    span_x = np.where(np.isfinite(span_x) & (span_x > 1e-9), span_x, 1.0)
    span_u = np.where(np.isfinite(high - low) & (high - low > 0), high - low, 1.0)
    return span_x, span_u


class _Design:
    """What the stage derives from the run for one control() call, computed once and recorded."""

    def __init__(self, run: Run, dyn: SparseModel, low: np.ndarray, high: np.ndarray,
                 echo: Callable[..., None]) -> None:
        self.run, self.dyn, self.low, self.high, self.echo = run, dyn, low, high, echo
        self.reward_fit: RewardFit | None = None
        self.steady: SteadyState | None = None
        self.figures: dict = {}
        self.doc: dict = {}

    def fitted_reward(self) -> RewardFit:
        """The sparse model of the run's known numpy reward (reused from models/reward_fit.json for the same data)."""
        if self.reward_fit is not None:
            return self.reward_fit
        run = self.run
        known = run.config.reward.known_spec
        buf = run.load_data()
        digest = data_digest(buf)
        p = run.model_path("reward_fit")
        if p.is_file():
            m = SparseModel.from_json(p)
            md = m.metadata
            if md.get("data_digest") == digest and md.get("known") == known:
                self.reward_fit = RewardFit(m, float(md["heldout_error"]), float(md["max_error"]),
                                            int(md["n_train"]), int(md["n_heldout"]))
        if self.reward_fit is None:
            rc = run.config.reward
            # the targets are exact values of the function: one STLSQ fit, no bagging ensemble (whose members
            # that drop a needed term bias the median)
            fit = fit_known_reward(run.load_reward(), buf, run.obs_names, run.action_names, rc.library,
                                   rc.threshold, rc.alpha, n_models=1, seed=int(run.config.seed))
            fit.model = fit.model.with_metadata(known=known)
            run.save_model("reward_fit", fit.model)
            self.reward_fit = fit
        fit = self.reward_fit
        self.echo(f"[control] reward {known!r} has no CasADi form: {fit.describe()}; saved {p.name}")
        self.doc["reward_fit"] = {"path": f"models/{p.name}", "heldout_error": fit.heldout_error,
                                  "max_error": fit.max_error, "accurate": fit.accurate, "nnz": fit.model.nnz,
                                  "n_heldout": fit.n_heldout, "equations": fit.model.equations()}
        self.figures.update(control_reward_fit_heldout_error=fit.heldout_error,
                            control_reward_fit_accurate=fit.accurate)
        return fit

    def steady_state(self, why: str) -> SteadyState:
        """The steady state the run's reward prefers within the data box (StageSkipped when there is none)."""
        if self.steady is not None:
            return self.steady
        run = self.run
        try:
            buf = run.load_data()
        except FileNotFoundError:
            raise StageSkipped(f"{why}: no target given and no real data to look for a steady state in") from None
        try:
            reward = run.load_reward()
        except FileNotFoundError:
            raise StageSkipped(f"{why}: no target given and no reward to choose a steady state by") from None
        key = {"dynamics_hash": self.dyn.content_hash(), "data_digest": data_digest(buf),
               "reward_source": run.config.reward.known_spec or "models/reward.json"}
        old = _read_control(run).get("steady_state") or {}
        if old.get("found") and all(old.get(k) == v for k, v in key.items()):
            ss = SteadyState.from_dict(old)
        else:
            try:
                ss = best_steady_state(self.dyn, reward, buf.obs, buf.actions, buf.state_bounds(),
                                       (self.low, self.high))
            except NoSteadyState as e:
                self.doc["steady_state"] = {**key, "found": False, "reason": str(e)}
                raise StageSkipped(f"{why}: {e}") from None
        self.echo(f"[control] steady state the reward prefers in the data box: x*={np.round(ss.x, 4).tolist()} "
                  f"u*={np.round(ss.u, 4).tolist()}, reward {ss.reward:.4g} (best stored transition "
                  f"{ss.best_data_reward:.4g}; {ss.n_feasible} feasible points from {ss.n_candidates} candidates)")
        self.doc["steady_state"] = {**key, "found": True, **ss.to_dict()}
        self.figures.update(control_steady_state_x=ss.x.tolist(), control_steady_state_u=ss.u.tolist(),
                            control_steady_state_reward=ss.reward)
        self.steady = ss
        return ss

    def termination(self) -> TerminationBox | None:
        box = termination_box(self.run)
        if box is not None:
            self.doc["termination_box"] = {"low": box.low.tolist(), "high": box.high.tolist(),
                                           "source": box.source}
        return box

    def cost(self, kind: str, target: np.ndarray | None) -> Cost:
        """The MPC cost: the reward (CasADi form, reward model, or an accurate fit of the numpy reward), else tracking."""
        run = self.run
        if kind not in COSTS:
            raise ValueError(f"control cost must be one of {COSTS}, got {kind!r}")
        known = run.config.reward.known_spec
        if kind in ("auto", "reward"):
            if known in CASADI_REWARDS:
                return RewardCost(CASADI_REWARDS[known])
            if run.model_path("reward").is_file():
                return RewardCost(run.load_model("reward"))
            if known is not None and run.data_path.is_file():
                fit = self.fitted_reward()
                if fit.accurate:
                    return RewardCost(fit.model)
                if kind == "reward":
                    raise ValueError(f"{run.path}: the sparse model of reward.known={known!r} is not accurate enough "
                                     f"to be the MPC cost ({fit.describe()}); use --cost quadratic")
                self.echo(f"[control] the reward model is not accurate enough to be the MPC cost; MPC tracks "
                          f"{'the target' if target is not None else 'the best steady state'} instead")
            elif kind == "reward":
                raise ValueError(
                    f"{run.path}: no reward usable as MPC cost (no models/reward.json and reward.known="
                    f"{known!r} has no CasADi form); use --cost quadratic --target ..."
                )
        span_x, span_u = _spans(run, self.dyn, self.low, self.high)
        if target is not None:
            return QuadraticCost.bryson(target, span_x, span_u)
        ss = self.steady_state("a quadratic tracking cost needs a target state (pass --target or set "
                               f"stages.control.target, {len(run.obs_names)} values for {run.obs_names})")
        return QuadraticCost.bryson(ss.x, span_x, span_u, u_target=ss.u)


def _read_control(run: Run) -> dict:
    p = run.path / "control.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _markdown(doc: dict) -> str:
    rows = doc.get("controllers", {})
    lines = [
        "## Classical control on the learned model",
        "",
        f"Real `{doc.get('env_id')}` episodes from reset seeds seed..seed+episodes-1 (the RL evaluation uses the "
        "run's seed). Compute time is wall time per control step on this machine; the learned dynamics model is "
        f"`{doc.get('dynamics_hash')}`.",
        "",
        "| controller | episodes (first seed) | return (mean ± std) | min | compute per step (ms, mean / p95) | notes |",
        "|---|---|---|---|---|---|",
    ]
    order = [k for k in ("mpc", "mpc_sqpmethod", "mpc_c", "lqr", "neural_policy", "sparse_policy") if k in rows]
    order += [k for k in rows if k not in order]
    for k in order:
        r = rows[k]

        def f(v, fmt="{:.1f}"):
            return "–" if v is None else fmt.format(v)

        ret = "–" if r.get("return_mean") is None else f"{r['return_mean']:.1f} ± {r.get('return_std') or 0:.1f}"
        step = f"{f(r.get('step_ms_mean'), '{:.3f}')} / {f(r.get('step_ms_p95'), '{:.3f}')}"
        eps = "–" if r.get("episodes") is None else f"{r['episodes']} ({r.get('seed')})"
        lines.append(f"| {r.get('label', k)} | {eps} | {ret} | {f(r.get('return_min'))} | {step} | {r.get('notes', '')} |")
    return "\n".join(lines) + "\n"


def _timing(act: Callable[[np.ndarray], np.ndarray], run: Run, n: int = 200) -> tuple[float, float] | None:
    """Wall time per call on ``n`` recorded real observations (no new real steps)."""
    try:
        obs = run.load_data().obs[:n]
    except FileNotFoundError:
        return None
    timed = _Timed(act)
    for o in obs:
        timed(np.asarray(o, dtype=np.float32))
    return timed.ms() if len(obs) else None


def compare_policies(run: Run, n_episodes: int, seed: int, make_env: Callable[[], gym.Env] | None = None) -> int:
    """Add the run's neural and sparse policies to ``control.json`` / ``control.md``; returns the real steps spent.

    The neural policy's returns are the RL evaluation's; the sparse policy's are the distill stage's
    when it evaluated the same seeds (otherwise ``n_episodes`` real episodes); compute times are measured
    on recorded observations.
    """
    real = StepCounter(make_env or run.make_env)
    doc = _read_control(run)
    summary = run.read_summary()
    rows = doc.setdefault("controllers", {})
    if "eval_return_mean" in summary:
        row = {"label": f"neural policy ({run.config.agent.algo})", "return_mean": summary["eval_return_mean"],
               "return_std": summary.get("eval_return_std"), "return_min": summary.get("eval_return_min"),
               "notes": "returns from the RL evaluation", "episodes": summary.get("eval_episodes"),
               "seed": summary.get("seed")}
        if run.agent_path.is_file():
            try:
                agent = run.load_agent()
                ms = _timing(lambda o: agent.predict(o, deterministic=True)[0], run)
                if ms is not None:
                    row["step_ms_mean"], row["step_ms_p95"] = ms
            except Exception as e:  # an agent that cannot load here must not stop the controller evaluation
                row["notes"] += f"; timing skipped ({type(e).__name__})"
        rows["neural_policy"] = row
    if run.model_path("policy").is_file():
        pol = run.load_model("policy")
        done = summary.get("sparse_policy_returns") or []
        if seed == int(run.config.seed) and len(done) >= n_episodes:
            rets = np.asarray(done[:n_episodes], dtype=np.float64)  # deterministic policy and env: same episodes
            notes = "numpy SparseModel.evaluate; returns from the distill evaluation (same seeds)"
        else:
            rets = evaluate_policy(pol.evaluate, real, n_episodes=n_episodes, seed=seed)
            notes = "numpy SparseModel.evaluate"
        ms = _timing(pol.evaluate, run) or (None, None)
        rows["sparse_policy"] = {
            "label": f"sparse policy ({pol.nnz} coefficients)", "return_mean": float(rets.mean()),
            "return_std": float(rets.std()), "return_min": float(rets.min()),
            "step_ms_mean": ms[0], "step_ms_p95": ms[1], "notes": notes, "episodes": n_episodes, "seed": seed,
        }
    _write_control(run, doc)
    return real.steps


def _write_control(run: Run, doc: dict) -> None:
    atomic_write(run.path / "control.json", json.dumps(doc, indent=1, default=float))
    atomic_write(run.path / "control.md", _markdown(doc))


def control(
    run: Run,
    method: str = "mpc",
    horizon: int = 30,
    n_episodes: int | None = None,
    solver: str = "ipopt",
    cost: str = "auto",
    target: Sequence[float] | None = None,
    seed: int | None = None,
    compare: bool = True,
    echo: Callable[..., None] = print,
) -> dict:
    """Design ``method`` on the run's dynamics model, evaluate it on the real env and record the results.

    Parameters
    ----------
    run : Run
        A run with ``models/dynamics.json``.
    method : {"lqr", "mpc"}
        The controller.
    horizon : int, default 30
        MPC horizon (steps).
    n_episodes : int, optional
        Real episodes (default: as many as the run's final evaluation, ``Run.confirm_episodes``: real steps
        are expensive).
    solver : {"ipopt", "sqpmethod", "c"}, default "ipopt"
        MPC solver; ``"c"`` runs the generated sqpmethod/qrqp C (built under
        ``<run>/controllers/build``).
    cost : {"auto", "reward", "quadratic"}, default "auto"
        MPC stage cost: the negative reward (the CasADi form of a known reward,
        else the learned reward model) or quadratic tracking of ``target``
        with Bryson weights from the real data; ``"auto"`` prefers the reward.
    target : sequence of float, optional
        Target state (LQR equilibrium guess, tracking target); default: the
        maximiser of a built-in known reward, else the steady state of the
        learned model the reward prefers within the data box.
    seed : int, optional
        First reset seed (default: the run's seed, as the RL evaluation).
    compare : bool, default True
        Also record the neural and sparse policies of the run.

    Returns
    -------
    dict
        The ``control_<method>_*`` figures and ``real_steps_control`` (the pipeline records them in
        summary.json).

    Raises
    ------
    StageSkipped
        When the method cannot apply to the system (no target given and no steady state of the learned
        model in the data box, for LQR or a tracking cost); a ``ValueError``.
    """
    if method not in METHODS:
        raise ValueError(f"control method must be one of {METHODS}, got {method!r}")
    if solver not in MPC_SOLVERS:
        raise ValueError(f"control solver must be one of {MPC_SOLVERS}, got {solver!r}")
    dyn: SparseModel = run.load_model("dynamics")
    n_x, n_u = dynamics_split(dyn)
    if dyn.outputs != list(run.obs_names):
        raise ValueError(f"{run.model_path('dynamics')}: outputs {dyn.outputs} do not match the env's "
                         f"observations {run.obs_names}")
    n_episodes = int(n_episodes if n_episodes is not None else run.confirm_episodes())
    seed = int(run.config.seed if seed is None else seed)
    probe = run.make_env()
    low = np.asarray(probe.action_space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(probe.action_space.high, dtype=np.float64).reshape(-1)
    probe.close()
    bounds = (low, high)
    tgt = _target(run, target, n_x)
    design = _Design(run, dyn, low, high, echo)
    box = design.termination()
    row: dict = {}
    reset_hook: Callable[[], None] | None = None
    if method == "lqr":
        span_x, span_u = _spans(run, dyn, low, high)
        if tgt is not None:
            eq_kw: dict = dict(x_guess=tgt)
            origin = "the given target" if target is not None else "the known reward's maximiser"
        else:
            ss = design.steady_state("LQR needs an equilibrium and no target is given")
            eq_kw = dict(x_eq=ss.x, u_eq=ss.u)
            origin = "the steady state the reward prefers"
        try:
            ctl = LQR(dyn, Q=1.0 / span_x**2, R=1.0 / span_u**2, action_bounds=bounds, **eq_kw)
        except ValueError as e:
            if tgt is not None:
                raise
            raise StageSkipped(f"LQR at the steady state the reward prefers cannot be designed: {e}") from None
        eig = np.abs(ctl.closed_loop_eigenvalues)
        notes = f"local design at x*={np.round(ctl.x_eq, 3).tolist()} ({origin}), spectral radius {eig.max():.3f}"
        row.update(label="LQR (learned model)", equilibrium_x=ctl.x_eq.tolist(), equilibrium_u=ctl.u_eq.tolist(),
                   equilibrium_source=origin, closed_loop_eigenvalues_abs=eig.tolist(),
                   spectral_radius=float(eig.max()))
        if box is not None:
            inside = box.contains(ctl.x_eq)
            row["equilibrium_inside_termination_box"] = inside
            notes += f"; equilibrium {'inside' if inside else 'OUTSIDE'} the episode-end box"
            echo(f"[control] LQR equilibrium {'lies inside' if inside else 'lies OUTSIDE'} the episode-end box "
                 f"{box.describe(run.obs_names)}")
        row["notes"] = notes
        echo(f"[control] LQR at x*={np.round(ctl.x_eq, 4).tolist()} u*={np.round(ctl.u_eq, 4).tolist()} ({origin}); "
             f"|eig(A-BK)| = {np.round(eig, 3).tolist()}")
        act: Callable = ctl.act
    else:
        c = design.cost(cost, tgt)
        kw: dict = dict(horizon=horizon, action_bounds=bounds)
        if box is not None:
            span_x, _ = _spans(run, dyn, low, high)
            # the squared penalty lets a plan that rides the edge cross it by ~1e-4 spans: aim a little inside
            margin = BOX_MARGIN * span_x
            kw.update(soft_state_bounds=(box.low + margin, box.high - margin), soft_state_scale=span_x)
        if solver == "c":
            from .codegen import CompiledMPC

            ctl = CompiledMPC(dyn, c, build_dir=run.path / "controllers" / "build", **kw)
        else:
            ctl = MPC(dyn, c, solver=solver, **kw)
        row.update(label=f"MPC ({'generated C' if solver == 'c' else solver}, horizon {horizon})",
                   horizon=horizon, solver=solver, cost=c.describe(), description=ctl.describe(),
                   termination_constraint=box is not None)
        if box is not None:
            row["termination_box"] = box.describe(run.obs_names)
            echo(f"[control] MPC keeps its predicted states in the episode-end box {box.describe(run.obs_names)} "
                 f"(soft: penalty {ctl.soft_state_weight:g} on the squared violation in data-span units, "
                 f"aiming {BOX_MARGIN:g} spans inside)")
        failures = [0]

        def reset_hook() -> None:
            failures[0] += ctl.failures
            ctl.reset()

        act = ctl.act
    timed = _Timed(act)
    real = StepCounter(run.make_env)

    def make_env():
        env = real()
        return env if reset_hook is None else _ResetHook(env, reset_hook)

    t0 = time.time()
    rets = evaluate_policy(timed, make_env, n_episodes=n_episodes, seed=seed, keep_trace=True)
    ms_mean, ms_p95 = timed.ms()
    row.update(return_mean=float(rets.mean()), return_std=float(rets.std()), return_min=float(rets.min()),
               returns=[float(r) for r in rets], step_ms_mean=ms_mean, step_ms_p95=ms_p95,
               wall_seconds=time.time() - t0)
    if method == "mpc":
        row["failures"] = int(failures[0] + ctl.failures)
        row["notes"] = f"{row['description']}; {row['failures']} failed solves (previous plan used)"
    echo(f"[control] {row['label']}: return {rets.mean():.1f} ± {rets.std():.1f} over {n_episodes} episodes "
         f"(seeds {seed}..{seed + n_episodes - 1}), {ms_mean:.2f} ms per step")

    doc = _read_control(run)
    doc.update(env_id=run.config.env.id, seed=seed, episodes=n_episodes,
               dynamics_hash=dyn.content_hash(), **design.doc)
    key = method if method == "lqr" or solver == "ipopt" else f"mpc_{solver}"
    run.save_trace(key, rets.trace)
    row.update(episodes=n_episodes, seed=seed)
    doc.setdefault("controllers", {})[key] = row
    _write_control(run, doc)
    if compare:
        compare_policies(run, n_episodes, seed, real)
    p = f"control_{key}_"
    out = {p + "return_mean": row["return_mean"], p + "return_std": row["return_std"],
           p + "return_min": row["return_min"], p + "step_ms": ms_mean, p + "episodes": n_episodes}
    if method == "mpc":
        out.update({p + "failures": row["failures"], p + "horizon": horizon, p + "solver": solver,
                    p + "termination_constraint": row["termination_constraint"]})
    else:
        out[p + "spectral_radius"] = row["spectral_radius"]
        if "equilibrium_inside_termination_box" in row:
            out[p + "equilibrium_inside_termination_box"] = row["equilibrium_inside_termination_box"]
    out.update(design.figures)
    out["real_steps_control"] = real.steps
    return out


def stage(run: Run, echo: Callable[..., None] = print, **options) -> dict:
    """The ``control`` stage: every method of ``stages.control`` (:class:`ControlOptions`) on the real env.

    A method that cannot apply (:class:`StageSkipped`) is left out with its reason; when none applies the
    stage is skipped with the reasons. The neural and sparse policies are added to the table once.
    """
    o = ControlOptions.from_dict(options)
    kw = dict(horizon=o.horizon, n_episodes=o.n_episodes, solver=o.solver, cost=o.cost, target=o.target,
              seed=o.seed)
    out: dict = {}
    reasons: dict[str, str] = {}
    steps = 0
    for m in o.methods:
        try:
            res = control(run, method=m, compare=False, echo=echo, **kw)
        except StageSkipped as e:
            echo(f"[control] {m.upper()} skipped: {e.reason}")
            reasons[m] = e.reason
            continue
        steps += res.pop("real_steps_control")
        out.update(res)
    if not out:
        raise StageSkipped("; ".join(f"{m.upper()}: {r}" for m, r in reasons.items()))
    if o.compare:
        steps += compare_policies(run, o.n_episodes or run.confirm_episodes(),
                                  int(run.config.seed if o.seed is None else o.seed))
    out["real_steps_control"] = steps
    return out
