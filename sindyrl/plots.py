"""Figures of a run: learning curve against real steps, model rollout against a real trajectory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runs import Run

__all__ = ["plot_training", "plot_learning_curve", "plot_rollout"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])


def plot_learning_curve(run: Run, summary: dict | None = None) -> Path | None:
    rows = run.read_metrics()
    if not rows:
        return None
    plt = _plt()
    # the agent of iteration k was trained on a model fitted to real_steps_fit real transitions
    x = np.array([r.get("real_steps_fit", r["real_steps_collect"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    m = _column(rows, "surrogate_return_mean")
    if np.isfinite(m).any():
        ax.plot(x, m, "s-", color="tab:gray", label="surrogate estimate (mean over stored starts)")
        ax.plot(x, _column(rows, "surrogate_return_min"), "v", color="tab:gray", ms=5, label="surrogate worst start")
    m = _column(rows, "collect_return_mean")
    if np.isfinite(m).any():
        ax.plot(x, m, "o-", color="tab:green", label="real episodes collected with the policy (mean)")
        ax.plot(x, _column(rows, "collect_return_min"), "v", color="tab:green", ms=5, label="collected, worst")
    m = _column(rows, "eval_return_mean")
    if np.isfinite(m).any():
        s = _column(rows, "eval_return_std")
        ax.plot(x, m, "o-", color="tab:blue", label="real evaluation (mean)")
        ax.fill_between(x, m - s, m + s, color="tab:blue", alpha=0.25, label="± std")
    summ = summary if summary is not None else run.read_summary()
    if "eval_return_min" in summ:
        ax.axhline(summ["eval_return_min"], color="tab:red", ls=":", lw=1, label="final, worst episode")
    if "eval_return_mean" in summ:
        ax.axhline(summ["eval_return_mean"], color="k", ls="--", lw=1,
                   label=f"final ({summ.get('eval_episodes', '?')} episodes)")
    ax.set_xlabel("real environment steps the models were fitted on")
    ax.set_ylabel("episode return")
    ax.set_title(f"{run.config.env.id}: Dyna learning curve")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = run.plots_dir / "learning_curve.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plot_rollout(run: Run, steps: int = 100) -> Path | None:
    """Open-loop rollout of the learned dynamics against a held-out real trajectory.

    The trajectory is a fresh real episode with seeded random actions (never
    added to the run's data), so the comparison is on data the model has not seen.
    """
    from .data import RandomPolicy, collect
    from .dynamics import rollout

    if not run.model_path("dynamics").is_file():
        return None
    model = run.load_model("dynamics")
    env = run.make_env(seed=987_654)
    try:
        buf = collect(env, steps, policy=RandomPolicy(env.action_space, 987_654), seed=987_654)
    finally:
        env.close()
    ep = buf.episodes()[0]
    T = len(ep)
    obs, act = buf.obs[ep], buf.actions[ep]
    pred = rollout(model, obs[:1], act[None])[0]
    plt = _plt()
    n = obs.shape[1]
    fig, axes = plt.subplots(n, 1, figsize=(6, 1.6 * n + 0.6), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(np.arange(T), obs[:, i], "k-", lw=1.5, label="real")
        ax.plot(np.arange(T + 1), pred[:, i], "C1--", lw=1.2, label="model (open loop)")
        ax.set_ylabel(run.obs_names[i])
        lo, hi = obs[:, i].min(), obs[:, i].max()
        pad = 0.5 * (hi - lo + 1e-6)
        ax.set_ylim(lo - pad, hi + pad)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("step")
    fig.suptitle("learned dynamics vs a held-out real episode (same random actions)", fontsize=10)
    fig.tight_layout()
    p = run.plots_dir / "model_rollout.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plot_training(run: Run, summary: dict | None = None) -> list[Path]:
    return [p for p in (plot_learning_curve(run, summary), plot_rollout(run)) if p is not None]
