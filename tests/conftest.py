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


# ------------------------------------------------------------------ seeds
# A test that trains, fits or samples takes the ``seed`` fixture and must pass for any seed, with margin:
# another CPU rounds differently, and an RL run is chaotic in those bits, so one seed that passes here is
# a coin toss on the user's machine.  ``pytest --seeds 0,1,2,3,4`` reruns every such test for each seed.
def pytest_addoption(parser):
    parser.addoption("--seeds", default="0", metavar="S1,S2,...",
                     help="seeds for the seeded learning tests (those taking the `seed` fixture), e.g. 0,1,2,3,4 "
                          "or 0-4; default: 0")


def _parse_seeds(raw: str) -> list[int]:
    seeds: list[int] = []
    for part in str(raw).split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise pytest.UsageError(f"--seeds {raw!r}: expected integers like 0,1,2 or 0-4") from None
    if not seeds:
        raise pytest.UsageError(f"--seeds {raw!r}: no seed given")
    return seeds


def _parametrizes_seed_itself(metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if "seed" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return True
    return False


def pytest_generate_tests(metafunc):
    # a test with its own seed list (cheap checks on random inputs) keeps it
    if "seed" in metafunc.fixturenames and not _parametrizes_seed_itself(metafunc):
        seeds = _parse_seeds(metafunc.config.getoption("--seeds"))
        # session scope: fixtures of any scope (a model fitted once per seed) may depend on the seed
        metafunc.parametrize("seed", seeds, ids=[f"seed{s}" for s in seeds], scope="session")
