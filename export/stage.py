"""The ``export`` stage of ``sindyrl run`` (and ``sindyrl export RUN``): a run's artifacts to ONNX.

Options: ``stages.export`` (:class:`sindyrl.stage_options.ExportOptions`).

Writes under ``RUN/export/``:

    policy.onnx          the neural policy (agent/agent.zip, VecNormalize folded in when present)
    policy.int8.onnx     its int8 dynamic quantisation (``quantize=True``)
    sparse_policy.onnx   models/policy.json
    dynamics.onnx        models/dynamics.json
    reward.onnx          models/reward.json

Each file is checked against its Python reference on ``n_states`` states
sampled from the run's data bounds (a SparseModel's own ``input_bounds`` when
it has them) and is not written if they differ by more than ``tol``. Summary
keys: ``onnx_<what>_bytes``, ``onnx_<what>_parity_max_abs``, and
``onnx_parity_max_abs``, the worst parity error of the run's ONNX files; with
quantisation also the int8 size, the largest action change, the real-env
return of the float and int8 policies on the same reset seeds, and the real
steps that comparison took (``real_steps_export``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from export.parity import DEFAULT_TOL
from sindyrl.stage_options import ExportOptions, StageSkipped

__all__ = ["stage", "export_run", "WHAT", "FILES", "ExportOptions"]

#: What can be exported; ``all`` is every one the run has.
WHAT = ("policy", "sparse-policy", "dynamics", "reward", "all")

#: Output file of each artifact, under ``run.export_dir``.
FILES = {
    "policy": "policy.onnx",
    "sparse-policy": "sparse_policy.onnx",
    "dynamics": "dynamics.onnx",
    "reward": "reward.onnx",
}
_MODEL_NAME = {"sparse-policy": "policy", "dynamics": "dynamics", "reward": "reward"}


def _key(what: str) -> str:
    return "onnx_" + what.replace("-", "_")


def _fmt(err: float | None) -> str:
    return "not checked" if err is None else f"{err:.3g}"


def _data_box(run: Any, columns: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Min/max of the run's real data: ``obs`` (observations and next observations) or ``obs+act``."""
    try:
        data = run.load_data()
    except FileNotFoundError:
        return None
    if len(data) == 0:
        return None
    lo, hi = data.state_bounds()
    if columns == "obs+act":
        lo = np.concatenate([lo, data.actions.min(axis=0)])
        hi = np.concatenate([hi, data.actions.max(axis=0)])
    return lo, hi


def _export_neural(run: Any, n_states: int, seed: int, tol: float, echo: Callable[..., None]) -> tuple[dict, Any]:
    from export.neural import export_policy

    agent = run.load_agent()
    vn = run.load_vecnormalize()
    box = _data_box(run, "obs")
    low, high = box if box is not None else (None, None)
    res = export_policy(
        agent, run.export_dir / FILES["policy"], vecnormalize=vn, obs_names=run.obs_names,
        action_names=run.action_names, checkpoint=run.agent_path, low=low, high=high, n_states=n_states,
        seed=seed, tol=tol,
    )
    echo(f"[export] {res.path} ({res.n_bytes} bytes), parity max abs {_fmt(res.parity_max_abs)}"
         + (" (VecNormalize folded in)" if vn is not None else ""))
    return {"onnx_policy_bytes": res.n_bytes, "onnx_policy_parity_max_abs": res.parity_max_abs}, (res, agent, vn, box)


def _quantize_and_compare(run: Any, float_res: Any, box: Any, n_states: int, n_episodes: int, seed: int,
                          echo: Callable[..., None]) -> dict:
    from export.onnxfile import load_onnx
    from export.parity import sample_states
    from export.quantize import quantize
    from sindyrl.evaluation import StepCounter, evaluate_policy

    q = quantize(float_res.path, run.export_dir / "policy.int8.onnx")
    fm, qm = load_onnx(float_res.path, threads=1), load_onnx(q.path, threads=1)
    out = {"onnx_policy_int8_bytes": q.n_bytes, "onnx_policy_int8_size_ratio": q.ratio}
    if box is None:
        space = run.make_env().observation_space
        box = (space.low, space.high)
    if np.all(np.isfinite(box[0])) and np.all(np.isfinite(box[1])):
        X = sample_states(box[0], box[1], n=max(n_states, 1), seed=seed)
        out["onnx_policy_int8_max_abs_action_change"] = float(np.abs(qm(X) - fm(X)).max())
    # same reset seeds for both, so the return change is the quantisation's alone
    real = StepCounter(run.make_env)
    ret_f = evaluate_policy(fm, real, n_episodes=n_episodes, seed=seed)
    ret_q = evaluate_policy(qm, real, n_episodes=n_episodes, seed=seed)
    out["real_steps_export"] = real.steps
    out.update(
        onnx_policy_float_return_mean=float(np.mean(ret_f)),
        onnx_policy_int8_return_mean=float(np.mean(ret_q)),
        onnx_policy_int8_return_change=float(np.mean(ret_q) - np.mean(ret_f)),
    )
    echo(f"[export] {q.path} ({q.n_bytes} bytes, {q.ratio:.2f}x the float file); return over {n_episodes} "
         f"episodes {out['onnx_policy_float_return_mean']:.1f} (float) -> {out['onnx_policy_int8_return_mean']:.1f} "
         "(int8)")
    return out


def _export_sparse(run: Any, what: str, n_states: int, seed: int, tol: float, echo: Callable[..., None]) -> dict:
    from export.sparse_model import export_sparse_model

    model = run.load_model(_MODEL_NAME[what])
    low = high = None
    if model.input_bounds is None:
        box = _data_box(run, "obs" if what == "sparse-policy" else "obs+act")
        if box is None or box[0].size != model.n_inputs:
            raise ValueError(
                f"{run.path}: the {what} model has no input_bounds and the run has no matching real data "
                "to sample parity states from"
            )
        low, high = box
    res = export_sparse_model(model, run.export_dir / FILES[what], low=low, high=high, n_states=n_states, seed=seed,
                              tol=tol)
    echo(f"[export] {res.path} ({res.n_bytes} bytes, {model.nnz} coefficients), parity max abs "
         f"{_fmt(res.parity_max_abs)}")
    return {f"{_key(what)}_bytes": res.n_bytes, f"{_key(what)}_parity_max_abs": res.parity_max_abs}


def _available(run: Any, what: str) -> bool:
    if what == "policy":
        return run.agent_path.is_file()
    return run.model_path(_MODEL_NAME[what]).is_file()


def export_run(
    run: Any,
    what: str = "all",
    quantize: bool = False,
    n_states: int = 10_000,
    seed: int | None = None,
    tol: float = DEFAULT_TOL,
    n_episodes: int | None = None,
    echo: Callable[..., None] = print,
) -> dict:
    """Export a run's policy and models to ONNX; returns the summary keys.

    Parameters
    ----------
    run : sindyrl.runs.Run
        The run directory.
    what : {"policy", "sparse-policy", "dynamics", "reward", "all"}, default "all"
        What to export; ``all`` exports every artifact the run has.
    quantize : bool, default False
        Also write ``policy.int8.onnx`` and compare its real-env return.
    n_states : int, default 10000
        Parity states per file.
    seed : int, optional
        Seed of the parity states and of the evaluation resets (default: the run's seed).
    tol : float, default 1e-5
        Largest accepted parity error.
    n_episodes : int, optional
        Real episodes of each policy in the float/int8 return comparison (default 5: real steps are
        expensive, and the comparison is on the same reset seeds).
    echo : callable, default print
        Progress lines.

    Raises
    ------
    StageSkipped
        For ``all``, if the run has no artifact at all (a ``ValueError``: the stage cannot apply).
    FileNotFoundError
        If the artifact asked for is not in the run.
    ParityError
        If a file differs from its Python reference by more than ``tol``.
    """
    if what not in WHAT:
        raise ValueError(f"export: what must be one of {list(WHAT)}, got {what!r}")
    if n_states < 0:
        raise ValueError(f"export: n_states must be >= 0, got {n_states}")
    if not tol >= 0:
        raise ValueError(f"export: tol must be >= 0, got {tol}")
    seed = int(run.config.seed if seed is None else seed)
    if n_episodes is None:
        n_episodes = run.confirm_episodes()
    if what == "all":
        todo = [w for w in FILES if _available(run, w)]
        if not todo:
            raise StageSkipped(f"{run.path}: nothing to export (no agent/agent.zip and no models/*.json); "
                               "train the run first")
        for w in FILES:
            if w not in todo:
                echo(f"[export] {w}: not in this run, skipped")
    else:
        todo = [what]
    if quantize and "policy" not in todo:
        raise ValueError("export: --quantize applies to the neural policy; export 'policy' (or 'all') with it")

    out: dict = {}
    for w in todo:
        if w == "policy":
            keys, (res, _agent, _vn, box) = _export_neural(run, n_states, seed, tol, echo)
            out.update(keys)
            if quantize:
                out.update(_quantize_and_compare(run, res, box, n_states, n_episodes, seed, echo))
        else:
            out.update(_export_sparse(run, w, n_states, seed, tol, echo))

    # the worst parity error over the run's ONNX files, including ones exported by an earlier call
    errors = {k: v for k, v in run.read_summary().items() if k.endswith("_parity_max_abs") and k != "onnx_parity_max_abs"}
    errors = {k: v for k, v in errors.items() if any(k == f"{_key(w)}_parity_max_abs" and
                                                      (run.export_dir / FILES[w]).is_file() for w in FILES)}
    errors.update({k: v for k, v in out.items() if k.endswith("_parity_max_abs")})
    values = [float(v) for v in errors.values() if v is not None]
    if values:
        out["onnx_parity_max_abs"] = max(values)
    return out


def stage(run: Any, echo: Callable[..., None] = print, **options: Any) -> dict:
    """The ``export`` stage: :func:`export_run` with the ``stages.export`` options (:class:`ExportOptions`)."""
    return export_run(run, echo=echo, **ExportOptions.from_dict(options).to_kwargs())
