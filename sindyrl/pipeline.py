"""The stages of ``sindyrl run``: train (collect, fit, Dyna) -> distill -> export -> control -> hil -> robust -> report.

Every stage is ``stage(run, echo, **options) -> dict``; the later ones live with
their backends (``export/stage.py``, ``controllers/stage.py``,
``firmware_bridge/stage.py``, ``sindyrl/robust/stage.py``) and take the options
of ``stages.<stage name>`` in the config (dataclasses in
:mod:`sindyrl.stage_options`, checked when the config is loaded).

This module and :mod:`sindyrl.cli` are the only places in ``sindyrl`` that
import ``controllers``, ``export`` and ``firmware_bridge``, and this module is
the one writer of ``summary.json``: stages return their figures and
:func:`run_stage` records them (the CLI's single-stage commands go through it
too). A stage that cannot apply to the system raises
:class:`~sindyrl.stage_options.StageSkipped`; the pipeline records the reason
under ``summary.json["skipped"]`` and goes on. Real steps: every ``real_steps_<stage>``
key a stage returns is added up into ``real_steps_total``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from .config import Config
from .runs import Run
from .stage_options import ControlOptions, ExportOptions, HILOptions, RobustOptions, StageSkipped

__all__ = ["STAGES", "run_pipeline", "run_stage", "run_stages", "record_summary", "real_steps_total", "sweep",
           "stage_train", "StageSkipped"]

#: options class of each stage that has ``stages.<name>`` options
OPTIONS = {"export": ExportOptions, "control": ControlOptions, "hil": HILOptions, "robust": RobustOptions}

#: stages that read the sparse dynamics model (models/dynamics.json), which a neural ensemble lacks
NEEDS_SPARSE_DYNAMICS = ("distill", "export", "control", "hil", "robust")

#: stages ``sindyrl run`` runs only when the config has their ``stages.<name>`` section (minutes of training)
OPT_IN = ("robust",)

#: real-steps keys that are not steps a stage spent (the total itself; the data a fit saw)
_NOT_SPENT = ("real_steps_total", "real_steps_fit")


def stage_train(run: Run, echo: Callable[..., None] = print, progress_bar: bool = True) -> dict:
    from .dyna import Dyna

    return Dyna(run.config, run, echo=echo, progress_bar=progress_bar).run()


def stage_distill(run: Run, echo: Callable[..., None] = print) -> dict:
    from .policy import distill_run

    return distill_run(run, echo=echo)


def _external(module: str) -> Callable[..., dict]:
    """``<module>.stage``, imported only when the stage runs."""

    def call(run: Run, echo: Callable[..., None] = print, **options: Any) -> dict:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise RuntimeError(f"stage needs {module!r}, which cannot be imported ({e})") from None
        return mod.stage(run, echo=echo, **options)

    call.__qualname__ = call.__name__ = f"{module}.stage"
    return call


def stage_report(run: Run, echo: Callable[..., None] = print) -> dict:
    from .report import write_report

    paths = write_report(run)
    return {"report_html": str(paths["html"]), "report_md": str(paths["md"])}


#: name -> (function, what it does). Order is the order of ``sindyrl run``.
STAGES: dict[str, tuple[Callable[..., dict], str]] = {
    "train": (stage_train, "collect real data, fit sparse models, train the agent in the surrogate (Dyna)"),
    "distill": (stage_distill, "distil the neural policy into a sparse polynomial policy"),
    "export": (_external("export.stage"), "ONNX export of policies and models, parity checks"),
    "control": (_external("controllers.stage"), "LQR/MPC on the learned model, compared on the real env"),
    "hil": (_external("firmware_bridge.stage"), "hardware-in-the-loop on the host board / QEMU"),
    "robust": (_external("sindyrl.robust.stage"),
               "non-dominated robust policies and test-time bandit (runs only when stages.robust is set)"),
    "report": (stage_report, "report.html and report.md"),
}


# ------------------------------------------------------------------ summary.json
def real_steps_total(summary: dict) -> int:
    """Sum of the ``real_steps_<stage>`` figures (collection, evaluations, control, hil, ...)."""
    return int(sum(v for k, v in summary.items() if k.startswith("real_steps_") and k not in _NOT_SPENT
                   and isinstance(v, (int, float)) and not isinstance(v, bool)))


def record_summary(run: Run, values: dict, skipped: dict[str, str] | None = None, done: str | None = None) -> dict:
    """Merge ``values`` into ``summary.json``; keep ``skipped`` ({stage: reason}) and ``real_steps_total`` current.

    ``skipped`` entries are merged with the ones already recorded; ``done`` (a stage that has just run)
    drops that stage's skip entry from an earlier attempt.
    """
    old = run.read_summary()
    merged = {**old, **values}
    update = dict(values)
    sk = dict(old.get("skipped") or {})
    if done is not None:
        sk.pop(done, None)
    sk.update(skipped or {})
    if sk or "skipped" in old:
        update["skipped"] = sk
    merged["skipped"] = sk
    update["real_steps_total"] = real_steps_total(merged)
    return run.update_summary(update)


# ------------------------------------------------------------------ one stage
def _options(run: Run, name: str, overrides: dict) -> dict:
    """The stage's keyword arguments: ``stages.<name>`` of the config, then ``overrides`` (None: not given)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if name not in OPTIONS:
        return given
    section = getattr(run.config.stages, name)
    base = section.to_kwargs() if section is not None else {}
    return OPTIONS[name].from_dict({**base, **given}, f"stages.{name}").to_kwargs()


def cannot_apply(run: Run, name: str) -> str | None:
    """Why stage ``name`` cannot apply to this run's system, or None (checks that need no stage code)."""
    if name in NEEDS_SPARSE_DYNAMICS and run.config.dynamics.model != "sindy":
        return f"no sparse dynamics model (dynamics.model: {run.config.dynamics.model})"
    return None


def run_stage(run: Run, name: str, echo: Callable[..., None] = print, *, skip_ok: bool = True,
              progress_bar: bool = True, **options: Any) -> dict:
    """Run one stage on ``run`` and record what it returns in ``summary.json``.

    Parameters
    ----------
    run : Run
    name : str
        A key of :data:`STAGES`.
    echo : callable
        Progress lines.
    skip_ok : bool, default True
        A stage that cannot apply is recorded as skipped (``summary.json["skipped"][name]``) and
        ``{"skipped": {name: reason}}`` is returned; with False (an explicit command) its
        :class:`StageSkipped` propagates, a ``ValueError`` naming the reason.
    progress_bar : bool
        Progress bars of the ``train`` stage.
    **options
        Override the config's ``stages.<name>`` options (None values are ignored).

    Returns
    -------
    dict
        The figures the stage returned.
    """
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {list(STAGES)}")
    fn, _ = STAGES[name]
    t0 = time.time()
    try:
        reason = cannot_apply(run, name)
        if reason is not None:
            raise StageSkipped(reason)
        kwargs = _options(run, name, options)
        if name == "train":
            kwargs["progress_bar"] = progress_bar
        out = fn(run, echo=echo, **kwargs) or {}
    except StageSkipped as e:
        if not skip_ok:
            raise
        echo(f"=== {name}: skipped ({e.reason})")
        record_summary(run, {}, skipped={name: e.reason})
        return {"skipped": {name: e.reason}}
    record_summary(run, out, done=name)
    run.write_manifest(timings={name: time.time() - t0})
    return out


# ------------------------------------------------------------------ the pipeline
def _real_steps_table(summary: dict) -> list[str]:
    rows = [(k[len("real_steps_"):], v) for k, v in summary.items()
            if k.startswith("real_steps_") and k not in _NOT_SPENT and isinstance(v, (int, float))]
    if not rows:
        return []
    order = list(STAGES)

    def rank(stage_key: str) -> tuple[int, str]:
        owner = {"collect": "train", "eval": "train", "final_eval": "train"}.get(stage_key, stage_key)
        return (order.index(owner) if owner in order else len(order), stage_key)

    lines = ["=== real steps", f"  {'stage':14s} {'steps':>10s}"]
    lines += [f"  {k:14s} {int(v):10d}" for k, v in sorted(rows, key=lambda kv: rank(kv[0]))]
    lines.append(f"  {'total':14s} {real_steps_total(summary):10d}")
    return lines


def run_pipeline(cfg: Config, run: Run, skip: list[str] | None = None, echo: Callable[..., None] = print,
                 progress_bar: bool = True) -> dict:
    """Every stage in order; returns the run's summary.

    ``skip`` (and the config's ``skip:``) are recorded as ``skipped: {stage: "skipped by the user"}``; a
    stage that cannot apply is recorded with its reason, and the pipeline goes on.
    """
    user_skip = set(skip or []) | set(cfg.skip)
    unknown = user_skip - set(STAGES)
    if unknown:
        raise ValueError(f"skip: unknown stage(s) {sorted(unknown)}; stages are {list(STAGES)}")
    for name, (_, what) in STAGES.items():
        if name in user_skip:
            echo(f"=== {name}: skipped (by the user)")
            record_summary(run, {}, skipped={name: "skipped by the user"})
            continue
        if name in OPT_IN and getattr(cfg.stages, name) is None:
            reason = f"not configured (add a stages.{name} section to the config to run it)"
            echo(f"=== {name}: skipped ({reason})")
            record_summary(run, {}, skipped={name: reason})
            continue
        echo(f"=== {name}: {what}")
        t0 = time.time()
        out = run_stage(run, name, echo=echo, progress_bar=progress_bar)
        if "skipped" not in out:
            echo(f"=== {name}: done in {time.time() - t0:.0f}s")
    summary = run.read_summary()
    for line in _real_steps_table(summary):
        echo(line)
    return summary


def run_stages(run: Run, stages: Sequence[str], echo: Callable[..., None] = print, progress_bar: bool = False,
               done: Callable[[], dict] | None = None) -> dict:
    """Only ``stages`` of the pipeline, in pipeline order (a sweep trial); ``done()``'s figures are recorded after."""
    summary = run_pipeline(run.config, run, skip=[s for s in STAGES if s not in stages], echo=echo,
                           progress_bar=progress_bar)
    if done is not None:
        summary = record_summary(run, done())
    return summary


def sweep(config: Any, seeds: int = 1, sets: Sequence[str] | None = None, stages: Sequence[str] = ("train",),
          **options: Any) -> dict:
    """``sindyrl sweep``: a grid of runs (see :func:`sindyrl.sweep.run_sweep`), each through ``stages``."""
    from .sweep import run_sweep

    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise ValueError(f"--stages: unknown stage(s) {bad} (stages are {', '.join(STAGES)})")
    return run_sweep(config, seeds, sets, stages=stages, pipeline=run_stages, **options)
