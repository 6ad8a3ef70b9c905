"""Parity checks: an exported ONNX graph against the Python object it came from.

The reference is what the user runs in Python: ``SparseModel.evaluate`` for a
sparse model, ``model.predict(obs, deterministic=True)`` (after the run's
``VecNormalize`` observation normalisation) for an SB3 agent. States are
sampled uniformly from a box: the model's data bounds when it has them, else
a box the caller gives. Every export runs this check and refuses to write a
file whose outputs differ by more than :data:`DEFAULT_TOL`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export.onnxfile import OnnxModel, load_onnx, model_from_proto
from sindyrl.sparse import SparseModel

__all__ = ["DEFAULT_TOL", "ParityError", "sample_states", "check_parity", "require_parity", "reference_of"]

#: Largest accepted difference between ONNX (float32 I/O) and the Python reference: absolute, and relative
#: to the reference where its magnitude exceeds 1 (a float32 output of 8,000 is 5e-4 off by its rounding alone)
DEFAULT_TOL = 1e-5


class ParityError(ValueError):
    """The ONNX graph does not reproduce the Python reference within tolerance."""


def sample_states(
    low: np.ndarray | list[float], high: np.ndarray | list[float], n: int = 10_000, seed: int = 0
) -> np.ndarray:
    """``n`` float32 states uniform in the box ``[low, high]`` (seeded).

    Raises
    ------
    ValueError
        If the bounds are not finite, not the same length, or ``low > high``.
    """
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    if low.shape != high.shape:
        raise ValueError(f"parity box: low has shape {low.shape} but high has {high.shape}")
    bad = np.flatnonzero(~(np.isfinite(low) & np.isfinite(high)))
    if bad.size:
        raise ValueError(
            f"parity box is not finite in dimension(s) {bad.tolist()}: pass finite low/high "
            "(e.g. the data bounds of the run)"
        )
    if np.any(low > high):
        raise ValueError("parity box: need low <= high in every dimension")
    if n < 1:
        raise ValueError(f"parity check needs n >= 1 states, got {n}")
    rng = np.random.default_rng(seed)
    return (low + rng.random((int(n), low.size)) * (high - low)).astype(np.float32)


def _as_onnx_model(onnx_model: Any) -> OnnxModel:
    if isinstance(onnx_model, OnnxModel):
        return onnx_model
    if isinstance(onnx_model, onnx.ModelProto):
        return model_from_proto(onnx_model)
    if isinstance(onnx_model, (str, os.PathLike)):
        return load_onnx(Path(onnx_model))
    raise TypeError(f"check_parity: expected an ONNX path, ModelProto or OnnxModel, got {type(onnx_model).__name__}")


def reference_of(
    reference: Any, vecnormalize: Any = None
) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """The Python reference function of a SparseModel, SB3 agent or callable, and its default box."""
    if isinstance(reference, SparseModel):
        if vecnormalize is not None:
            raise ValueError("check_parity: vecnormalize applies to SB3 agents, not to a SparseModel")
        return reference.evaluate, reference.input_bounds
    policy = getattr(reference, "policy", None)
    if policy is not None and hasattr(reference, "predict"):
        space = reference.observation_space
        box = None
        low, high = getattr(space, "low", None), getattr(space, "high", None)
        if low is not None and np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
            box = (np.asarray(low, dtype=np.float64).reshape(-1), np.asarray(high, dtype=np.float64).reshape(-1))

        def predict(X: np.ndarray) -> np.ndarray:
            obs = X if vecnormalize is None else vecnormalize.normalize_obs(X)
            return reference.predict(obs, deterministic=True)[0]

        return predict, box
    if callable(reference):
        if vecnormalize is not None:
            raise ValueError("check_parity: vecnormalize applies to SB3 agents; fold it into your callable")
        return reference, None
    raise TypeError(
        f"check_parity: reference must be a SparseModel, an SB3 model or a callable, got {type(reference).__name__}"
    )


def check_parity(
    onnx_model: str | os.PathLike | onnx.ModelProto | OnnxModel,
    reference: SparseModel | Any | Callable[[np.ndarray], np.ndarray],
    low: np.ndarray | list[float] | None = None,
    high: np.ndarray | list[float] | None = None,
    n: int = 10_000,
    seed: int = 0,
    vecnormalize: Any = None,
) -> float:
    """Largest difference between an ONNX graph and its Python reference: ``|onnx - ref| / max(1, |ref|)``.

    Absolute where the reference is within [-1, 1] (actions, normalised states), relative beyond: the
    graph's outputs are float32, whose rounding alone is ``2**-24 |ref|`` (a dynamics model sampled at the
    corners of its data box can give thousands).

    Parameters
    ----------
    onnx_model : path, ModelProto or OnnxModel
        The exported graph (run with onnxruntime on CPU).
    reference : SparseModel, SB3 model or callable
        ``SparseModel.evaluate``; ``model.predict(obs, deterministic=True)``
        for an SB3 model (after ``vecnormalize.normalize_obs`` when given);
        or any ``f(X: (N, n_in) float32) -> (N, n_out)``.
    low, high : array, optional
        The box states are sampled from. Default: the SparseModel's
        ``input_bounds``, or the SB3 observation space when it is finite.
    n : int, default 10000
        Number of states.
    seed : int, default 0
        Seed of the state sampler.
    vecnormalize : VecNormalize, optional
        Observation normalisation the SB3 agent was trained with.

    Returns
    -------
    float
        ``max |onnx(X) - reference(X)| / max(1, |reference(X)|)`` over all states and outputs;
        ``inf`` if one side is NaN where the other is not.
    """
    m = _as_onnx_model(onnx_model)
    fn, box = reference_of(reference, vecnormalize)
    if low is None or high is None:
        if box is None:
            raise ValueError(
                "check_parity: no box to sample states from; pass low and high "
                "(the reference has no input_bounds or finite observation space)"
            )
        low = box[0] if low is None else low
        high = box[1] if high is None else high
    X = sample_states(low, high, n=n, seed=seed)
    got = np.asarray(m(X), dtype=np.float64)
    want = np.asarray(fn(X), dtype=np.float64)
    if got.size != want.size:
        raise ValueError(f"check_parity: ONNX output has shape {got.shape} but the reference gives {want.shape}")
    got, want = got.reshape(want.shape), want
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    if np.any(nan_got != nan_want):
        return float("inf")
    ok = ~nan_want
    if not np.any(ok):
        return 0.0
    # equal infinities (e.g. unbounded clips) count as a match, not as inf - inf = nan
    with np.errstate(invalid="ignore"):
        diff = np.where(got[ok] == want[ok], 0.0, np.abs(got[ok] - want[ok]) / np.maximum(1.0, np.abs(want[ok])))
    return float(np.max(diff))


def require_parity(err: float, tol: float, what: str) -> None:
    """Raise :class:`ParityError` if ``err`` exceeds ``tol``."""
    if not err <= tol:
        raise ParityError(
            f"{what}: ONNX output differs from the Python reference by {err:.3g} (max abs, relative where "
            f"the reference exceeds 1), above the "
            f"tolerance {tol:.3g}; the file was not written"
        )
