"""The backends of a SparseModel (numpy, CasADi, ONNX, C in float/double and in fixed point) agree on random
inputs, for every term kind; the fixed-point C within the error bound it computed and wrote into its header."""

import ctypes

import numpy as np
import pytest

from sindyrl.sparse import SparseModel


def random_model(seed: int) -> SparseModel:
    rng = np.random.default_rng(seed)
    terms = [(), ((0, "pow", 1),), ((1, "pow", 2),), ((0, "pow", 1), (2, "pow", 2)), ((1, "sin", 1.0),),
             ((2, "cos", 2.0),), ((0, "sin", 0.5), (3, "pow", 1)), ((3, "pow", 3),), ((1, "cos", 1.0), (2, "pow", 1)),
             ((1, "sin", 2.0),), ((1, "cos", 3.0), (0, "pow", 1))]  # harmonics of s: built from sin(s), cos(s) in C
    coef = rng.normal(size=(3, len(terms))) * (rng.random((3, len(terms))) < 0.7)
    return SparseModel(["c", "s", "w", "u"], ["c", "s", "w"], terms, coef, unit_pairs=[(0, 1)],
                       output_bounds=(np.array([-1.0, -1.0, -3.0]), np.array([1.0, 1.0, 2.5])), name="agree")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_casadi_onnx_c_agree(seed, tmp_path):
    from controllers import casadi_function
    from export.onnxfile import model_from_proto
    from export.sparse_model import sparse_model_to_onnx
    from firmware_bridge.build import build_shared_library
    from firmware_bridge.codegen import generate_sparse_c

    model = random_model(seed)
    X = np.random.default_rng(100 + seed).uniform(-2, 2, size=(500, 4))
    ref = model.evaluate(X)
    # CasADi (double precision, symbolic terms)
    f = casadi_function(model)
    cas = np.array([np.asarray(f(x)).ravel() for x in X])
    np.testing.assert_allclose(cas, ref, rtol=0, atol=1e-10)
    # ONNX through onnxruntime (float32 I/O)
    onx = np.asarray(model_from_proto(sparse_model_to_onnx(model))(X.astype(np.float32)))
    np.testing.assert_allclose(onx, ref, rtol=0, atol=1e-5)
    # generated C: the board interface is float; arithmetic in double (exact up to float I/O) or float
    X32 = X.astype(np.float32)
    ref32 = model.evaluate(X32.astype(np.float64))
    for real, tol in (("double", 1e-6), ("float", 2e-5)):
        gen = generate_sparse_c(model, f"agree_{real}", tmp_path / real, real=real)
        lib = ctypes.CDLL(str(build_shared_library(gen, tmp_path / real)))
        fn = getattr(lib, gen.symbol)
        ptr = ctypes.POINTER(ctypes.c_float)
        fn.argtypes = [ptr, ctypes.c_size_t, ptr, ctypes.c_size_t]
        fn.restype = ctypes.c_int
        out = np.zeros(3, dtype=np.float32)
        res = []
        for x in X32:
            xin = np.ascontiguousarray(x)
            assert fn(xin.ctypes.data_as(ptr), 4, out.ctypes.data_as(ptr), 3) == 0
            res.append(out.astype(np.float64))
        np.testing.assert_allclose(np.array(res), ref32, rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_point_c_within_its_error_bound(seed, tmp_path):
    from firmware_bridge.build import build_shared_library
    from firmware_bridge.codegen import generate_sparse_c

    m = random_model(seed)
    # fixed point is for policies: no unit pairs (no finite error bound near the origin), input bounds required
    model = SparseModel(m.inputs, m.outputs, m.terms, m.coef, output_bounds=m.output_bounds,
                        input_bounds=(np.full(4, -2.0), np.full(4, 2.0)), name="agree")
    X32 = np.random.default_rng(100 + seed).uniform(-2, 2, size=(2000, 4)).astype(np.float32)
    X32[:16] = np.array(np.meshgrid(*[[-2.0, 2.0]] * 4)).reshape(4, -1).T  # the corners of the box
    ref = model.evaluate(X32.astype(np.float64))
    gen = generate_sparse_c(model, "agree_fixed", tmp_path, real="fixed")
    assert gen.error_bound.shape == (3,) and "SINDYRL_AGREE_FIXED_ERROR_BOUND" in gen.header.read_text()
    lib = ctypes.CDLL(str(build_shared_library(gen, tmp_path)))
    fn = getattr(lib, gen.symbol)
    ptr = ctypes.POINTER(ctypes.c_float)
    fn.argtypes = [ptr, ctypes.c_size_t, ptr, ctypes.c_size_t]
    fn.restype = ctypes.c_int
    out = np.zeros(3, dtype=np.float32)
    res = []
    for x in X32:
        xin = np.ascontiguousarray(x)
        assert fn(xin.ctypes.data_as(ptr), 4, out.ctypes.data_as(ptr), 3) == 0
        res.append(out.astype(np.float64))
    err = np.max(np.abs(np.array(res) - ref), axis=0)
    assert np.all(err <= gen.error_bound), (err, gen.error_bound)
    assert np.all(gen.error_bound < 1e-2)  # and the bound says something (outputs span several units)
