"""firmware_bridge: policies as plain C, a serial protocol, and hardware-in-the-loop runs.

Public API (imported lazily, so ``python -m firmware_bridge.serve`` on an edge
board needs only onnxruntime, numpy, pyserial and cobs)::

    from firmware_bridge import generate_c, build_firmware, BoardLink, run_hil
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "generate_c", "generate_sparse_c", "generate_neural_c", "neural_spec_from_sb3", "NeuralSpec", "GeneratedC",
    "build_firmware", "FirmwareBuild", "BoardLink", "BoardLinkError", "BoardTimeout", "BoardErrorReply",
    "HostBoard", "QemuBoard", "OnnxBoard", "run_hil", "hil_episodes",
    "generate_policy_set_c", "PolicySetConfig", "BoardEXP3IX", "run_policy_set_hil",
    "generate_fixed_c", "write_c_library", "CLibrary", "QEMU_BOARDS",
]

_WHERE = {
    "generate_c": "codegen", "generate_sparse_c": "codegen", "generate_neural_c": "codegen",
    "neural_spec_from_sb3": "codegen", "NeuralSpec": "codegen", "GeneratedC": "codegen",
    "build_firmware": "build", "FirmwareBuild": "build",
    "BoardLink": "link", "BoardLinkError": "link", "BoardTimeout": "link", "BoardErrorReply": "link",
    "HostBoard": "boards", "QemuBoard": "boards", "OnnxBoard": "boards",
    "run_hil": "hil", "hil_episodes": "hil",
    "generate_policy_set_c": "policy_set", "PolicySetConfig": "policy_set", "BoardEXP3IX": "policy_set",
    "run_policy_set_hil": "policy_set",
    "generate_fixed_c": "fixed_point", "write_c_library": "library", "CLibrary": "library", "QEMU_BOARDS": "boards",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
