"""CasADi backend of :class:`sindyrl.sparse.SparseModel`: the model as symbolic expressions.

The expression is built term by term from the model's factors (``pow``, ``sin``,
``cos``), so CasADi can differentiate it exactly and generate C from it. After
the linear combination the ``unit_pairs`` are renormalised onto the unit circle
and then ``output_bounds`` clip the outputs, in the same order and with the
same :data:`~sindyrl.sparse.UNIT_EPS` as :meth:`SparseModel.evaluate`.
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from sindyrl.sparse import UNIT_EPS, SparseModel

__all__ = ["casadi_expr", "casadi_function", "Symbolic"]

#: A CasADi symbolic (or numeric DM) column.
Symbolic = ca.SX | ca.MX | ca.DM


def _factor(x: Symbolic, idx: int, kind: str, p: float) -> Symbolic:
    xi = x[idx]
    if kind == "pow":
        return xi ** int(p) if int(p) != 1 else xi
    if kind == "sin":
        return ca.sin(p * xi)
    if kind == "cos":
        return ca.cos(p * xi)
    raise ValueError(f"casadi backend: unknown factor kind {kind!r}")


def casadi_expr(model: SparseModel, x: Symbolic, coef: np.ndarray | None = None) -> Symbolic:
    """The model's outputs as a CasADi column expression of the input column ``x``.

    Parameters
    ----------
    model : SparseModel
        The sparse map to translate.
    x : casadi.SX or casadi.MX, shape (n_inputs, 1)
        Symbolic (or numeric DM) input column, in the order of ``model.inputs``.
    coef : array, shape (n_outputs, n_terms), optional
        Coefficients to use instead of ``model.coef`` (e.g. one ensemble member).

    Returns
    -------
    casadi.SX or casadi.MX, shape (n_outputs, 1)
    """
    if not isinstance(model, SparseModel):
        raise TypeError(f"casadi_expr needs a sindyrl.sparse.SparseModel, got {type(model).__name__}")
    if x.shape != (model.n_inputs, 1):
        raise ValueError(f"{model.name}: symbolic input has shape {x.shape}, expected ({model.n_inputs}, 1)")
    C = model.coef if coef is None else np.asarray(coef, dtype=np.float64)
    if C.shape != model.coef.shape:
        raise ValueError(f"{model.name}: coef has shape {C.shape}, expected {model.coef.shape}")
    active = model.active_terms(coef=C)
    cache: dict = {}
    feats = []
    for k in active:
        v = None
        for f in model.terms[k]:
            if f not in cache:
                cache[f] = _factor(x, *f)
            v = cache[f] if v is None else v * cache[f]
        feats.append(1.0 if v is None else v)
    outs = []
    for o in range(model.n_outputs):
        y = 0
        for j, k in enumerate(active):
            c = float(C[o, k])
            if c != 0.0:
                y = y + c * feats[j]
        outs.append(y)
    for c, s in model.unit_pairs:
        r = ca.fmax(ca.sqrt(outs[c] ** 2 + outs[s] ** 2), UNIT_EPS)
        outs[c], outs[s] = outs[c] / r, outs[s] / r
    if model.output_bounds is not None:
        lo, hi = model.output_bounds
        outs = [ca.fmin(ca.fmax(y, float(lo[i])), float(hi[i])) for i, y in enumerate(outs)]
    return ca.vertcat(*outs)


def casadi_function(model: SparseModel, name: str | None = None, split: int | None = None) -> ca.Function:
    """The model as a CasADi ``Function`` (SX graph).

    Parameters
    ----------
    model : SparseModel
        The sparse map to translate.
    name : str, optional
        Function name (default: the model's name).
    split : int, optional
        If given, the function takes two arguments, the first ``split`` inputs
        (the state) and the rest (the action), as ``f(x, u)``. Otherwise it
        takes one input column ``z``.

    Returns
    -------
    casadi.Function
        ``f(z) -> y`` or ``f(x, u) -> y``, with column vectors.
    """
    name = name or model.name
    if split is None:
        z = ca.SX.sym("z", model.n_inputs)
        return ca.Function(name, [z], [casadi_expr(model, z)], ["z"], ["y"])
    if not 0 <= split <= model.n_inputs:
        raise ValueError(f"{model.name}: split={split} outside 0..{model.n_inputs}")
    x = ca.SX.sym("x", split)
    u = ca.SX.sym("u", model.n_inputs - split)
    y = casadi_expr(model, ca.vertcat(x, u))
    return ca.Function(name, [x, u], [y], ["x", "u"], ["y"])
