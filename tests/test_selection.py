"""Model selection (``library: auto``): the choice on systems of known form, explicit settings untouched."""

import json
import time

import numpy as np
import pytest
from toy_envs import LinearEnv

from sindyrl.config import ConfigError, LibraryConfig, config_from_dict
from sindyrl.data import TransitionBuffer, collect
from sindyrl.dyna import fit_models
from sindyrl.dynamics import SINDyDynamics, prediction_errors
from sindyrl.envs import env_spec
from sindyrl.regression import build_library
from sindyrl.reward import SINDyReward
from sindyrl.selection import (
    WINDOW_ERROR_CAP,
    Candidate,
    angle_like_states,
    choose,
    impulsive_states,
    library_label,
    window_error,
)
from sindyrl.sparse import SparseModel


def _simulate(step, n_x, seed, n_episodes=10, T=100, x_range=1.5, reward=None):
    rng = np.random.default_rng(seed)
    buf = TransitionBuffer(n_x, 1)
    for ep in range(n_episodes):
        x = rng.uniform(-x_range, x_range, n_x)
        rows = []
        for _ in range(T):
            u = rng.uniform(-1, 1, 1)
            xn = step(x, u[0])
            rows.append((x, u, 0.0 if reward is None else reward(x, u[0]), xn))
            x = xn
        o, a, r, n = (np.array(c) for c in zip(*rows))
        buf.add(o, a, r, n, np.zeros(T, bool), np.r_[np.zeros(T - 1, bool), True], np.full(T, ep))
    return buf


def _duffing(x, u, dt=0.05):
    """x' = x + dt v, v' = v + dt (-x - x^3 + u): cubic."""
    return np.array([x[0] + dt * x[1], x[1] + dt * (-x[0] - x[0] ** 3 + u)])


def _auto(names, buf, seed, **kw):
    _, val = buf.split_episodes(0.2, seed)
    return SINDyDynamics(names, ["u"], library="auto", threshold=None, n_models=10, seed=seed, **kw).fit(buf, val)


def test_auto_picks_degree_three_on_a_cubic_map(seed):
    dyn = _auto(["x", "v"], _simulate(_duffing, 2, seed), seed)
    assert dyn.library_.degree == 3
    sel = dyn.selection_
    assert sel is not None and sel.choice.error < 1e-4
    # every lower-degree candidate is far worse: the choice is not a near tie
    lower = min(c.error for c in sel.candidates if c.library.degree < 3)
    assert lower > 100 * sel.choice.error
    assert dyn.scores_["model_rollout_error"] < 1e-4
    assert "x^3" in " ".join(dyn.equations())


def test_auto_picks_degree_one_on_a_linear_system(seed):
    buf = collect(LinearEnv(), 500, seed=seed)
    dyn = _auto(["x0", "x1"], buf, seed)
    assert dyn.library_.degree == 1
    assert dyn.model_.nnz == 5  # A's four entries and B's one
    assert dyn.scores_["model_rollout_error"] < 1e-6


def test_auto_uses_fourier_terms_of_a_raw_angle(seed):
    def pendulum(x, u, dt=0.05):
        w = x[1] + dt * (-9.8 * np.sin(x[0]) + u)
        return np.array([x[0] + dt * w, w])

    dyn = _auto(["th", "th_dot"], _simulate(pendulum, 2, seed, x_range=2.5), seed)
    assert dyn.library_.fourier == 1 and dyn.library_.fourier_states == ["th"]
    assert dyn.scores_["model_rollout_error"] < 1e-3


def test_selection_is_in_the_metadata_and_readable(seed):
    dyn = _auto(["x", "v"], _simulate(_duffing, 2, seed), seed)
    meta = json.loads(json.dumps(dict(SparseModel.from_json(dyn.model_.to_json()).metadata)))
    sel = meta["selection"]
    assert sel["candidates"][sel["chosen"]]["library"]["degree"] == 3
    assert meta["library"]["degree"] == 3 and meta["threshold"] == dyn.threshold_
    assert len(sel["candidates"]) >= 5 and all({"error", "nnz", "threshold"} <= set(c) for c in sel["candidates"])
    text = dyn.selection_.describe()
    assert text.count("\n") >= 3 and "chose poly3" in text and "*" in text
    assert dyn.choice_["dynamics_degree"] == 3 and dyn.choice_["dynamics_threshold"] == dyn.threshold_


def test_explicit_library_is_untouched(seed):
    buf = collect(LinearEnv(), 400, seed=seed)
    _, val = buf.split_episodes(0.2, seed)
    lib = LibraryConfig(degree=3, control="full")
    cfg = config_from_dict({"env": {"id": "X"}, "dynamics": {"library": {"degree": 3, "control": "full"}}})
    assert cfg.dynamics.library == lib and cfg.dynamics.threshold is None
    a = SINDyDynamics.from_config(cfg.dynamics, ["x0", "x1"], ["u"], [], seed).fit(buf, val)
    b = SINDyDynamics(["x0", "x1"], ["u"], library=lib, threshold=1e-3, seed=seed).fit(buf, val)
    assert a.selection_ is None and a.threshold_ == 1e-3 and a.library_ == lib
    np.testing.assert_array_equal(a.model_.ensemble, b.model_.ensemble)
    assert "selection" not in a.model_.metadata


def test_threshold_auto_with_an_explicit_library(seed):
    buf = _simulate(_duffing, 2, seed)
    _, val = buf.split_episodes(0.2, seed)
    dyn = SINDyDynamics(["x", "v"], ["u"], library=LibraryConfig(degree=3), threshold="auto", n_models=5,
                        seed=seed).fit(buf, val)
    assert all(c.library == LibraryConfig(degree=3) for c in dyn.selection_.candidates)
    assert len(dyn.selection_.candidates) >= 5 and dyn.model_.nnz == 6


def test_reward_auto_picks_the_library_that_holds_the_reward(seed):
    # r = -(x0^2 + x1^2 + 0.1 u^2): quadratic in u too, so control-affine libraries cannot hold it
    buf = collect(LinearEnv(), 500, seed=seed)
    _, val = buf.split_episodes(0.2, seed)
    rew = SINDyReward(["x0", "x1"], ["u"], library="auto", threshold=None, n_models=5, seed=seed).fit(buf, val)
    assert (rew.library_.degree, rew.library_.control) == (2, "full")
    assert rew.model_.nnz == 3 and rew.scores_["reward_error"] < 1e-6
    assert rew.model_.metadata["selection"]["what"] == "reward"
    assert "held-out one-step reward error" in rew.selection_.describe()


def test_selection_is_quick_for_a_swimmer_sized_system(seed):
    # 8 states, 2 actions, 8,000 transitions: the 60 candidates of Swimmer-v5's size are ranked in seconds
    rng = np.random.default_rng(seed)
    n_x, n_u, T, n_ep = 8, 2, 100, 80
    A = np.eye(n_x) + 0.05 * rng.normal(size=(n_x, n_x)) / np.sqrt(n_x)
    B = 0.1 * rng.normal(size=(n_x, n_u))
    buf = TransitionBuffer(n_x, n_u)
    for ep in range(n_ep):
        x = rng.uniform(-1, 1, n_x)
        X, U, Xn = [], rng.uniform(-1, 1, (T, n_u)), []
        for t in range(T):
            xn = np.tanh(A @ x + B @ U[t])
            X.append(x), Xn.append(xn)
            x = xn
        buf.add(np.array(X), U, np.zeros(T), np.array(Xn), np.zeros(T, bool), np.r_[np.zeros(T - 1, bool), True],
                np.full(T, ep))
    names = ["th0", "th1", "th2", "vx", "vy", "w0", "w1", "w2"]
    _, val = buf.split_episodes(0.2, seed)
    t0 = time.perf_counter()
    dyn = SINDyDynamics(names, ["u0", "u1"], library="auto", threshold=None, n_models=2, seed=seed).fit(buf, val)
    assert len(dyn.selection_.candidates) == 60  # 3 degrees x 2 control forms x Fourier or not x 6 thresholds
    assert dyn.selection_.seconds < 30, dyn.selection_.describe()
    assert time.perf_counter() - t0 < 60


def test_rollout_error_is_finite_on_short_episodes(seed):
    # episodes of 4 to 8 steps (InvertedPendulum-v5 with random actions): shorter than rollout_steps=20
    rng = np.random.default_rng(seed)
    buf = TransitionBuffer(2, 1)
    for ep in range(60):
        T = int(rng.integers(4, 9))
        x = rng.uniform(-1, 1, 2)
        rows = []
        for _ in range(T):
            u = rng.uniform(-1, 1, 1)
            xn = LinearEnv.A @ x + LinearEnv.B @ u
            rows.append((x, u, 0.0, xn))
            x = xn
        o, a, r, n = (np.array(c) for c in zip(*rows))
        buf.add(o, a, r, n, np.r_[np.zeros(T - 1, bool), True], np.zeros(T, bool), np.full(T, ep))
    dyn = _auto(["x0", "x1"], buf, seed)
    k = dyn.scores_["model_rollout_steps"]
    assert 4 <= k <= 8
    assert np.isfinite(dyn.scores_["model_rollout_error"]) and dyn.scores_["model_rollout_error"] < 1e-6
    assert f"{k}-step held-out rollout error (episodes allow {k} of 20)" in dyn.selection_.describe()
    # the plain error function says the same for any model
    _, val = buf.split_episodes(0.2, seed)
    s = prediction_errors(dyn.model_, buf, val, 20)
    assert np.isfinite(s["model_rollout_error"]) and s["model_rollout_steps"] == k


def test_fit_models_reports_the_choice_in_its_scores(seed):
    cfg = config_from_dict({"env": {"id": "toy_envs:LinearEnv"}, "dynamics": {"n_models": 5},
                            "reward": {"n_models": 5}, "seed": seed})
    assert cfg.dynamics.library == "auto" and cfg.reward.library == "auto"
    spec = env_spec(cfg.env)
    buf = collect(LinearEnv(), 400, seed=seed)
    dyn, reward, scores = fit_models(cfg, buf, spec, seed)
    assert scores["dynamics_degree"] == 1 and scores["reward_degree"] == 2
    assert scores["dynamics_library"] == "poly1 full" and isinstance(scores["dynamics_threshold"], float)
    assert scores["dynamics_selection"].startswith("dynamics selection:")
    assert scores["dynamics_selection_candidates"] == len(dyn.selection_.candidates)


def test_a_candidate_that_diverges_on_some_windows_ranks_behind_a_steady_one():
    truth = np.zeros((9, 5, 2))
    sharp = truth.copy()  # exact on six windows, blows up on three
    sharp[6:] = np.inf
    sharp[5] = 1e30
    steady = truth + 0.05  # 0.05 std off everywhere
    scale = np.ones(2)
    assert window_error(steady, truth, scale) == pytest.approx(0.05)
    assert window_error(sharp, truth, scale) == pytest.approx(4 / 9 * WINDOW_ERROR_CAP)
    assert window_error(steady, truth, scale) < window_error(sharp, truth, scale)
    assert np.median(np.sqrt(np.mean((sharp - truth) ** 2, axis=(1, 2)))) == 0  # what a median would say
    assert window_error(np.full_like(truth, np.nan), truth, scale) == float("inf")


def test_linear_states_library_and_its_label():
    lib = LibraryConfig(degree=2, control="affine", control_degree=1, linear_states=["f"])
    pl = build_library(lib, 3, 1, ["x", "v", "f"])
    pl.fit([np.random.default_rng(0).normal(size=(20, 4))])
    names = pl.get_feature_names(["x", "v", "f", "u"])
    assert "f" in names and not any("f" in n and n != "f" for n in names), names
    assert "x v" in names and "x u" in names
    assert library_label(lib) == "poly2 affine(1) + linear[f]"
    with pytest.raises(ValueError, match=r"linear_states: \['g'\] not among the states"):
        build_library(LibraryConfig(linear_states=["g"]), 3, 1, ["x", "v", "f"])
    X = np.zeros((100, 3))
    X[:, 0] = np.linspace(-1, 1, 100)
    X[::20, 2] = 10.0  # 5 of 100 off zero
    X[:, 1] = np.round(X[:, 0], 0)  # three values, none on 80% of the samples
    assert impulsive_states(["x", "v", "f"], X) == ["f"]
    assert impulsive_states(["x"], np.zeros((100, 1))) == []  # constant: nothing to keep out


def test_auto_tries_an_impulsive_state_in_the_products_and_linearly(seed):
    """Duffing with an observed kick force f (0 on most steps): every library is tried both ways."""
    rng = np.random.default_rng(seed + 1000)

    def step(s, u):
        nxt = _duffing(s[:2], u)
        nxt[1] += 0.005 * s[2]
        return np.array([nxt[0], nxt[1], 10.0 * rng.choice([-1, 1]) if rng.random() < 0.05 else 0.0])

    dyn = _auto(["x", "v", "f"], _simulate(step, 3, seed, n_episodes=12, T=80), seed)
    labels = {c.label for c in dyn.selection_.candidates}
    for d in (2, 3):  # at degree 1 the two are the same terms, tried once
        assert f"poly{d} full" in labels and f"poly{d} full + linear[f]" in labels, labels
    assert "poly1 full + linear[f]" not in labels
    # the linear-only variants are smaller: f's products and powers are gone from them
    size = {c.label: c.n_terms for c in dyn.selection_.candidates}
    assert (size["poly3 full"], size["poly3 full + linear[f]"]) == (35, 21)  # C(7,3) against C(6,3) + 1


def test_angle_like_states_by_name_and_by_wrapping():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, (200, 5))
    Xn = X.copy()
    Xn[:, 3] = np.where(X[:, 3] > 2.9, X[:, 3] - 2 * np.pi + 0.1, X[:, 3] + 0.05)  # wraps at pi
    Xn[:, 3] = np.clip(Xn[:, 3], -np.pi, np.pi)
    names = ["theta1", "cos_th", "sin_th", "z", "v"]
    assert angle_like_states(names, X, Xn, unit_pairs=[(1, 2)]) == [0, 3]
    assert angle_like_states(["x0", "x1"], X[:, :2], X[:, :2]) == []


def test_parsimony_rule():
    lib1, lib3 = LibraryConfig(degree=1), LibraryConfig(degree=3)
    c = [Candidate("a", lib3, 1e-3, 0.100, 9, 20), Candidate("b", lib1, 1e-3, 0.114, 4, 4),
         Candidate("c", lib1, 1e-2, 0.20, 2, 4), Candidate("d", lib3, 1e-1, float("inf"), 1, 20)]
    assert choose(c, 0.15) == (1, 0)  # within 15% of the best, fewer terms
    assert choose(c, 0.10) == (0, 0)
    with pytest.raises(ValueError, match="every candidate diverges"):
        choose(c[3:], 0.15)


def test_config_keys():
    cfg = config_from_dict({"env": {"id": "X"}})
    assert cfg.dynamics.library == "auto" and cfg.dynamics.threshold is None
    assert cfg.dynamics.selection_tolerance == 0.15 and cfg.reward.library == "auto"
    with pytest.raises(ConfigError, match=r"dynamics.library: 'aut' is not one of \['auto'\]"):
        config_from_dict({"env": {"id": "X"}, "dynamics": {"library": "aut"}})
    with pytest.raises(ConfigError, match="unknown key dynamics.library.foo"):
        config_from_dict({"env": {"id": "X"}, "dynamics": {"library": {"foo": 1}}})
    with pytest.raises(ConfigError, match="reward.library.fourier_states: needs reward.library.fourier > 0"):
        config_from_dict({"env": {"id": "X"}, "reward": {"library": {"fourier_states": ["a"]}}})
    assert config_from_dict({"env": {"id": "X"}, "reward": {"threshold": "auto"}}).reward.threshold == "auto"
