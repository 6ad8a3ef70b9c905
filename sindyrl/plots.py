"""Figures of a run, drawn from what the run directory already holds (no figure spends a real step).

- ``learning_curve.png``: return against real steps, the worst episode of every evaluation marked;
- ``model_rollout.png``: open-loop prediction of the dynamics (median and the ensemble's spread) against a real
  episode held out of the last fit;
- ``returns.png``: per-episode returns of every controller on the same starts;
- ``closed_loop.png``: one episode of each controller from the same start (``traces/*.npz``);
- ``policy_comparison.png``: neural and sparse actions along the neural policy's recorded episode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runs import Run

__all__ = ["plot_training", "plot_learning_curve", "plot_rollout", "plot_returns", "plot_traces",
           "plot_policy_actions", "held_out_episode"]

_WORST = dict(marker="v", color="C3", ms=8, ls="none", zorder=5)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, run: Run, name: str) -> Path:
    p = run.plots_dir / name
    fig.savefig(p, dpi=100)
    _plt().close(fig)
    return p


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])


def plot_learning_curve(run: Run, summary: dict | None = None) -> Path | None:
    """Return against the real steps fitted on: the surrogate estimate from stored starts and its worst start,
    the real episodes collected with the policy, the opt-in per-iteration evaluation, and every episode of the
    final evaluation with the worst one marked."""
    rows = run.read_metrics()
    if not rows:
        return None
    plt = _plt()
    # the agent of iteration k was trained on a model fitted to real_steps_fit real transitions
    x = np.array([r.get("real_steps_fit") or r["real_steps_collect"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    m = _column(rows, "surrogate_return_mean")
    if np.isfinite(m).any():
        ax.plot(x, m, "s-", color="tab:gray", label="surrogate estimate (stored starts)")
        ax.plot(x, _column(rows, "surrogate_return_min"), "v", color="tab:gray", ms=6, ls="none",
                label="surrogate, worst start")
    m = _column(rows, "collect_return_mean")
    if np.isfinite(m).any():
        ax.plot(x, m, "o-", color="tab:green", label="real episodes collected with the policy")
        ax.plot(x, _column(rows, "collect_return_min"), "v", color="tab:green", ms=6, ls="none",
                label="collected, worst episode")
    m = _column(rows, "eval_return_mean")
    if np.isfinite(m).any():
        s = np.nan_to_num(_column(rows, "eval_return_std"))
        ax.plot(x, m, "o-", color="C0", label="real evaluation mean")
        ax.fill_between(x, m - s, m + s, color="C0", alpha=0.2, label="± std")
        lo = _column(rows, "eval_return_min")
        if np.isfinite(lo).any():
            ax.plot(x, lo, label="evaluation, worst episode", **_WORST)
    summ = summary if summary is not None else run.read_summary()
    final = summ.get("eval_returns")
    if final:
        xf = x[-1] + 0.04 * max(x[-1] - x[0], 1.0)
        f = np.asarray(final, dtype=float)
        ax.plot(np.full(len(f), xf), f, "k.", alpha=0.5, label=f"final evaluation ({len(f)} episodes)")
        ax.plot([xf - 0.015 * max(x[-1] - x[0], 1.0), xf + 0.015 * max(x[-1] - x[0], 1.0)], [f.mean()] * 2, "k-",
                lw=2)
        k = int(np.argmin(f))
        ax.plot([xf], [f[k]], **_WORST)
        ax.annotate(f"worst {f[k]:.0f}", (xf, f[k]), textcoords="offset points", xytext=(-8, -4), ha="right",
                    fontsize=8, color="C3")
    ax.set_xlabel("real environment steps the models were fitted on")
    ax.set_ylabel("episode return")
    ax.set_title(f"{run.config.env.id}: Dyna learning curve", fontsize=10)
    # beside the axes: inside, it hides the points (the worst final episode among them)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, run, "learning_curve.png")


def held_out_episode(run: Run):
    """(obs, actions, next_obs, held_out) of a real episode from the run's data, without new real steps.

    It is a validation episode of the last Dyna fit (same split: the first ``real_steps_fit`` transitions,
    ``dynamics.holdout``, seed ``seed + iteration - 1``), so the coefficients were not fitted on it;
    ``held_out`` is False when the run has no such episode and the longest episode is used instead.
    Returns None without data.
    """
    if not run.data_path.is_file():
        return None
    from .data import TransitionBuffer

    buf = run.load_data()
    rows = run.read_metrics()
    val = np.zeros(len(buf), dtype=bool)
    if rows and rows[-1].get("real_steps_fit"):
        n_fit = min(int(rows[-1]["real_steps_fit"]), len(buf))
        sub = TransitionBuffer(buf.n_obs, buf.n_act)
        sub.add(buf.obs[:n_fit], buf.actions[:n_fit], buf.rewards[:n_fit], buf.next_obs[:n_fit],
                buf.terminated[:n_fit], buf.truncated[:n_fit], buf.episode[:n_fit])
        _, v = sub.split_episodes(run.config.dynamics.holdout, run.config.seed + int(rows[-1]["iteration"]) - 1)
        val[:n_fit] = v
    eps = buf.episodes()
    held = [e for e in eps if val[e].all()]
    held_out = bool(held)
    ep = max(held or eps, key=len)
    return buf.obs[ep], buf.actions[ep], buf.next_obs[ep], held_out


def plot_rollout(run: Run, steps: int = 100) -> Path | None:
    """Open-loop prediction of the learned dynamics, with the ensemble's spread, against a held-out real episode."""
    if not run.model_path("dynamics").is_file():
        return None
    ep = held_out_episode(run)
    if ep is None:
        return None
    from .dynamics import rollout

    obs, act, next_obs, held_out = ep
    T = min(steps, len(act))
    real = np.concatenate([obs[:1], next_obs[:T]])
    model = run.load_model("dynamics")
    pred = rollout(model, obs[:1], act[None, :T])[0]
    members = None
    if model.ensemble is not None:
        x0 = np.repeat(obs[:1], model.n_models, axis=0)
        members = np.stack([rollout(model.with_coef(model.ensemble[k]), x0[k:k + 1], act[None, :T])[0]
                            for k in range(model.n_models)])
    plt = _plt()
    n = obs.shape[1]
    t = np.arange(T + 1)
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.5 * n + 0.8), sharex=True, squeeze=False)
    names = run.obs_names
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, real[:, i], "k-", lw=1.5, label="real")
        if members is not None:
            with np.errstate(all="ignore"):
                band = np.nanpercentile(np.where(np.isfinite(members[:, :, i]), members[:, :, i], np.nan),
                                        [10, 90], axis=0)
            ax.fill_between(t, band[0], band[1], color="C1", alpha=0.25,
                            label=f"ensemble 10–90% ({model.n_models} members)")
        ax.plot(t, pred[:, i], "C1--", lw=1.2, label="model (median coefficients)")
        ax.set_ylabel(names[i] if i < len(names) else f"x{i}")
        lo, hi = real[:, i].min(), real[:, i].max()
        pad = 0.5 * (hi - lo + 1e-6)
        ax.set_ylim(lo - pad, hi + pad)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1, 0].set_xlabel("step (open loop: the model is given only the first state and the recorded actions)")
    what = "a real episode held out of the last fit" if held_out else "the longest real episode (fitted on: no " \
                                                                       "held-out episode in this run)"
    fig.suptitle(f"learned dynamics vs {what}", fontsize=10)
    fig.tight_layout()
    return _save(fig, run, "model_rollout.png")


def plot_returns(run: Run, controllers: list[dict]) -> Path | None:
    """Strip plot of per-episode returns, one row per controller (``label``, ``returns``), worst episode marked."""
    rows = [c for c in controllers if c.get("returns")]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(rows) + 1.2))
    rng = np.random.default_rng(0)
    for y, c in enumerate(rows):
        r = np.asarray(c["returns"], dtype=float)
        ax.plot(r, y + rng.uniform(-0.15, 0.15, len(r)), "o", color=f"C{y % 10}", alpha=0.55, ms=5)
        ax.plot([r.mean()] * 2, [y - 0.3, y + 0.3], "k-", lw=2)
        k = int(np.argmin(r))
        ax.plot([r[k]], [y], **_WORST)
        ax.annotate(f"{r[k]:.0f}", (r[k], y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7,
                    color="C3")
    ax.set_yticks(range(len(rows)), [f"{c['label']} ({len(c['returns'])})" for c in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("episode return (black bar: mean, red: worst episode)")
    ax.set_title("per-episode returns on the real environment, same reset seeds", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _save(fig, run, "returns.png")


def plot_traces(run: Run, traces: dict[str, dict] | None = None, labels: dict[str, str] | None = None) -> Path | None:
    """States and actions against time of every recorded closed-loop episode (``traces/*.npz``)."""
    traces = run.load_traces() if traces is None else traces
    if not traces:
        return None
    labels = labels or {}
    plt = _plt()
    first = next(iter(traces.values()))
    n_x, n_u = first["obs"].shape[1], first["actions"].shape[1]
    names = list(run.obs_names) + list(run.action_names)
    fig, axes = plt.subplots(n_x + n_u, 1, figsize=(7, 1.3 * (n_x + n_u) + 0.9), sharex=True, squeeze=False)
    seeds = set()
    for j, (key, tr) in enumerate(traces.items()):
        ret = float(np.sum(tr["rewards"]))
        lab = f"{labels.get(key, key)} (return {ret:.0f})"
        if "seed" in tr:
            seeds.add(int(tr["seed"]))
        for i in range(n_x):
            axes[i, 0].plot(tr["obs"][:, i], color=f"C{j % 10}", lw=1.2, label=lab if i == 0 else None)
        for i in range(n_u):
            axes[n_x + i, 0].step(np.arange(len(tr["actions"])), tr["actions"][:, i], where="post",
                                  color=f"C{j % 10}", lw=1.0)
    for i, ax in enumerate(axes[:, 0]):
        ax.set_ylabel(names[i] if i < len(names) else "", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("step")
    if len(seeds) == 1:
        title = f"closed loop on the real environment from the same start (reset seed {min(seeds)})"
    elif seeds:
        title = "closed loop on the real environment (reset seeds " + ", ".join(map(str, sorted(seeds))) + ")"
    else:
        title = "closed loop on the real environment"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, run, "closed_loop.png")


def plot_policy_actions(run: Run) -> Path | None:
    """Neural and sparse actions along the neural policy's recorded episode (``traces/neural.npz``).

    The sparse policy is evaluated offline on the recorded observations: no real step is spent.
    """
    traces = run.load_traces()
    if "neural" not in traces or not run.model_path("policy").is_file():
        return None
    tr = traces["neural"]
    pol = run.load_model("policy")
    a_nn, a_sp = tr["actions"], pol.evaluate(tr["obs"][:-1])
    plt = _plt()
    n = a_nn.shape[1]
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.7 * n + 0.7), squeeze=False, sharex=True)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(a_nn[:, i], "k-", lw=1.5, label="neural")
        ax.plot(a_sp[:, i], "C2--", lw=1.2, label="sparse (on the same observations)")
        ax.set_ylabel(run.action_names[i] if i < len(run.action_names) else f"u{i}")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[-1, 0].set_xlabel("step of the neural policy's recorded episode")
    fig.tight_layout()
    return _save(fig, run, "policy_comparison.png")


def plot_training(run: Run, summary: dict | None = None) -> list[Path]:
    return [p for p in (plot_learning_curve(run, summary), plot_rollout(run)) if p is not None]
