"""int8 dynamic quantisation of exported neural policies (onnxruntime.quantization).

Dynamic quantisation stores the weights of every ``Gemm``/``MatMul`` as int8
and quantises activations on the fly: the file shrinks about 4x, the actions
move a little. The size and the action change are measured here; the change
in real-env return is measured by the ``export`` stage (it needs the env).
Sparse models are not quantised: they have a handful of coefficients.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from export.onnxfile import load_onnx, save_onnx, set_metadata

__all__ = ["quantize", "QuantizeResult"]


@dataclass
class QuantizeResult:
    """Sizes of the float and int8 files.

    Attributes
    ----------
    path : Path
        The int8 ``.onnx`` file.
    n_bytes : int
        Its size.
    float_bytes : int
        Size of the float file it came from.
    """

    path: Path
    n_bytes: int
    float_bytes: int

    @property
    def ratio(self) -> float:
        """int8 size / float size."""
        return self.n_bytes / self.float_bytes


class _QuietQuantizer(logging.Filter):
    # onnxruntime.quantization logs on the root logger: per-tensor INFO notes, and advice to "pre-process"
    # that matters for static quantisation only
    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" not in record.pathname.replace("\\", "/"):
            return True
        return record.levelno >= logging.WARNING and "pre-processing before quantization" not in record.getMessage()


def quantize(
    src: str | os.PathLike,
    dst: str | os.PathLike | None = None,
    per_channel: bool = False,
) -> QuantizeResult:
    """int8 dynamic quantisation of an exported neural policy.

    Parameters
    ----------
    src : path-like
        A float ``.onnx`` written by :func:`export.export_policy`.
    dst : path-like, optional
        Where to write; default ``src`` with ``.int8.onnx``.
    per_channel : bool, default False
        One scale per output channel of each weight matrix.

    Returns
    -------
    QuantizeResult

    Raises
    ------
    ValueError
        If ``src`` is not a valid ONNX file, is a sparse model (nothing to
        quantise), or has no weight matrix that could be quantised.
    """
    src = Path(src)
    model = load_onnx(src)
    if model.metadata.get("kind") == "sparse_model":
        raise ValueError(f"{src}: sparse models are not quantised (a few coefficients; int8 would only lose accuracy)")
    dst = Path(dst) if dst is not None else src.with_name(src.name.removesuffix(".onnx") + ".int8.onnx")
    dst.parent.mkdir(parents=True, exist_ok=True)
    advice = _QuietQuantizer()
    logging.getLogger().addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
            out = Path(tmp) / "q.onnx"
            quantize_dynamic(src, out, weight_type=QuantType.QInt8, per_channel=per_channel)
            q = onnx.load(out)
    finally:
        logging.getLogger().removeFilter(advice)
    ops = {n.op_type for n in q.graph.node}
    if not ops & {"MatMulInteger", "DynamicQuantizeMatMul", "QGemm"}:
        raise ValueError(f"{src}: no Gemm/MatMul weights were quantised; nothing to gain from int8")
    onnx.checker.check_model(q, full_check=True)
    set_metadata(q, {**model.metadata, "quantized": "int8 dynamic (onnxruntime.quantization)", "float_model": src.name})
    save_onnx(q, dst)
    return QuantizeResult(path=dst, n_bytes=dst.stat().st_size, float_bytes=src.stat().st_size)
