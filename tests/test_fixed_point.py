"""Fixed-point C (firmware_bridge.fixed_point) against SparseModel.evaluate, on the host through ctypes.

Within the input bounds every output stays within the error bound the generator wrote into the header;
outside them the inputs are clamped; the sine table's Python model is what the bound was measured on.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from board_tools import need_tools

from firmware_bridge.build import build_shared_library
from firmware_bridge.codegen import generate_sparse_c
from firmware_bridge.fixed_point import SIN_TABLE_ERROR, generate_fixed_c, sin_q15
from sindyrl.sparse import SparseModel


@pytest.fixture(autouse=True)
def _host_compiler():
    need_tools("host")


def c_eval(gen, tmp_path):
    lib = ctypes.CDLL(str(build_shared_library(gen, tmp_path)))
    fn = getattr(lib, gen.symbol)
    ptr = ctypes.POINTER(ctypes.c_float)
    fn.argtypes = [ptr, ctypes.c_size_t, ptr, ctypes.c_size_t]
    fn.restype = ctypes.c_int

    def call(X):
        X = np.ascontiguousarray(np.atleast_2d(X), dtype=np.float32)
        out = np.zeros(gen.n_out, np.float32)
        res, rcs = [], []
        for x in X:
            rcs.append(fn(x.ctypes.data_as(ptr), gen.n_in, out.ctypes.data_as(ptr), gen.n_out))
            res.append(out.astype(np.float64).copy())
        return np.array(res), rcs

    return call


def random_policy(seed: int) -> SparseModel:
    """Powers up to 5, trig factors at several frequencies, bounds of very different sizes, a clipped output."""
    rng = np.random.default_rng(seed)
    terms = [(), ((0, "pow", 1),), ((1, "pow", 2),), ((2, "pow", 5),), ((0, "pow", 1), (2, "pow", 2)),
             ((1, "sin", 1.0),), ((1, "cos", 3.0),), ((2, "sin", 0.25), (0, "pow", 1)), ((1, "cos", 1.0), (2, "pow", 1)),
             ((0, "pow", 1), (1, "pow", 1), (2, "pow", 1))]
    coef = rng.normal(size=(2, len(terms))) * (rng.random((2, len(terms))) < 0.8)
    lo = np.array([-0.05, -np.pi, -8.0]) * rng.uniform(0.5, 2.0, 3)
    hi = np.array([0.1, np.pi, 6.0]) * rng.uniform(0.5, 2.0, 3)
    return SparseModel(["x", "th", "w"], ["u", "v"], terms, coef, input_bounds=(lo, hi),
                       output_bounds=(np.array([-2.0, -np.inf]), np.array([2.0, np.inf])), name="policy")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fixed_point_within_its_error_bound(seed, tmp_path):
    model = random_policy(seed)
    gen = generate_fixed_c(model, "pol", tmp_path)
    lo, hi = model.input_bounds
    X = np.random.default_rng(seed + 10).uniform(lo, hi, size=(3000, 3)).astype(np.float32)
    X = np.clip(X, lo.astype(np.float32), hi.astype(np.float32))
    got, rcs = c_eval(gen, tmp_path)(X)
    assert set(rcs) == {0}
    err = np.max(np.abs(got - model.evaluate(X.astype(np.float64))), axis=0)
    assert np.all(err <= gen.error_bound), (err, gen.error_bound)
    assert np.all(err > 0)  # it is fixed point: the comparison is not trivially exact


def test_fixed_point_pendulum_policy_bound_is_small(tmp_path):
    model = SparseModel(
        ["cos_th", "sin_th", "th_dot"], ["u"],
        [((1, "pow", 1),), ((2, "pow", 1),), ((0, "pow", 1), (2, "pow", 1)), ((2, "pow", 3),), ((0, "pow", 1), (1, "pow", 1))],
        coef=np.array([[-6.0, -1.5, 0.8, 0.05, -1.0]]), output_bounds=(np.array([-2.0]), np.array([2.0])),
        input_bounds=(np.array([-1.0, -1.0, -8.0]), np.array([1.0, 1.0, 8.0])), name="policy",
    )
    gen = generate_sparse_c(model, "policy", tmp_path, real="fixed")
    header = gen.header.read_text()
    assert "#define SINDYRL_POLICY_ERROR_BOUND" in header and "Q11" in header and "#define SINDYRL_POLICY_FIXED_POINT 1" in header
    assert gen.error_bound[0] < 1e-2  # 0.25 % of the action range [-2, 2]
    X = np.random.default_rng(0).uniform([-1, -1, -8], [1, 1, 8], size=(2000, 3))
    got, _ = c_eval(gen, tmp_path)(X)
    assert np.max(np.abs(got - model.evaluate(X.astype(np.float32).astype(np.float64)))) <= gen.error_bound[0]
    source = gen.source.read_text()
    for banned in ("double", "sinf", "malloc", "stdio", "math.h"):
        assert banned not in source  # integer arithmetic (test_boards checks the M0 object's symbols)


def test_fixed_point_clamps_outside_the_bounds_and_rejects_nonfinite(tmp_path):
    model = random_policy(0)
    gen = generate_fixed_c(model, "pol", tmp_path)
    call = c_eval(gen, tmp_path)
    lo, hi = model.input_bounds
    far = np.array([[1e6, -1e30, 3.0e38], [-5.0, 40.0, -1e-30]])
    got, rcs = call(far)
    assert rcs == [0, 0]
    np.testing.assert_allclose(got, call(np.clip(far, lo, hi))[0], rtol=0, atol=0)
    for bad in (np.nan, np.inf, -np.inf):
        assert call(np.array([0.0, bad, 0.0]))[1] == [-2]


def test_fixed_point_constant_and_empty_outputs(tmp_path):
    b = (np.array([-1.0]), np.array([1.0]))
    for coef in (np.zeros((1, 1)), np.array([[0.75]])):
        model = SparseModel(["a"], ["u"], [()], coef, input_bounds=b, name="c")
        got, rcs = c_eval(generate_fixed_c(model, "c", tmp_path / str(coef[0, 0])), tmp_path / str(coef[0, 0]))(
            np.array([[0.3]]))
        assert rcs == [0] and got[0, 0] == coef[0, 0]


def test_sine_table_error_is_measured_on_every_phase():
    p = np.arange(65536)
    err = np.abs(sin_q15(p) / 32768 - np.sin(2 * np.pi * p / 65536))
    assert err.max() == SIN_TABLE_ERROR and SIN_TABLE_ERROR < 5e-5
    cos = sin_q15(p + 16384)
    assert np.max(np.abs(cos / 32768 - np.cos(2 * np.pi * p / 65536))) <= SIN_TABLE_ERROR


def test_fixed_point_rejects_what_it_cannot_bound(tmp_path):
    base = random_policy(0)
    with pytest.raises(ValueError, match="input_bounds"):
        generate_fixed_c(base.with_coef(base.coef, input_bounds=None), "p", tmp_path)
    pair = SparseModel(["a"], ["c", "s"], [((0, "pow", 1),)], np.array([[1.0], [1.0]]), unit_pairs=[(0, 1)],
                       input_bounds=(np.array([-1.0]), np.array([1.0])))
    with pytest.raises(ValueError, match="unit_pairs"):
        generate_fixed_c(pair, "p", tmp_path)
    with pytest.raises(ValueError, match="real must be"):
        generate_sparse_c(base, "p", tmp_path, real="int8")
