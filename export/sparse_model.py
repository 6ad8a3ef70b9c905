"""SparseModel -> ONNX, built node by node with ``onnx.helper`` (no torch).

The graph does what ``SparseModel.evaluate`` does, in the same order:

1. each library factor of an active term as ONNX ops (``Gather`` of the input
   column, then ``Pow``, or ``Mul`` by the frequency and ``Sin``/``Cos``),
   each factor computed once and shared between terms;
2. each term as the product of its factors;
3. ``MatMul`` with the coefficients (inactive terms are never computed, as in
   numpy) plus the constant term's coefficients as a bias;
4. every ``unit_pairs`` pair renormalised onto the unit circle with the same
   ``UNIT_EPS`` floor;
5. ``output_bounds`` clipping last.

Inputs and outputs are float32 (what edge runtimes feed); the arithmetic runs
in float64 by default so that the file matches the float64 Python reference
to the last float32 bit whatever the coefficient magnitudes. Pass
``dtype="float32"`` for an all-float32 graph.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.onnxfile import BATCH_DIM, OPSET, encode_bounds, finish_model, model_from_proto, save_onnx, sindyrl_version
from export.parity import DEFAULT_TOL, check_parity, require_parity
from sindyrl.sparse import UNIT_EPS, SparseModel, term_name

__all__ = ["sparse_model_to_onnx", "export_sparse_model", "ExportResult", "default_io_names"]

_DTYPES = {"float32": (np.float32, TensorProto.FLOAT), "float64": (np.float64, TensorProto.DOUBLE)}


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes
    ----------
    path : Path
        The ``.onnx`` file.
    n_bytes : int
        Its size.
    parity_max_abs : float or None
        Max abs difference against the Python reference (None when not checked).
    source_hash : str
        sha256 of the source checkpoint, or ``SparseModel.content_hash()``.
    """

    path: Path
    n_bytes: int
    parity_max_abs: float | None
    source_hash: str


def default_io_names(model: SparseModel) -> tuple[str, str]:
    """Graph input/output names: a sparse policy uses the neural policy's ``obs``/``action``."""
    if model.name == "policy":
        return "obs", "action"
    return "input", "output"


class _Graph:
    """Small builder: unique names, constants as initializers."""

    def __init__(self, dtype: str):
        self.np_dtype, self.onnx_dtype = _DTYPES[dtype]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value, hint: str, dtype=None) -> str:
        n = self.name(hint)
        arr = np.asarray(value, dtype=self.np_dtype if dtype is None else dtype)
        self.inits.append(numpy_helper.from_array(arr, n))
        return n

    def op(self, op_type: str, inputs: list[str], hint: str, doc: str = "", n_out: int = 1, **attrs) -> list[str]:
        outs = [self.name(hint) for _ in range(n_out)]
        node = helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs)
        if doc:
            node.doc_string = doc
        self.nodes.append(node)
        return outs

    def op1(self, op_type: str, inputs: list[str], hint: str, doc: str = "", **attrs) -> str:
        return self.op(op_type, inputs, hint, doc, **attrs)[0]


def sparse_model_to_onnx(
    model: SparseModel,
    input_name: str | None = None,
    output_name: str | None = None,
    dtype: str = "float64",
) -> onnx.ModelProto:
    """Build the ONNX graph of a SparseModel (checked with ``onnx.checker``).

    Parameters
    ----------
    model : SparseModel
        The model to export (its aggregate ``coef``).
    input_name, output_name : str, optional
        Graph I/O names; default ``obs``/``action`` for a model named
        ``policy``, ``input``/``output`` otherwise.
    dtype : {"float64", "float32"}, default "float64"
        Arithmetic precision inside the graph; I/O is float32 either way.

    Returns
    -------
    onnx.ModelProto
        Input ``[batch, n_inputs]`` float32, output ``[batch, n_outputs]`` float32.
    """
    if not isinstance(model, SparseModel):
        raise TypeError(f"sparse_model_to_onnx: expected a SparseModel, got {type(model).__name__}")
    if dtype not in _DTYPES:
        raise ValueError(f"sparse_model_to_onnx: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    d_in, d_out = default_io_names(model)
    input_name, output_name = input_name or d_in, output_name or d_out
    if input_name == output_name:
        raise ValueError(f"sparse_model_to_onnx: input and output names must differ, got {input_name!r}")
    g = _Graph(dtype)
    n_out = model.n_outputs

    x = input_name
    if dtype == "float64":
        x = g.op1("Cast", [input_name], "x64", to=TensorProto.DOUBLE)

    # 1-2. factors (cached: a factor shared by several terms is computed once) and terms
    columns: dict[int, str] = {}
    factors: dict[tuple, str] = {}

    def column(i: int) -> str:
        if i not in columns:
            idx = g.const(np.array([i], dtype=np.int64), f"idx_{i}", dtype=np.int64)
            columns[i] = g.op1("Gather", [x, idx], f"col_{i}", doc=model.inputs[i], axis=1)
        return columns[i]

    def factor(f: tuple) -> str:
        if f not in factors:
            i, kind, p = f
            col = column(i)
            doc = term_name((f,), model.inputs)
            if kind == "pow":
                e = int(p)
                factors[f] = col if e == 1 else g.op1("Pow", [col, g.const(float(e), "exp")], f"pow{e}_{i}", doc=doc)
            else:
                arg = col if p == 1 else g.op1("Mul", [col, g.const(p, "freq")], f"freq_{i}")
                factors[f] = g.op1("Sin" if kind == "sin" else "Cos", [arg], f"{kind}_{i}", doc=doc)
        return factors[f]

    C = model.coef
    active = model.active_terms()
    names = model.term_names()
    term_cols: list[str] = []
    term_idx: list[int] = []
    bias = np.zeros(n_out)
    has_bias = False
    for k in active:
        term = model.terms[k]
        if not term:
            bias = bias + C[:, k]
            has_bias = True
            continue
        v = factor(term[0])
        for f in term[1:]:
            v = g.op1("Mul", [v, factor(f)], f"term_{k}", doc=names[k])
        term_cols.append(v)
        term_idx.append(int(k))

    # 3. linear combination
    if term_cols:
        theta = term_cols[0] if len(term_cols) == 1 else g.op1("Concat", term_cols, "theta", axis=1)
        W = g.const(C[:, term_idx].T, "coef")
        y = g.op1("MatMul", [theta, W], "lin")
        if has_bias:
            y = g.op1("Add", [y, g.const(bias, "bias")], "lin_bias")
    else:
        # no input-dependent term: broadcast the constant to the batch
        batch = g.op1("Shape", [input_name], "batch", start=0, end=1)
        shape = g.op1("Concat", [batch, g.const(np.array([n_out], dtype=np.int64), "nout", dtype=np.int64)],
                      "yshape", axis=0)
        y = g.op1("Expand", [g.const(bias.reshape(1, n_out), "bias"), shape], "const_y")

    # 4. unit-circle renormalisation, pair by pair in the model's order
    if model.unit_pairs:
        cols = g.op("Split", [y], "y_col", n_out=n_out, axis=1, num_outputs=n_out) if n_out > 1 else [y]
        eps = g.const(UNIT_EPS, "unit_eps")
        for c, s in model.unit_pairs:
            sq = g.op1("Add", [g.op1("Mul", [cols[c], cols[c]], "c2"), g.op1("Mul", [cols[s], cols[s]], "s2")], "r2")
            r = g.op1("Max", [g.op1("Sqrt", [sq], "r"), eps], "r_floor")
            doc = f"unit pair ({model.outputs[c]}, {model.outputs[s]})"
            cols[c] = g.op1("Div", [cols[c], r], "c_unit", doc=doc)
            cols[s] = g.op1("Div", [cols[s], r], "s_unit", doc=doc)
        y = g.op1("Concat", cols, "y_unit", axis=1)

    # 5. output bounds, as np.clip does: min(max(y, low), high)
    if model.output_bounds is not None:
        lo, hi = model.output_bounds
        y = g.op1("Max", [y, g.const(lo, "out_low")], "y_low")
        y = g.op1("Min", [y, g.const(hi, "out_high")], "y_clip")

    if dtype == "float64":
        g.op1("Cast", [y], "y32", to=TensorProto.FLOAT)
        g.nodes[-1].output[0] = output_name
    else:
        g.nodes.append(helper.make_node("Identity", [y], [output_name], name=g.name("Identity")))

    graph = helper.make_graph(
        g.nodes,
        f"sindyrl_{model.name}",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [BATCH_DIM, model.n_inputs])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [BATCH_DIM, n_out])],
        initializer=g.inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    meta = {
        "kind": "sparse_model",
        "model_name": model.name,
        "sindyrl_version": sindyrl_version(),
        "source_hash": model.content_hash(),
        "input_names": json.dumps(model.inputs),
        "output_names": json.dumps(model.outputs),
        "unit_pairs": json.dumps([list(p) for p in model.unit_pairs]),
        "compute_dtype": dtype,
        "nnz": str(model.nnz),
        "equations": json.dumps(model.equations(precision=6)),
    }
    if model.input_bounds is not None:
        meta["input_bounds"] = encode_bounds(*model.input_bounds)
    if model.output_bounds is not None:
        meta["output_bounds"] = encode_bounds(*model.output_bounds)
    doc = f"sindyrl SparseModel '{model.name}' ({model.nnz} nonzero coefficients): " + "; ".join(model.equations())
    return finish_model(proto, meta, doc)


def export_sparse_model(
    model: SparseModel,
    path: str | os.PathLike,
    *,
    low: np.ndarray | list[float] | None = None,
    high: np.ndarray | list[float] | None = None,
    n_states: int = 10_000,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    dtype: str = "float64",
    input_name: str | None = None,
    output_name: str | None = None,
) -> ExportResult:
    """Export a SparseModel to ONNX after checking parity with ``SparseModel.evaluate``.

    Parameters
    ----------
    model : SparseModel
        Sparse policy, dynamics or reward model.
    path : path-like
        The ``.onnx`` file to write (atomically, only if parity holds).
    low, high : array, optional
        Box of the parity states; default the model's ``input_bounds``.
        Set ``n_states=0`` to skip the check.
    n_states : int, default 10000
        Number of parity states.
    seed : int, default 0
        Seed of the parity states.
    tol : float, default 1e-5
        Largest accepted max-abs difference.
    dtype : {"float64", "float32"}, default "float64"
        Arithmetic precision inside the graph.
    input_name, output_name : str, optional
        Graph I/O names (see :func:`sparse_model_to_onnx`).

    Returns
    -------
    ExportResult

    Raises
    ------
    ParityError
        If the graph differs from ``SparseModel.evaluate`` by more than ``tol``.
    ValueError
        If parity is asked for but there is no box to sample from.
    """
    proto = sparse_model_to_onnx(model, input_name=input_name, output_name=output_name, dtype=dtype)
    err = None
    if n_states:
        if (low is None or high is None) and model.input_bounds is None:
            raise ValueError(
                f"export_sparse_model({model.name}): the model has no input_bounds; pass low and high "
                "for the parity states (or n_states=0 to skip the check)"
            )
        err = check_parity(model_from_proto(proto), model, low=low, high=high, n=n_states, seed=seed)
        require_parity(err, tol, f"SparseModel '{model.name}' -> {path}")
    out = save_onnx(proto, path)
    return ExportResult(path=Path(out), n_bytes=out.stat().st_size, parity_max_abs=err, source_hash=model.content_hash())
