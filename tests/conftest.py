"""Shared test settings: one BLAS/torch thread (the machine is small and shared), a headless matplotlib."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _numpy_error_state_is_not_leaked():
    """A library that changes numpy's global error state (emlearn's import does) breaks unrelated code later."""
    before = np.geterr()
    yield
    after = np.geterr()
    np.seterr(**before)
    assert after == before, f"numpy error state leaked: {before} -> {after}"
