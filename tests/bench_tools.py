"""Load a ``benchmarks/`` script as a module, for the tests that run benchmarks on tiny budgets."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str, module_name: str | None = None):
    """``benchmarks/<name>.py`` as a module, registered in ``sys.modules`` (dataclasses look their module up
    there)."""
    spec = importlib.util.spec_from_file_location(module_name or name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
