"""Writing, reading and running the ONNX files that ``export`` produces.

Every exported graph shares one opset, one batch-dimension name and one set of
metadata keys, so a consumer (an edge runtime, the benchmark, the firmware
bridge's checks) can read any of them the same way. :func:`load_onnx` is the
one entry point for reading a file back: it turns a corrupted or truncated
file into a single clear ``ValueError`` instead of a protobuf or onnxruntime
stack trace.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from sindyrl.atomic import atomic_write

__all__ = [
    "OPSET",
    "BATCH_DIM",
    "OnnxModel",
    "load_onnx",
    "save_onnx",
    "set_metadata",
    "graph_sha256",
    "sindyrl_version",
    "file_sha256",
    "encode_bounds",
    "decode_bounds",
]

#: The one opset of every graph we write. 18 is the lowest the torch dynamo
#: exporter emits natively (asking it for 17 triggers a lossy down-conversion);
#: onnxruntime >= 1.14 runs it.
OPSET = 18

#: Name of the dynamic batch dimension of every input and output.
BATCH_DIM = "batch"


def sindyrl_version() -> str:
    """Installed sindyrl version (``"unknown"`` when running from an uninstalled tree)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("sindyrl")
    except PackageNotFoundError:  # pragma: no cover - only outside an install
        return "unknown"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _num(v: float) -> float | str:
    # JSON has no inf: keep the sign readable instead of writing the non-standard "Infinity"
    v = float(v)
    if np.isfinite(v):
        return v
    return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")


def encode_bounds(low: Sequence[float] | np.ndarray, high: Sequence[float] | np.ndarray) -> str:
    """Bounds as a JSON metadata value ``{"low": [...], "high": [...]}`` (non-finite as strings)."""
    return json.dumps({"low": [_num(v) for v in np.ravel(low)], "high": [_num(v) for v in np.ravel(high)]})


def decode_bounds(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_bounds`."""
    d = json.loads(text)
    return np.array([float(v) for v in d["low"]]), np.array([float(v) for v in d["high"]])


def finish_model(model: onnx.ModelProto, metadata: Mapping[str, str], doc: str) -> onnx.ModelProto:
    """Stamp producer, IR version and metadata on a model, then run ``onnx.checker`` on it."""
    model.producer_name = "sindyrl"
    model.producer_version = sindyrl_version()
    model.doc_string = doc
    # the lowest IR version that carries our opset, so older runtimes can read the file
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    try:
        model.ir_version = onnx.helper.find_min_ir_version_for(default)
    except Exception:  # an opset this onnx does not know: keep the exporter's choice
        pass
    onnx.checker.check_model(model, full_check=True)
    set_metadata(model, metadata)
    return model


def graph_sha256(model: onnx.ModelProto) -> str:
    """sha256 of the serialised graph (nodes and weights, not the metadata)."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Replace the metadata props, adding ``graph_sha256`` so that :func:`load_onnx` detects corrupted weights."""
    del model.metadata_props[:]
    items = {str(k): str(v) for k, v in metadata.items() if k != "graph_sha256"}
    items["graph_sha256"] = graph_sha256(model)
    for k, v in items.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically (temp file, then rename); returns the path."""
    path = Path(path)
    atomic_write(path, model.SerializeToString())
    return path


@dataclass
class OnnxModel:
    """A checked ONNX model with an onnxruntime session, callable on numpy arrays.

    Attributes
    ----------
    path : Path or None
        Where it was read from.
    proto : onnx.ModelProto
        The parsed model.
    session : onnxruntime.InferenceSession
        A CPU session.
    metadata : dict of str to str
        The model's ``metadata_props``.
    """

    path: Path | None
    proto: onnx.ModelProto
    session: ort.InferenceSession
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def output_name(self) -> str:
        return self.session.get_outputs()[0].name

    @property
    def input_names(self) -> list[str]:
        """Column names of the input (observation names for a policy), from the metadata."""
        return json.loads(self.metadata.get("input_names", "[]"))

    @property
    def output_names(self) -> list[str]:
        """Column names of the output (action names for a policy), from the metadata."""
        return json.loads(self.metadata.get("output_names", "[]"))

    @property
    def n_bytes(self) -> int:
        return self.proto.ByteSize()

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Run on a batch (N, n_in) -> (N, n_out); a 1-D input gives a 1-D output."""
        X = np.asarray(X, dtype=np.float32)
        single = X.ndim == 1
        if single:
            X = X[None, :]
        shape = self.session.get_inputs()[0].shape
        if X.ndim != 2 or (isinstance(shape[1], int) and X.shape[1] != shape[1]):
            raise ValueError(
                f"{self.path or 'ONNX model'}: input has shape {np.shape(X)}, expected (N, {shape[1]})"
            )
        Y = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(X)})[0]
        return Y[0] if single else Y


def make_session(model_bytes: bytes, threads: int | None = None) -> ort.InferenceSession:
    """A CPU onnxruntime session (``threads`` intra-op threads, default: onnxruntime's choice)."""
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> OnnxModel:
    """Read, check and open an ONNX file.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file.
    threads : int, optional
        onnxruntime intra-op threads (default: onnxruntime's choice).

    Returns
    -------
    OnnxModel

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is empty, corrupted or truncated (it does not parse, fails
        ``onnx.checker``, or onnxruntime refuses it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path}: the ONNX file is empty")
    hint = "the file is corrupted or truncated; export it again"
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf raises DecodeError, or RuntimeWarning-like errors on odd bytes
        raise ValueError(f"{path}: not a valid ONNX model ({type(e).__name__}: {e}); {hint}") from None
    if not proto.graph.node or not proto.graph.output:
        raise ValueError(f"{path}: the ONNX graph is empty or has no output; {hint}")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: ONNX model fails onnx.checker ({first}); {hint}") from None
    try:
        session = make_session(data, threads)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: onnxruntime cannot load the model ({first}); {hint}") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    # a flipped byte inside a weight still parses and passes the checker: the checksum catches it
    if "graph_sha256" in meta and meta["graph_sha256"] != graph_sha256(proto):
        raise ValueError(f"{path}: graph checksum does not match its metadata; {hint}")
    return OnnxModel(path=path, proto=proto, session=session, metadata=meta)


def model_from_proto(proto: onnx.ModelProto, threads: int | None = None) -> OnnxModel:
    """An :class:`OnnxModel` for an in-memory model (no file)."""
    session = make_session(proto.SerializeToString(), threads)
    return OnnxModel(path=None, proto=proto, session=session, metadata={p.key: p.value for p in proto.metadata_props})
