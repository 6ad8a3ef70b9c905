"""Seed and parameter sweeps: a grid of ordinary run directories, run on this machine or a Ray cluster.

    sindyrl sweep CONFIG --seeds 5 --set agent.initial_steps=50000,100000 --workers 2
    sindyrl sweep CONFIG --seeds 5 --backend ray --address ray://head:10001

The grid is the product of the ``--set key=v1,v2`` values times the seeds; every
trial is a run directory ``<runs-dir>/<name>/<setting>-s<seed>`` made with
:meth:`sindyrl.runs.Run.create` and run through the pipeline stages chosen with
``--stages`` (default: ``train``). A trial whose summary says it finished is
skipped, and an interrupted one resumes (the Dyna loop checkpoints every
iteration), so killing a sweep and starting it again runs only what is missing.
Results are aggregated per setting (mean ± std over seeds) into
``summary.csv`` / ``summary.md`` and one plot, ``sweep.png``.

Backends: ``local`` (a process pool, spawn context, no extra services) and
``ray`` (Ray Tune; ``pip install 'sindyrl[ray]'``), which connects to a cluster
with ``--address`` or starts a local Ray instance. Workers on a cluster must
see the sweep directory (a shared file system).

This module knows the grid, the backends and the aggregation, not the stages:
:func:`run_sweep` is given the function that runs a trial's stages
(``pipeline=sindyrl.pipeline.run_stages``; :func:`sindyrl.pipeline.sweep` and
``sindyrl sweep`` pass it), so learning code never imports the pipeline or the CLI.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import re
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml

from .config import ConfigError, apply_overrides, config_from_dict, config_to_dict
from .runs import Run, atomic_write, limit_threads

__all__ = ["parse_grid", "expand_trials", "run_trial", "run_sweep", "aggregate", "DONE_KEY", "TrialPipeline"]

#: summary.json key a trial gets once every requested stage has finished
DONE_KEY = "sweep_trial_done"

#: runs a trial's stages: ``pipeline(run, stages, echo=..., progress_bar=False, done=...)``, recording ``done()``'s
#: figures in the trial's summary once the stages have finished (:func:`sindyrl.pipeline.run_stages`)
TrialPipeline = Callable[..., dict]


# ------------------------------------------------------------------ the grid
def _split_values(raw: str) -> list[str]:
    """Split ``v1,v2`` on top-level commas (``[1, 2],[3]`` is two YAML lists)."""
    out, depth, cur = [], 0, ""
    for ch in raw:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def parse_grid(sets: Sequence[str] | None) -> list[list[tuple[str, str]]]:
    """``["a.b=1,2", "c=x"]`` -> every combination, each a list of (key, raw YAML value).

    Parameters
    ----------
    sets : list of str
        ``key.path=v1,v2,...`` items; values are YAML (``1e-3``, ``true``, ``[1, 2]``).

    Returns
    -------
    list of settings, each a list of ``(key, value)`` pairs; ``[[]]`` without ``sets``.
    """
    axes: list[list[tuple[str, str]]] = []
    seen = set()
    for item in sets or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ValueError(f"--set {item!r}: expected key.path=v1,v2,...")
        if key in seen:
            raise ValueError(f"--set {key}: given twice")
        seen.add(key)
        values = _split_values(raw)
        if any(v == "" for v in values):
            raise ValueError(f"--set {item!r}: empty value")
        axes.append([(key, v) for v in values])
    return [list(c) for c in itertools.product(*axes)] if axes else [[]]


def setting_label(setting: Sequence[tuple[str, str]]) -> str:
    """Human-readable ``key=value, ...`` (``base`` for the config as it is)."""
    return ", ".join(f"{k}={v}" for k, v in setting) or "base"


def _slug(setting: Sequence[tuple[str, str]]) -> str:
    if not setting:
        return "base"
    s = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in setting)
    s = re.sub(r"[^A-Za-z0-9._-]+", "", s.replace(" ", ""))
    return s[:80] or "setting"


def expand_trials(config_path: str | Path, seeds: int, sets: Sequence[str] | None, sweep_dir: str | Path,
                  stages: Sequence[str] = ("train",), seed_start: int | None = None) -> list[dict]:
    """Every trial of the sweep as a plain (picklable) spec; configs are validated here, before any work."""
    p = Path(config_path)
    if not p.is_file():
        raise ValueError(f"config file not found: {p}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    base = yaml.safe_load(p.read_text())
    if not isinstance(base, dict):
        raise ValueError(f"{p}: expected a mapping at the top level")
    first = int(base.get("seed", 0) or 0) if seed_start is None else seed_start
    sweep_dir = Path(sweep_dir).resolve()
    trials, names = [], set()
    for setting in parse_grid(sets):
        slug = _slug(setting)
        if slug in names:  # two settings that only differ in characters the slug drops
            slug = f"{slug}-{len(names)}"
        names.add(slug)
        for i in range(seeds):
            seed = first + i
            data = json.loads(json.dumps(base))
            try:
                apply_overrides(data, [f"{k}={v}" for k, v in setting] + [f"seed={seed}"])
                cfg = config_from_dict(data, source=f"{p} [{setting_label(setting)}]")
            except ConfigError as e:
                raise ValueError(str(e)) from None
            cfg.name = f"{slug}-s{seed}"
            trials.append({
                "trial": f"{slug}-s{seed}", "setting": setting_label(setting), "seed": seed,
                "config": config_to_dict(cfg), "path": str(sweep_dir / f"{slug}-s{seed}"),
                "stages": list(stages), "source": str(p),
            })
    return trials


# ------------------------------------------------------------------ one trial
def trial_done(path: str | Path) -> bool:
    p = Path(path) / "summary.json"
    if not p.is_file():
        return False
    try:
        return bool(json.loads(p.read_text()).get(DONE_KEY))
    except (OSError, ValueError):
        return False


def _same_config(path: Path, cfg) -> bool:
    """Whether the trial directory's config.yaml is ``cfg`` (compared as configs: a file written by an earlier
    release, e.g. with ``stages: {}``, still matches)."""
    if not path.is_file():
        return False
    try:
        old = config_from_dict(yaml.safe_load(path.read_text()), source=str(path))
    except (ConfigError, yaml.YAMLError):
        return False
    return config_to_dict(old) == config_to_dict(cfg)


def run_trial(spec: dict, pipeline: TrialPipeline) -> dict:
    """Run (or resume, or skip) one trial through ``pipeline``; returns its headline figures.

    Output goes to ``<trial>/sweep.log``.
    """
    path = Path(spec["path"])
    if trial_done(path):
        return {**_trial_row(spec), "status": "skipped"}
    limit_threads(1)  # one thread per trial: trials run side by side on few cores
    cfg = config_from_dict(json.loads(json.dumps(spec["config"])), source=spec["source"])
    cfg.name = spec["trial"]
    resumed = False
    if _same_config(path / "config.yaml", cfg):
        run, resumed = Run.open(path), True  # the Dyna loop resumes from its last checkpoint
    else:
        if path.exists():
            # interrupted before its config was written, or made from another config: start it cleanly
            shutil.rmtree(path)
        run = Run.create(cfg, root=path.parent, name=path.name)
    t0 = time.time()

    def done() -> dict:
        return {DONE_KEY: True, "sweep_setting": spec["setting"], "sweep_wall_seconds": time.time() - t0}

    with open(path / "sweep.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"--- sweep trial {spec['trial']} ({'resumed' if resumed else 'new'}) {time.ctime()}", flush=True)
        pipeline(run, spec["stages"], echo=lambda *a: print(*a, flush=True), progress_bar=False, done=done)
    return {**_trial_row(spec), "status": "resumed" if resumed else "done"}


def _trial_row(spec: dict) -> dict:
    """A trial's figures from its run directory (the directory is the truth, whoever ran it)."""
    path = Path(spec["path"])
    s = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    wall = s.get("train_wall_seconds")
    return {
        "trial": spec["trial"], "setting": spec["setting"], "seed": spec["seed"], "path": str(path),
        "eval_return_mean": s.get("eval_return_mean"), "eval_return_std": s.get("eval_return_std"),
        "eval_return_min": s.get("eval_return_min"), "sparse_return_mean": s.get("sparse_policy_return_mean"),
        "sparse_return_min": s.get("sparse_policy_return_min"),
        "real_steps": s.get("real_steps_collect"), "real_steps_eval": s.get("real_steps_eval"),
        "real_steps_total": s.get("real_steps_total"),
        "wall_seconds": wall if wall is not None else s.get("sweep_wall_seconds"),
        "done": bool(s.get(DONE_KEY)),
    }


def _run_trial_safe(spec: dict, pipeline: TrialPipeline) -> dict:
    try:
        return run_trial(spec, pipeline)
    except Exception as e:  # a failed trial is reported, the sweep goes on
        return {**_trial_row(spec), "status": "failed", "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()}


# ------------------------------------------------------------------ backends
def _run_local(pending: list[dict], workers: int, pipeline: TrialPipeline, echo: Callable[..., None]) -> list[dict]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results = []
    # spawn: a fork of a process that has torch/BLAS threads running can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_run_trial_safe, spec, pipeline): spec for spec in pending}
        try:
            for fut in as_completed(futures):
                res = fut.result()
                results.append(res)
                echo(_progress_line(res, len(results), len(pending)))
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def _tune_trainable(config: dict, specs: list[dict], pipeline: TrialPipeline) -> None:
    from ray import tune

    res = _run_trial_safe(specs[config["index"]], pipeline)
    tune.report({k: v for k, v in res.items() if isinstance(v, (int, float, str, bool)) and k != "traceback"})


def _import_ray():
    try:
        import ray
        from ray import tune
    except ImportError:
        raise RuntimeError(
            "the ray backend needs Ray Tune: pip install 'sindyrl[ray]' (or pip install 'ray[tune]')"
        ) from None
    return ray, tune


def _run_ray(pending: list[dict], workers: int, address: str | None, sweep_dir: Path, pipeline: TrialPipeline,
             echo: Callable[..., None]) -> list[dict]:
    ray, tune = _import_ray()
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_tune_trainable, specs=pending, pipeline=pipeline), {"cpu": 1}),
            param_space={"index": tune.grid_search(list(range(len(pending))))},
            tune_config=tune.TuneConfig(max_concurrent_trials=workers,
                                        trial_dirname_creator=lambda t: f"trial_{t.config['index']}"),
            run_config=tune.RunConfig(name="tune", storage_path=str((sweep_dir / "ray").resolve()), verbose=0),
        )
        grid = tuner.fit()
        results = []
        for r in grid:
            idx = r.config["index"]
            if r.error is not None:
                res = {**_trial_row(pending[idx]), "status": "failed", "error": str(r.error).splitlines()[0]}
            else:
                res = {**_trial_row(pending[idx]), "status": r.metrics.get("status", "done")}
                if "error" in r.metrics:
                    res["error"] = r.metrics["error"]
            results.append(res)
            echo(_progress_line(res, len(results), len(pending)))
        return results
    finally:
        if started:
            ray.shutdown()


def _progress_line(res: dict, k: int, n: int) -> str:
    tail = f"error: {res['error']}" if res["status"] == "failed" else (
        f"return {res['eval_return_mean']:.1f}, {res['real_steps']} real steps" if res.get("eval_return_mean")
        is not None else "")
    return f"[sweep {k}/{n}] {res['trial']}: {res['status']} {tail}"


# ------------------------------------------------------------------ aggregation
def _mean_std(vals: list) -> tuple[float | None, float | None]:
    v = [float(x) for x in vals if x is not None]
    return (float(np.mean(v)), float(np.std(v))) if v else (None, None)


def aggregate(rows: list[dict]) -> list[dict]:
    """Per setting (in first-seen order): seeds done, mean ± std of final return, real steps and wall time."""
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        rs = [r for r in rows if r["setting"] == setting and r["done"]]
        ret, real, wall, sparse = (_mean_std([r.get(k) for r in rs]) for k in
                                   ("eval_return_mean", "real_steps", "wall_seconds", "sparse_return_mean"))
        worst = [r["eval_return_min"] for r in rs if r.get("eval_return_min") is not None]
        out.append({"setting": setting, "n_done": len(rs), "n_trials": sum(r["setting"] == setting for r in rows),
                    "return_mean": ret[0], "return_std": ret[1], "return_worst_episode": min(worst) if worst else None,
                    "sparse_return_mean": sparse[0], "sparse_return_std": sparse[1],
                    "real_steps_mean": real[0], "real_steps_std": real[1], "wall_seconds_mean": wall[0],
                    "wall_seconds_std": wall[1]})
    return out


def _pm(m, s, fmt="{:.1f}") -> str:
    return "—" if m is None else f"{fmt.format(m)} ± {fmt.format(s)}"


def markdown(table: list[dict], title: str) -> str:
    lines = [f"# sweep {title}", "",
             "| setting | seeds done | final eval return (mean ± std over seeds) | worst episode | sparse policy |"
             " real steps (collection) | wall time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for t in table:
        worst = "—" if t.get("return_worst_episode") is None else f"{t['return_worst_episode']:.1f}"
        lines.append(f"| {t['setting']} | {t['n_done']}/{t['n_trials']} | {_pm(t['return_mean'], t['return_std'])} |"
                     f" {worst} | {_pm(t.get('sparse_return_mean'), t.get('sparse_return_std'))} |"
                     f" {_pm(t['real_steps_mean'], t['real_steps_std'], '{:.0f}')} |"
                     f" {_pm(t['wall_seconds_mean'], t['wall_seconds_std'], '{:.0f}')} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and k != "traceback"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


def _curve_value(row: dict) -> float:
    """A Dyna iteration's point on the learning curve: its real evaluation when there was one (opt-in), else
    the real episodes collected with its policy, else the surrogate estimate."""
    for k in ("eval_return_mean", "collect_return_mean", "surrogate_return_mean"):
        if row.get(k) is not None:
            return float(row[k])
    return float("nan")


def plot_sweep(rows: list[dict], table: list[dict], path: Path) -> Path | None:
    """Learning curves per setting (mean over seeds) and final return per setting."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, t in enumerate(table):
        curves = []
        for r in rows:
            if r["setting"] != t["setting"] or not r["done"]:
                continue
            try:
                m = Run(Path(r["path"]), None).read_metrics()
            except (OSError, ValueError):
                continue
            if m:
                curves.append(np.array([[row.get("real_steps_fit") or row["real_steps_collect"], _curve_value(row)]
                                        for row in m], dtype=float))
        for c in curves:
            ax1.plot(c[:, 0], c[:, 1], color=f"C{i % 10}", alpha=0.3, lw=1)
        if curves:
            n = min(len(c) for c in curves)
            mean = np.mean([c[:n] for c in curves], axis=0)
            ax1.plot(mean[:, 0], mean[:, 1], "-o", ms=3, color=f"C{i % 10}", label=t["setting"])
    ax1.set_xlabel("real steps the models were fitted on")
    ax1.set_ylabel("return (real evaluation, else collected episodes, else surrogate estimate)")
    ax1.set_title("learning curves (mean over seeds)")
    if table:
        ax1.legend(fontsize=7)
    xs = np.arange(len(table))
    ax2.errorbar(xs, [t["return_mean"] if t["return_mean"] is not None else np.nan for t in table],
                 yerr=[t["return_std"] or 0.0 for t in table], fmt="o", capsize=4)
    ax2.set_xticks(xs, [t["setting"] for t in table], rotation=20, ha="right", fontsize=7)
    ax2.set_ylabel("final eval return (mean ± std)")
    ax2.set_title("final return per setting")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ the sweep
def run_sweep(
    config: str | Path,
    seeds: int = 1,
    sets: Sequence[str] | None = None,
    backend: str = "local",
    workers: int = 1,
    address: str | None = None,
    runs_dir: str | Path = "runs",
    name: str | None = None,
    stages: Sequence[str] = ("train",),
    echo: Callable[..., None] = print,
    pipeline: TrialPipeline | None = None,
) -> dict:
    """Run every missing trial of the grid through ``pipeline`` and aggregate all of them.

    Parameters
    ----------
    config : path
        Base YAML config.
    seeds : int
        Seeds per setting (the config's seed, then the next ones).
    sets : list of str
        ``key.path=v1,v2`` axes of the grid.
    backend : {"local", "ray"}
    workers : int
        Trials run at the same time (processes, or concurrent Ray Tune trials of 1 CPU each).
    address : str, optional
        Ray cluster address (``ray`` backend); default: a local Ray instance.
    runs_dir, name : where the sweep directory goes (default name: ``<config stem>-sweep``).
    stages : pipeline stages of each trial (default ``train``).
    pipeline : callable
        Runs a trial's stages (see :data:`TrialPipeline`); :func:`sindyrl.pipeline.sweep` passes
        :func:`sindyrl.pipeline.run_stages` and checks the stage names.

    Returns
    -------
    dict with ``path`` (the sweep directory), ``rows`` (per trial), ``table`` (per setting),
    ``ran``/``skipped``/``failed`` counts and the written files.
    """
    if pipeline is None:
        raise ValueError("run_sweep: pass pipeline= (sindyrl.pipeline.run_stages), or call sindyrl.pipeline.sweep")
    if backend not in ("local", "ray"):
        raise ValueError(f"--backend must be local or ray, got {backend!r}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if address and backend != "ray":
        raise ValueError("--address is for the ray backend (add --backend ray)")
    if not stages:
        raise ValueError("--stages: no stage given")
    if backend == "ray":
        _import_ray()  # fail before any work when Ray is missing
    sweep_dir = Path(runs_dir) / (name or f"{Path(config).stem}-sweep")
    trials = expand_trials(config, seeds, sets, sweep_dir, stages)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(sweep_dir / "sweep.json", json.dumps(
        {"config": str(config), "seeds": seeds, "sets": list(sets or []), "stages": list(stages),
         "trials": [t["trial"] for t in trials]}, indent=1))
    pending = [t for t in trials if not trial_done(t["path"])]
    n_skipped = len(trials) - len(pending)
    echo(f"sweep {sweep_dir}: {len(trials)} trials ({len(trials) // seeds} settings x {seeds} seeds), "
         f"{n_skipped} already finished, {len(pending)} to run on {backend} with {workers} worker(s)")
    results = []
    if pending:
        if backend == "local":
            results = _run_local(pending, workers, pipeline, echo)
        else:
            results = _run_ray(pending, workers, address, sweep_dir, pipeline, echo)
    failed = [r for r in results if r["status"] == "failed"]
    rows = [_trial_row(t) for t in trials]
    table = aggregate(rows)
    _write_csv(sweep_dir / "trials.csv", rows)
    _write_csv(sweep_dir / "summary.csv", table)
    md = markdown(table, f"{sweep_dir.name} ({config}, {seeds} seeds)")
    atomic_write(sweep_dir / "summary.md", md)
    png = plot_sweep(rows, table, sweep_dir / "sweep.png")
    echo(md)
    for r in failed:
        echo(f"failed: {r['trial']}: {r['error']}")
    return {"path": sweep_dir, "rows": rows, "table": table, "ran": len(results) - len(failed),
            "skipped": n_skipped, "failed": len(failed), "failures": failed,
            "files": {"summary_csv": sweep_dir / "summary.csv", "summary_md": sweep_dir / "summary.md",
                      "trials_csv": sweep_dir / "trials.csv", "plot": png}}
