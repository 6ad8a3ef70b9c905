"""sindyrl: sparse, human-readable models (SINDy) of dynamics, reward and policy, Dyna-style RL in the
surrogate they define, and the path from there to a microcontroller.

Top-level names are imported lazily so that ``import sindyrl`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_NAMES = {
    "SparseModel": "sindyrl.sparse",
    "SINDyDynamics": "sindyrl.dynamics",
    "SINDyReward": "sindyrl.reward",
    "KnownReward": "sindyrl.reward",
    "SurrogateEnv": "sindyrl.surrogate",
    "SurrogateVecEnv": "sindyrl.surrogate",
    "Dyna": "sindyrl.dyna",
    "SparsePolicy": "sindyrl.policy",
    "load_config": "sindyrl.config",
    "Config": "sindyrl.config",
    "Run": "sindyrl.runs",
    "TransitionBuffer": "sindyrl.data",
    "collect": "sindyrl.data",
    "make_env": "sindyrl.envs",
    "evaluate_policy": "sindyrl.evaluation",
}

__all__ = sorted(_NAMES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'sindyrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
