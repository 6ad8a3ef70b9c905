"""E-SINDy dynamics and sparse reward: recovery of known systems, member validation, metrics."""

import numpy as np
import pytest

from sindyrl.config import LibraryConfig
from sindyrl.data import TransitionBuffer
from sindyrl.dynamics import SINDyDynamics, rollout
from sindyrl.reward import SINDyReward, known_reward


def _simulate(n_episodes=8, T=60, seed=0):
    """x0' = 0.9 x0 + 0.1 x1 ; x1' = 0.8 x1 - 0.2 x0^2 + 0.5 u  (a polynomial system with control)."""
    rng = np.random.default_rng(seed)
    buf = TransitionBuffer(2, 1)
    for ep in range(n_episodes):
        x = rng.uniform(-1, 1, size=2)
        rows = []
        for _ in range(T):
            u = rng.uniform(-1, 1, size=1)
            xn = np.array([0.9 * x[0] + 0.1 * x[1], 0.8 * x[1] - 0.2 * x[0] ** 2 + 0.5 * u[0]])
            rows.append((x, u, -x[0] ** 2 - 0.1 * u[0] ** 2, xn))
            x = xn
        o, a, r, n = (np.array(c) for c in zip(*rows))
        buf.add(o, a, r, n, np.zeros(T, bool), np.r_[np.zeros(T - 1, bool), True], np.full(T, ep))
    return buf


TRUE = {
    ("x0'", "x0"): 0.9, ("x0'", "x1"): 0.1,
    ("x1'", "x1"): 0.8, ("x1'", "x0^2"): -0.2, ("x1'", "u"): 0.5,
}


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("control", ["full", "affine"])
def test_recovers_exact_terms_of_polynomial_system(residual, control, seed):
    buf = _simulate(seed=seed)
    _, val = buf.split_episodes(0.25, seed)
    dyn = SINDyDynamics(["x0", "x1"], ["u"], library=LibraryConfig(degree=2, control=control), threshold=0.02,
                        alpha=1e-8, n_models=10, residual=residual, seed=seed).fit(buf, val)
    m = dyn.model_
    names = m.term_names()
    found = {(m.outputs[o] + "'", names[k]): m.coef[o, k] for o, k in zip(*np.nonzero(m.coef))}
    assert set(found) == set(TRUE), f"found terms {sorted(found)}"
    for key, v in TRUE.items():
        assert found[key] == pytest.approx(v, abs=1e-6)
    assert dyn.scores_["model_one_step_error"] < 1e-5
    assert dyn.scores_["model_rollout_error"] < 1e-4
    # the ensemble's members carry the same structure
    assert m.ensemble.shape[1:] == m.coef.shape and m.n_models >= 1


def test_same_seed_same_model_and_fresh_optimizer_per_fit():
    buf = _simulate(seed=3)
    a = SINDyDynamics(["x0", "x1"], ["u"], threshold=0.02, n_models=5, seed=7).fit(buf)
    b = SINDyDynamics(["x0", "x1"], ["u"], threshold=0.02, n_models=5, seed=7).fit(buf)
    np.testing.assert_array_equal(a.model_.ensemble, b.model_.ensemble)
    # refitting the same estimator must not accumulate members (pysindy's coef_list would)
    a.fit(buf)
    assert a.model_.n_models <= 5


def test_divergent_members_are_dropped():
    buf = _simulate(seed=1)
    dyn = SINDyDynamics(["x0", "x1"], ["u"], threshold=0.02, n_models=6, seed=0, rollout_steps=10)
    dyn.fit(buf)
    m = dyn.model_
    n_before = m.n_models
    # make member 0 explode and re-validate
    bad = m.ensemble.copy()
    bad[0, 1, :] += 5.0
    kept, errs = dyn._validate_members(m.with_coef(m.coef, ensemble=bad), None, buf, np.ones(len(buf), dtype=bool))
    assert not np.isfinite(errs[0]) or errs[0] > 5 * np.median(errs[1:])
    assert len(kept) == n_before - 1
    np.testing.assert_array_equal(kept, bad[1:])



def test_reference_fit_replaces_members_that_are_all_far_worse():
    buf = _simulate(seed=1)
    dyn = SINDyDynamics(["x0", "x1"], ["u"], threshold=0.02, n_models=4, seed=0, rollout_steps=10).fit(buf)
    m = dyn.model_
    worse = m.ensemble + 0.3 * (m.ensemble != 0)
    kept, errs = dyn._validate_members(m.with_coef(m.coef, ensemble=worse), m.coef, buf, np.ones(len(buf), bool))
    assert len(errs) == len(worse)
    np.testing.assert_array_equal(kept, m.coef[None])

def test_rollout_shapes_and_unit_pairs():
    buf = _simulate()
    dyn = SINDyDynamics(["x0", "x1"], ["u"], threshold=0.02, n_models=3, unit_pairs=[(0, 1)]).fit(buf)
    traj = rollout(dyn.model_, buf.obs[:4], buf.actions[:4][:, None, :].repeat(7, axis=1))
    assert traj.shape == (4, 8, 2)
    np.testing.assert_allclose(np.hypot(traj[:, 1:, 0], traj[:, 1:, 1]), 1.0, atol=1e-12)


def test_sparse_reward_same_time_index():
    buf = _simulate()
    rew = SINDyReward(["x0", "x1"], ["u"], library=LibraryConfig(degree=2), threshold=0.01, n_models=5).fit(buf)
    names = rew.model_.term_names()
    found = {names[k]: rew.model_.coef[0, k] for k in np.flatnonzero(rew.model_.coef[0])}
    assert set(found) == {"x0^2", "u^2"}
    assert found["x0^2"] == pytest.approx(-1.0, abs=1e-6) and found["u^2"] == pytest.approx(-0.1, abs=1e-6)
    # queried on (x[k], u[k]) of the step taken: matches the recorded r[k]
    np.testing.assert_allclose(rew(buf.obs, buf.actions, buf.next_obs), buf.rewards, atol=1e-6)


def test_known_rewards():
    r = known_reward("pendulum")
    obs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 1.0]])
    np.testing.assert_allclose(r(obs, np.array([[0.0], [2.0]]), obs), [0.0, -(np.pi**2 + 0.1 + 0.004)])
    with pytest.raises(ValueError, match="reward.known .*not a built-in one"):
        known_reward("nope")
    with pytest.raises(ValueError, match="cannot import module"):
        known_reward("no_such_module_xyz:f")


def test_fit_rejects_bad_shapes():
    buf = _simulate()
    with pytest.raises(ValueError, match="model expects"):
        SINDyDynamics(["a", "b", "c"], ["u"]).fit(buf)


def _protocol_members():
    from sindyrl.dynamics import DynamicsModel

    return sorted(n for n in vars(DynamicsModel) if not n.startswith("_"))


def test_both_dynamics_models_follow_the_protocol():
    import inspect

    from sindyrl.dynamics import DynamicsModel
    from sindyrl.nn_dynamics import NNEnsembleDynamics

    members = _protocol_members()
    assert {"fit", "predict", "score", "equations", "scores_", "n_models", "sparse_model"} <= set(members)
    assert all(getattr(DynamicsModel, n).__doc__ for n in members)  # one docstring per member
    buf = _simulate()
    sindy = SINDyDynamics(["x0", "x1"], ["u"], threshold=0.02, n_models=4, seed=0).fit(buf)
    nn = NNEnsembleDynamics(["x0", "x1"], ["u"], n_models=2, epochs=3, seed=0).fit(buf)
    for dyn in (sindy, nn):
        for n in members:
            assert hasattr(dyn, n), f"{type(dyn).__name__} lacks {n}"
            if callable(getattr(DynamicsModel, n)):
                want = list(inspect.signature(getattr(DynamicsModel, n)).parameters)
                assert list(inspect.signature(getattr(type(dyn), n)).parameters)[: len(want)] == want
        assert dyn.predict(buf.obs[:5], buf.actions[:5]).shape == (5, 2)
        assert set(dyn.scores_) >= {"model_one_step_error", "model_rollout_error"}
    assert sindy.sparse_model is sindy.model_ and sindy.equations()[0].startswith("x0' = ")
    assert nn.sparse_model is None and nn.equations() == []
    with pytest.raises(RuntimeError, match="not fitted"):
        _ = SINDyDynamics(["x0", "x1"], ["u"]).sparse_model


class _PredictOnly:
    """A DynamicsModel with neither a sparse form nor access to ensemble members."""

    obs_names, action_names, n_models, scores_ = ["x0", "x1"], ["u"], 1, {}
    sparse_model = None

    def fit(self, buffer, val_mask=None):
        return self

    def predict(self, obs, actions):
        return 0.9 * obs + 0.1 * actions

    def score(self, buffer, mask=None):
        return {}

    def equations(self, precision=3):
        return []


@pytest.mark.parametrize("mode", ["median", "sample"])
def test_surrogate_steps_any_dynamics_model(mode):
    import gymnasium as gym

    from sindyrl.nn_dynamics import NNEnsembleDynamics
    from sindyrl.surrogate import SurrogateVecEnv

    buf = _simulate()
    sindy = SINDyDynamics(["x0", "x1"], ["u"], threshold=0.02, n_models=4, seed=0).fit(buf)
    nn = NNEnsembleDynamics(["x0", "x1"], ["u"], n_models=2, epochs=3, seed=0).fit(buf)
    for dyn in (sindy, nn, _PredictOnly()):
        venv = SurrogateVecEnv(dyn, lambda o, a, n: -(n**2).sum(axis=1), buf.obs, gym.spaces.Box(-5, 5, (2,)),
                               gym.spaces.Box(-1, 1, (1,)), horizon=5, n_envs=3, ensemble_mode=mode,
                               disagreement_threshold=10.0)
        obs = venv.reset()
        nxt, r, done, _ = venv.step(np.full((3, 1), 0.5))
        assert nxt.shape == (3, 2) and np.all(np.isfinite(r)) and not done.any()
        if mode == "median" and dyn is not nn:  # nn's default aggregate is the mean
            np.testing.assert_allclose(nxt, dyn.predict(obs.astype(np.float64), np.full((3, 1), 0.5)), rtol=1e-6)
