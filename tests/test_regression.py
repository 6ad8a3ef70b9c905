"""The one sparse regression: the caller, never the target width, chooses the discrete-time (dynamics) path."""

import numpy as np
import pysindy as ps
import pytest

import sindyrl.regression as regression
from sindyrl.config import DistillConfig, LibraryConfig
from sindyrl.data import TransitionBuffer
from sindyrl.dynamics import SINDyDynamics
from sindyrl.policy import _fit_grid
from sindyrl.regression import fit_sparse_regression
from sindyrl.reward import SINDyReward


class _NoDiscreteSINDy:
    """Stands in for pysindy.DiscreteSINDy: a fit that reaches it took the dynamics path."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("the discrete-time (dynamics) path was taken")


def _one_state_buffer(T=80, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(T, 1))
    u = rng.uniform(-1, 1, size=(T, 1))
    xn = 0.9 * x + 0.3 * u
    buf = TransitionBuffer(1, 1)
    buf.add(x, u, -(x[:, 0] ** 2) - 0.1 * u[:, 0], xn, np.zeros(T, bool), np.zeros(T, bool), np.zeros(T, int))
    return buf


def test_reward_of_a_one_state_system_is_a_plain_regression(monkeypatch):
    buf = _one_state_buffer()
    monkeypatch.setattr(regression.ps, "DiscreteSINDy", _NoDiscreteSINDy)
    rew = SINDyReward(["x"], ["u"], LibraryConfig(degree=2), threshold=0.01, n_models=4).fit(buf)
    names = rew.model_.term_names()
    found = {names[k]: c for k, c in enumerate(rew.model_.coef[0]) if c != 0}
    assert found == pytest.approx({"x^2": -1.0, "u": -0.1})


def test_policy_with_as_many_actions_as_observations_is_a_plain_regression(monkeypatch):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(200, 2))
    Y = np.stack([0.5 * X[:, 0] - X[:, 1], X[:, 0] * X[:, 1]], axis=1)  # 2 observations, 2 actions
    monkeypatch.setattr(regression.ps, "DiscreteSINDy", _NoDiscreteSINDy)
    cfg = DistillConfig(degree=2, n_models=4, thresholds=[1e-2], alphas=[1e-6])
    fit = _fit_grid(X, Y, ["a", "b"], ["p", "q"], -np.full(2, 5.0), np.full(2, 5.0), cfg, None, 0)
    np.testing.assert_allclose(fit.model.evaluate(X), Y, atol=1e-6)


def test_dynamics_take_the_discrete_time_path(monkeypatch):
    monkeypatch.setattr(regression.ps, "DiscreteSINDy", _NoDiscreteSINDy)
    with pytest.raises(AssertionError, match="discrete-time"):
        SINDyDynamics(["x"], ["u"], n_models=2).fit(_one_state_buffer())


def test_discrete_time_needs_targets_of_the_state_width():
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match="state's width 2"):
        fit_sparse_regression(X, None, np.zeros((10, 1)), LibraryConfig(), ["a", "b"], ["y"], 0.1, 0.0, 1, 0,
                              discrete_time=True)


def test_every_fit_has_an_ensemble_and_a_fresh_optimizer():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 2))
    Y = X @ np.array([[1.0], [-2.0]])
    m1, fit1 = fit_sparse_regression(X, None, Y, LibraryConfig(degree=1), ["a", "b"], ["y"], 0.1, 0.0, 1, 0,
                                     discrete_time=False)
    assert m1.ensemble.shape == (1, 1, m1.n_terms)
    _, fit2 = fit_sparse_regression(X, None, Y, LibraryConfig(degree=1), ["a", "b"], ["y"], 0.1, 0.0, 3, 0,
                                    discrete_time=False)
    _, fit3 = fit_sparse_regression(X, None, Y, LibraryConfig(degree=1), ["a", "b"], ["y"], 0.1, 0.0, 3, 0,
                                    discrete_time=False)
    assert isinstance(fit2, ps.EnsembleOptimizer) and fit2 is not fit3
    assert len(fit3.coef_list) == 3
