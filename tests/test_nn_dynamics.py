"""Neural-network ensemble dynamics (Dyna-NN baseline): accuracy on a known system, the predictor protocol,
seeding, unit pairs, option errors, and a Dyna run on it."""

import numpy as np
import pytest

from sindyrl.config import DynamicsConfig, config_from_dict
from sindyrl.data import TransitionBuffer
from sindyrl.dyna import Dyna
from sindyrl.nn_dynamics import NNEnsembleDynamics
from sindyrl.runs import Run
from sindyrl.surrogate import SurrogateVecEnv


def _simulate(n_episodes=12, T=60, seed=0):
    """x0' = 0.9 x0 + 0.1 x1 ; x1' = 0.8 x1 - 0.2 x0^2 + 0.5 u."""
    rng = np.random.default_rng(seed)
    buf = TransitionBuffer(2, 1)
    for ep in range(n_episodes):
        x = rng.uniform(-1, 1, size=2)
        rows = []
        for _ in range(T):
            u = rng.uniform(-1, 1, size=1)
            xn = np.array([0.9 * x[0] + 0.1 * x[1], 0.8 * x[1] - 0.2 * x[0] ** 2 + 0.5 * u[0]])
            rows.append((x, u, 0.0, xn))
            x = xn
        o, a, r, n = (np.array(c) for c in zip(*rows))
        buf.add(o, a, r, n, np.zeros(T, bool), np.r_[np.zeros(T - 1, bool), True], np.full(T, ep))
    return buf


def _fit(buf, seed=0, **kw):
    _, val = buf.split_episodes(0.25, 0)
    opts = dict(n_models=5, epochs=150, patience=15, seed=seed)
    opts.update(kw)
    return NNEnsembleDynamics(["x0", "x1"], ["u"], **opts).fit(buf, val), val


def test_fits_known_system_far_better_than_persistence(seed):
    buf = _simulate(seed=seed)
    dyn, val = _fit(buf, seed=seed)
    # persistence (x' = x) as the yardstick, same normalisation as the scores
    scale = buf.next_obs.std(0)
    persist = np.sqrt(np.mean(((buf.obs[val] - buf.next_obs[val]) / scale) ** 2))
    assert dyn.scores_["model_one_step_error"] < 0.05 < persist
    assert dyn.scores_["model_one_step_error"] < persist / 10
    assert np.isfinite(dyn.scores_["model_rollout_error"]) and dyn.scores_["model_rollout_error"] < 0.15
    assert set(dyn.scores_) >= {"model_one_step_error", "model_rollout_error"}
    # a fresh state far from the training points but inside the data's range
    x, u = np.array([[0.3, -0.2]]), np.array([[0.4]])
    truth = np.array([[0.9 * 0.3 + 0.1 * -0.2, 0.8 * -0.2 - 0.2 * 0.09 + 0.5 * 0.4]])
    np.testing.assert_allclose(dyn.predict(x, u), truth, atol=0.03)
    assert dyn.epochs_run_ <= 150 and dyn.n_params == 5 * (3 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2)


def test_predictor_protocol_is_consistent_and_seeded():
    buf = _simulate(n_episodes=6, seed=1)
    dyn, _ = _fit(buf, seed=3, epochs=20)
    obs, act = buf.obs[:40], buf.actions[:40]
    ens = dyn.predict_ensemble(obs, act)
    assert ens.shape == (5, 40, 2)
    np.testing.assert_allclose(dyn.predict(obs, act, "mean"), ens.mean(0), atol=1e-12)
    np.testing.assert_allclose(dyn.predict(obs, act, "median"), np.median(ens, 0), atol=1e-12)
    members = np.arange(40) % 5
    np.testing.assert_allclose(dyn.predict_members(obs, act, members), ens[members, np.arange(40)], atol=1e-12)
    # members differ (independent init and bootstrap): otherwise the ensemble is pointless
    assert np.abs(ens[0] - ens[1]).max() > 1e-4
    again, _ = _fit(buf, seed=3, epochs=20)
    np.testing.assert_array_equal(again.predict_ensemble(obs, act), ens)
    other, _ = _fit(buf, seed=4, epochs=20)
    assert np.abs(other.predict_ensemble(obs, act) - ens).max() > 1e-6


def test_unit_pairs_are_renormalised_and_surrogate_steps_it():
    import gymnasium as gym

    rng = np.random.default_rng(0)
    buf = TransitionBuffer(3, 1)
    for ep in range(6):
        th, w = rng.uniform(-np.pi, np.pi), 0.0
        rows = []
        for _ in range(50):
            u = rng.uniform(-2, 2, size=1)
            w2 = w + 0.05 * (-10 * np.sin(th) + 3 * u[0])
            th2 = th + 0.05 * w2
            rows.append((np.array([np.cos(th), np.sin(th), w]), u, 0.0, np.array([np.cos(th2), np.sin(th2), w2])))
            th, w = th2, w2
        o, a, r, n = (np.array(c) for c in zip(*rows))
        buf.add(o, a, r, n, np.zeros(50, bool), np.r_[np.zeros(49, bool), True], np.full(50, ep))
    dyn = NNEnsembleDynamics(["c", "s", "w"], ["u"], epochs=10, unit_pairs=[(0, 1)], seed=0).fit(buf)
    for y in (dyn.predict(buf.obs, buf.actions), dyn.predict_ensemble(buf.obs, buf.actions)):
        np.testing.assert_allclose(np.hypot(y[..., 0], y[..., 1]), 1.0, atol=1e-12)
    obs_space = gym.spaces.Box(-8, 8, (3,))
    venv = SurrogateVecEnv(dyn, lambda o, a, n: -n[:, 2] ** 2, buf.obs, obs_space, gym.spaces.Box(-2, 2, (1,)),
                           horizon=10, n_envs=3, ensemble_mode="sample")
    venv.reset()
    obs, r, done, _ = venv.step(np.zeros((3, 1)))
    assert obs.shape == (3, 3) and np.all(np.isfinite(r))


def test_bad_options_and_unfitted_use_raise_clear_errors():
    cfg = DynamicsConfig(model="nn", nn={"n_modles": 3})
    with pytest.raises(ValueError, match="dynamics.nn.n_modles"):
        NNEnsembleDynamics.from_config(cfg, ["x0", "x1"], ["u"], [], 0)
    buf = _simulate(n_episodes=2, T=10)
    with pytest.raises(ValueError, match="dynamics.nn.hidden"):
        NNEnsembleDynamics(["x0", "x1"], ["u"], hidden=[]).fit(buf)
    with pytest.raises(ValueError, match="2 observations"):
        NNEnsembleDynamics(["x0", "x1", "x2"], ["u"]).fit(buf)
    with pytest.raises(RuntimeError, match="not fitted"):
        NNEnsembleDynamics(["x0", "x1"], ["u"]).predict(np.zeros((1, 2)), np.zeros((1, 1)))
    dyn = NNEnsembleDynamics.from_config(DynamicsConfig(model="nn", nn={"n_models": 2, "epochs": 2}),
                                         ["x0", "x1"], ["u"], [], 0).fit(buf)
    with pytest.raises(ValueError, match="expected"):
        dyn.predict(np.zeros((2, 3)), np.zeros((2, 1)))


def test_dyna_run_with_nn_dynamics_completes(tmp_path):
    cfg = config_from_dict({
        "name": "tiny-nn", "seed": 2,
        "env": {"id": "Pendulum-v1", "max_episode_steps": 50},
        "collect": {"random_steps": 300, "steps_per_iteration": 100},
        "dynamics": {"model": "nn", "nn": {"n_models": 3, "epochs": 15}},
        "reward": {"known": "pendulum"},
        "surrogate": {"ensemble_mode": "mean"},
        "agent": {"algo": "ppo", "n_envs": 4, "initial_steps": 512, "steps_per_iteration": 256,
                  "kwargs": {"n_steps": 64, "batch_size": 128, "n_epochs": 2}},
        "dyna": {"iterations": 2, "eval_episodes": 1, "final_eval_episodes": 2},
    })
    run = Run.create(cfg, root=tmp_path, name="r")
    summary = Dyna(cfg, run, echo=lambda *a: None, progress_bar=False).run()
    assert summary["real_steps_collect"] == 400
    assert len(summary["eval_returns"]) == 2 and np.isfinite(summary["eval_return_mean"])
    rows = run.read_metrics()
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert int(rows[0]["dynamics_members"]) == 3 and np.isfinite(rows[-1]["model_one_step_error"])
    assert not run.model_path("dynamics").exists()  # no sparse model to save for the NN baseline
