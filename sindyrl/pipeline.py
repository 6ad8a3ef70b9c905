"""The stages of ``sindyrl run``: train (collect, fit, Dyna) -> distill -> export -> control -> hil -> robust -> report.

This module and :mod:`sindyrl.cli` are the only places in ``sindyrl`` that
import ``controllers``, ``export`` and ``firmware_bridge``. Each stage takes
the run, adds its figures to ``summary.json`` and can be skipped
(``skip: [hil]`` in the config or ``--skip hil``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from .config import Config
from .runs import Run

__all__ = ["STAGES", "run_pipeline", "stage_train"]


def stage_train(run: Run, echo: Callable[..., None] = print, progress_bar: bool = True) -> dict:
    from .dyna import Dyna

    return Dyna(run.config, run, echo=echo, progress_bar=progress_bar).run()


def stage_distill(run: Run, echo: Callable[..., None] = print, **_) -> dict:
    from .policy import distill_run

    return distill_run(run, echo=echo)


def _external(module: str, func: str = "stage", key: str | None = None, pass_echo: bool = False) -> Callable[..., dict]:
    """A stage implemented in another package (imported only when the stage runs).

    Its options come from ``config.stages[key]`` (default: the package name).
    """
    key = key or module.split(".")[0]

    def call(run: Run, echo: Callable[..., None] = print, **_) -> dict:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise RuntimeError(f"stage needs {module!r}, which cannot be imported ({e})") from None
        options = dict(run.config.stages.get(key, {}) or {})
        if pass_echo:
            options["echo"] = echo
        return getattr(mod, func)(run, **options)

    return call


def stage_report(run: Run, echo: Callable[..., None] = print, **_) -> dict:
    from .report import write_report

    paths = write_report(run)
    return {"report_html": str(paths["html"]), "report_md": str(paths["md"])}


#: name -> (function, what it does). Order is the order of ``sindyrl run``.
STAGES: dict[str, tuple[Callable[..., dict], str]] = {
    "train": (stage_train, "collect real data, fit sparse models, train the agent in the surrogate (Dyna)"),
    "distill": (stage_distill, "distil the neural policy into a sparse polynomial policy"),
    "export": (_external("export.stage_fn", "stage"), "ONNX export of policies and models, parity checks"),
    "control": (_external("controllers.stage_fn", "stage"), "LQR/MPC on the learned model, compared on the real env"),
    "hil": (_external("firmware_bridge.stage_fn", "stage"), "hardware-in-the-loop on the host board / QEMU"),
    "robust": (_external("sindyrl.robust.commands", "stage", key="robust", pass_echo=True),
               "non-dominated robust policies and test-time bandit (runs only when stages.robust is set)"),
    "report": (stage_report, "report.html and report.md"),
}


def run_pipeline(cfg: Config, run: Run, skip: list[str] | None = None, echo: Callable[..., None] = print,
                 progress_bar: bool = True) -> dict:
    skip = set(skip or []) | set(cfg.skip)
    if "robust" not in cfg.stages:
        skip.add("robust")  # minutes of attacker/policy training: opt in with a stages.robust section
    if cfg.dynamics.model != "sindy":
        # the later stages read the sparse dynamics model (models/dynamics.json), which a neural ensemble lacks
        nn_skip = {"distill", "export", "control", "hil", "robust"} - skip
        if nn_skip:
            echo(f"dynamics.model is {cfg.dynamics.model!r}: no sparse dynamics model, so stages "
                 f"{', '.join(s for s in STAGES if s in nn_skip)} are skipped")
        skip |= nn_skip
    unknown = skip - set(STAGES)
    if unknown:
        raise ValueError(f"skip: unknown stage(s) {sorted(unknown)}; stages are {list(STAGES)}")
    summary: dict = {}
    for name, (fn, what) in STAGES.items():
        if name in skip:
            echo(f"=== {name}: skipped")
            continue
        echo(f"=== {name}: {what}")
        t0 = time.time()
        out = fn(run, echo=echo, progress_bar=progress_bar) or {}
        run.update_summary(out)
        summary.update(out)
        run.write_manifest(timings={name: time.time() - t0})
        echo(f"=== {name}: done in {time.time() - t0:.0f}s")
    return run.read_summary()
