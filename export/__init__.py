"""ONNX export of neural and sparse policies and models, verified with onnxruntime.

    from export import export_policy, export_sparse_model, check_parity, load_onnx, quantize

    export_policy(agent, "policy.onnx", vecnormalize=vn, obs_names=[...], action_names=[...])
    export_sparse_model(run.load_model("dynamics"), "dynamics.onnx")
    act = load_onnx("policy.onnx")        # act(obs) -> action, as agent.predict(obs, deterministic=True)
    quantize("policy.onnx")               # -> policy.int8.onnx

Every export checks parity against the Python reference on 10,000 states and
refuses to write a file that differs by more than 1e-5.
"""

from typing import TYPE_CHECKING, Any

from export.onnxfile import OPSET, OnnxModel, load_onnx
from export.parity import DEFAULT_TOL, ParityError, check_parity, sample_states
from export.quantize import QuantizeResult, quantize
from export.sparse_model import ExportResult, export_sparse_model, sparse_model_to_onnx

if TYPE_CHECKING:
    from export.neural import PolicyModule, export_policy, policy_family, policy_to_onnx

_NEURAL = ("PolicyModule", "export_policy", "policy_family", "policy_to_onnx")


def __getattr__(name: str) -> Any:
    # torch is imported only when a neural policy is exported: the CLI and sparse exports start fast
    if name in _NEURAL:
        import importlib

        return getattr(importlib.import_module("export.neural"), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")

__all__ = [
    "OPSET",
    "DEFAULT_TOL",
    "ExportResult",
    "OnnxModel",
    "ParityError",
    "PolicyModule",
    "QuantizeResult",
    "check_parity",
    "export_policy",
    "export_sparse_model",
    "load_onnx",
    "policy_family",
    "policy_to_onnx",
    "quantize",
    "sample_states",
    "sparse_model_to_onnx",
]
