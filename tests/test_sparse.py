"""SparseModel: evaluation against pysindy, JSON round trip, validation."""

import json
import pickle
from dataclasses import FrozenInstanceError

import numpy as np
import pysindy as ps
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sindyrl.config import LibraryConfig
from sindyrl.regression import build_library
from sindyrl.sparse import SparseModel


def _fitted(lib_cfg: LibraryConfig, seed: int, n_x: int = 2, n_u: int = 1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(80, n_x))
    U = rng.normal(size=(80, n_u))
    Y = rng.normal(size=(80, n_x))
    m = ps.DiscreteSINDy(optimizer=ps.STLSQ(threshold=0.05), feature_library=build_library(lib_cfg, n_x, n_u))
    m.fit(X, t=1, x_next=Y, u=U)
    return m


@settings(max_examples=25, deadline=None)
@given(
    degree=st.integers(1, 3),
    control=st.sampled_from(["full", "affine"]),
    fourier=st.integers(0, 2),
    bias=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_evaluate_equals_pysindy_predict(degree, control, fourier, bias, seed):
    cfg = LibraryConfig(degree=degree, control=control, fourier=fourier, include_bias=bias)
    m = _fitted(cfg, seed)
    model = SparseModel.from_pysindy(m)
    Z = np.random.default_rng(seed + 1).uniform(-2, 2, size=(50, 3))
    ours = model.evaluate(Z)
    theirs = np.asarray(m.predict(Z[:, :2], u=Z[:, 2:]))
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


def test_ensemble_members_match_pysindy_coef_list():
    rng = np.random.default_rng(0)
    X, U = rng.normal(size=(200, 2)), rng.normal(size=(200, 1))
    Y = np.c_[X[:, 0] + 0.5 * U[:, 0], X[:, 1] - 0.2 * X[:, 0] ** 2]
    opt = ps.EnsembleOptimizer(ps.STLSQ(threshold=0.01), bagging=True, n_models=7)
    m = ps.DiscreteSINDy(optimizer=opt, feature_library=ps.PolynomialLibrary(degree=2)).fit(X, t=1, x_next=Y, u=U)
    model = SparseModel.from_pysindy(m, inputs=["a", "b", "u"], outputs=["a", "b"])
    assert model.ensemble.shape == (7, 2, model.n_terms)
    Z = rng.normal(size=(10, 3))
    ens = model.evaluate_ensemble(Z)
    for j in range(7):
        np.testing.assert_allclose(ens[j], Z_eval(Z, model, opt.coef_list[j]), atol=1e-12)


def Z_eval(Z, model, coef):
    return model.features(Z) @ np.asarray(coef).T


def _random_model(seed=0, unit=True, bounds=True):
    rng = np.random.default_rng(seed)
    terms = [(), ((0, "pow", 1),), ((1, "pow", 2), (2, "pow", 1)), ((0, "sin", 2.0),), ((1, "cos", 0.5), (2, "pow", 3))]
    coef = rng.normal(size=(3, len(terms)))
    coef[0, 2] = 0.0
    return SparseModel(
        inputs=["a", "b", "u"], outputs=["c", "s", "w"], terms=terms, coef=coef,
        ensemble=rng.normal(size=(4, 3, len(terms))), unit_pairs=[(0, 1)] if unit else [],
        output_bounds=(np.full(3, -0.7), np.full(3, 0.8)) if bounds else None,
        input_bounds=(np.full(3, -1.0), np.full(3, 1.0)), name="test", metadata={"note": "x"},
    )


def test_json_round_trip_is_exact(tmp_path):
    m = _random_model()
    p = tmp_path / "m.json"
    m.to_json(p)
    m2 = SparseModel.from_json(p)
    assert m2.terms == m.terms and m2.inputs == m.inputs and m2.unit_pairs == m.unit_pairs
    np.testing.assert_array_equal(m2.coef, m.coef)
    np.testing.assert_array_equal(m2.ensemble, m.ensemble)
    Z = np.random.default_rng(1).normal(size=(20, 3))
    np.testing.assert_array_equal(m2.evaluate(Z), m.evaluate(Z))
    assert m2.content_hash() == m.content_hash()
    assert json.loads(p.read_text())["format"] == "sindyrl.SparseModel"  # plain JSON, no pickle


def test_unit_pairs_and_output_bounds_applied_in_order():
    m = _random_model(bounds=False)
    Z = np.random.default_rng(2).normal(size=(30, 3))
    Y = m.evaluate(Z)
    np.testing.assert_allclose(Y[:, 0] ** 2 + Y[:, 1] ** 2, 1.0, atol=1e-12)
    mb = _random_model(bounds=True)
    Yb = mb.evaluate(Z)
    np.testing.assert_allclose(Yb, np.clip(Y, -0.7, 0.8))


def test_single_and_batch_agree_and_equations_readable():
    m = _random_model()
    Z = np.random.default_rng(3).normal(size=(5, 3))
    np.testing.assert_allclose(m.evaluate(Z[0]), m.evaluate(Z)[0])
    eqs = m.equations()
    assert len(eqs) == 3 and eqs[0].startswith("c = ")
    assert "sin(2 a)" in " ".join(eqs) and "b^2 u" in eqs[1]
    assert m.nnz == int(np.count_nonzero(m.coef))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(coef=np.zeros((2, 2))), "coef has shape"),
        (dict(coef=np.array([[np.nan, 0.0]])), "NaN"),
        (dict(terms=[(), ((5, "pow", 1),)]), "out of range"),
        (dict(terms=[(), ((0, "exp", 1),)]), "unknown factor kind"),
        (dict(terms=[(), ((0, "pow", 1.5),)]), "integer"),
        (dict(unit_pairs=[(0, 0)]), "distinct"),
        (dict(output_bounds=([0.0, 1.0], [1.0, 2.0])), "length 1"),
    ],
)
def test_bad_models_rejected(kwargs, match):
    base = dict(inputs=["a", "b"], outputs=["y"], terms=[(), ((0, "pow", 1),)], coef=np.zeros((1, 2)))
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SparseModel(**base)


def test_bad_json_and_bad_input_shape(tmp_path):
    with pytest.raises(ValueError, match="not a sindyrl SparseModel"):
        SparseModel.from_json('{"a": 1}')
    p = tmp_path / "trunc.json"
    p.write_text(_random_model().to_json()[:50])
    with pytest.raises(ValueError, match="invalid JSON"):
        SparseModel.from_json(p)
    with pytest.raises(FileNotFoundError):
        SparseModel.from_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"expected \(N, 3\)"):
        _random_model().evaluate(np.zeros((4, 2)))


def test_model_is_immutable_and_changes_make_new_models():
    m = _random_model()
    with pytest.raises(FrozenInstanceError):
        m.coef = np.zeros_like(m.coef)
    with pytest.raises(FrozenInstanceError):
        m.inputs = ["p", "q", "r"]
    with pytest.raises(ValueError, match="read-only"):
        m.coef += 1.0
    with pytest.raises(ValueError, match="read-only"):
        m.ensemble[0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        m.output_bounds[0][0] = -5.0
    with pytest.raises(TypeError, match="with_metadata"):
        m.metadata["note"] = "y"
    before = m.coef.copy()
    m2 = m.with_coef(before * 2)
    m3 = m.with_ensemble(None)
    m4 = m.with_metadata(score=0.5)
    np.testing.assert_array_equal(m.coef, before)
    np.testing.assert_array_equal(m2.coef, before * 2)
    assert m2.ensemble is not m.ensemble and not m2.coef.flags.writeable
    assert m3.ensemble is None and m.n_models == 4 and m3.n_models == 0
    assert dict(m4.metadata) == {"note": "x", "score": 0.5} and dict(m.metadata) == {"note": "x"}
    # the caller's arrays are copied, not frozen under them
    coef = np.array(before)
    SparseModel(m.inputs, m.outputs, m.terms, coef)
    coef[0, 0] = 3.0
    copied = pickle.loads(pickle.dumps(m4))
    np.testing.assert_array_equal(copied.coef, m4.coef)
    assert dict(copied.metadata) == dict(m4.metadata)


def test_sparse_module_imports_only_numpy_and_the_atomic_writer():
    import ast
    import sys
    from pathlib import Path

    import sindyrl.atomic
    import sindyrl.sparse

    def imported(module) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add("." * node.level + (node.module or "").split(".")[0])
        return names

    ours = {m for m in imported(sindyrl.sparse) if m.startswith(".") or m == "sindyrl"}
    assert ours == {".atomic"}
    assert imported(sindyrl.sparse) - ours <= set(sys.stdlib_module_names) | {"numpy"}
    assert imported(sindyrl.atomic) <= set(sys.stdlib_module_names)



def test_active_terms_of_the_aggregate_of_other_coefficients_and_of_members():
    m = _random_model()
    coef = np.zeros_like(m.coef)
    coef[1, 3] = 2.0
    coef[0, 1] = -1.0
    assert m.active_terms(coef=coef).tolist() == [1, 3]
    assert m.with_coef(coef).active_terms().tolist() == [1, 3]
    assert m.with_coef(coef).active_terms(include_ensemble=True).tolist() == list(range(m.n_terms))
    np.testing.assert_allclose(m.evaluate(np.ones(3), coef=coef), m.with_coef(coef).evaluate(np.ones(3)))
