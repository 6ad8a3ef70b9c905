"""Sparse policy distillation, the distill stage and the run report."""

import gymnasium as gym
import numpy as np
import pytest
from test_surrogate import ACT, OBS, pendulum_model, starts

from sindyrl.config import DistillConfig, config_from_dict
from sindyrl.policy import SparsePolicy, distill, distill_run, neural_labels, policy_param_count
from sindyrl.report import write_report
from sindyrl.reward import known_reward
from sindyrl.runs import Run
from sindyrl.sparse import SparseModel
from sindyrl.surrogate import SurrogateVecEnv

NAMES = ["cos_th", "sin_th", "th_dot"]


def make_surrogate(n, seed=0):
    return SurrogateVecEnv(pendulum_model(), known_reward("pendulum"), starts(200, seed), OBS, ACT, horizon=60,
                           n_envs=n, seed=seed)


def test_distilling_a_known_polynomial_controller_recovers_its_terms(seed):
    def teacher(o):  # a polynomial controller, saturating at the bounds
        return (-1.5 * o[:, 1] - 0.4 * o[:, 2] + 0.3 * o[:, 0] * o[:, 2])[:, None]

    cfg = DistillConfig(degree=2, n_models=5, passes=2, n_rollouts=8, thresholds=[1e-3, 1e-2], alphas=[1e-8])
    pol, hist = distill(teacher, lambda n: make_surrogate(n, seed), NAMES, ["u"], cfg, unit_pairs=[(0, 1)],
                        action_bounds=([-2.0], [2.0]), echo=lambda *a: None, seed=seed)
    names = pol.model.term_names()
    found = {names[k]: pol.model.coef[0, k] for k in np.flatnonzero(pol.model.coef[0])}
    assert set(found) == {"sin_th", "th_dot", "cos_th th_dot"}, found
    assert found["sin_th"] == pytest.approx(-1.5, abs=1e-6) and found["cos_th th_dot"] == pytest.approx(0.3, abs=1e-6)
    assert len(hist) == 2 and hist[1]["n_states"] > hist[0]["n_states"]  # DAgger added visited states
    X = np.random.default_rng(seed).normal(size=(50, 3)) * 3
    np.testing.assert_allclose(pol.act(X), np.clip(teacher(X), -2, 2), atol=1e-6)
    lo, hi = pol.model.input_bounds  # the region it was fitted on travels with it (export parity sampling)
    assert np.all(lo < hi) and lo[0] >= -1.0 - 1e-9 and hi[0] <= 1.0 + 1e-9


def test_act_matches_sparse_model_single_and_batch():
    m = SparseModel(NAMES, ["u"], [(), ((1, "pow", 1),), ((2, "pow", 3),)], [[0.1, -2.0, 0.05]],
                    output_bounds=([-2.0], [2.0]))
    pol = SparsePolicy(m)
    X = np.random.default_rng(1).normal(size=(20, 3))
    np.testing.assert_array_equal(pol.act(X), m.evaluate(X))
    np.testing.assert_array_equal(pol.act(X[3]), m.evaluate(X)[3])
    assert pol.act(X[3]).shape == (1,) and pol.equations()[0].startswith("u = 0.1")
    with pytest.raises(ValueError, match="output_bounds"):
        SparsePolicy(m.with_coef(m.coef, output_bounds=None))


def test_neural_labels_and_param_count_for_ppo_and_sac():
    from stable_baselines3 import PPO, SAC

    env = gym.make("Pendulum-v1")
    X = np.random.default_rng(0).uniform(-1, 1, size=(30, 3)).astype(np.float32)
    for cls in (PPO, SAC):
        agent = cls("MlpPolicy", env, seed=0, device="cpu")
        lab = neural_labels(agent, X)
        np.testing.assert_allclose(np.clip(lab, -2, 2), agent.predict(X, deterministic=True)[0], atol=1e-5)
        n = policy_param_count(agent)
        hidden = 64 if cls is PPO else 256
        assert n == 3 * hidden + hidden + hidden * hidden + hidden + hidden + 1


def test_bad_input_is_rejected(tmp_path):
    from stable_baselines3 import PPO

    cfg = config_from_dict({"env": {"id": "Pendulum-v1"}})
    run = Run.create(cfg, root=tmp_path, name="empty")
    with pytest.raises(FileNotFoundError, match="no trained agent"):
        distill_run(run, echo=lambda *a: None)
    disc = PPO("MlpPolicy", gym.make("CartPole-v1"), device="cpu")
    with pytest.raises(ValueError, match="continuous"):
        distill(disc, make_surrogate, NAMES, ["u"], echo=lambda *a: None)
    with pytest.raises(ValueError, match="action_bounds"):
        distill(lambda o: o[:, :1], make_surrogate, NAMES, ["u"], echo=lambda *a: None)


def _small_run(tmp_path, name: str, seed: int, dyna: dict, distill: dict) -> Run:
    """A trained Pendulum run of 40-step episodes, in seconds: the distill stage's input."""
    from sindyrl.dyna import Dyna

    cfg = config_from_dict({
        "name": name, "seed": seed,
        "env": {"id": "Pendulum-v1", "max_episode_steps": 40},
        "collect": {"random_steps": 200, "steps_per_iteration": 40},
        "dynamics": {"library": {"degree": 2}, "n_models": 4},
        "reward": {"known": "pendulum"},
        "agent": {"algo": "ppo", "n_envs": 4, "initial_steps": 512, "steps_per_iteration": 0,
                  "kwargs": {"n_steps": 64, "batch_size": 64, "n_epochs": 1}},
        "dyna": {"iterations": 1, "final_eval_episodes": 2, **dyna},
        "distill": {"degree": 2, "n_models": 3, "n_rollouts": 4, "thresholds": [1e-3, 1e-2], "alphas": [1e-6],
                    **distill},
    })
    run = Run.create(cfg, root=tmp_path, name=name)
    Dyna(cfg, run, echo=lambda *a: None, progress_bar=False).run()
    return run


def test_distill_stage_and_report_on_a_small_run(tmp_path):
    run = _small_run(tmp_path, "small", 0, {"eval_episodes": 1}, {"passes": 2, "eval_episodes": 2})
    out = distill_run(run, echo=lambda *a: None)
    run.update_summary(out)
    assert run.model_path("policy").is_file()
    for k in ("neural_policy_return_mean", "sparse_policy_return_mean", "neural_policy_return_std",
              "sparse_policy_return_std", "neural_policy_params", "sparse_policy_nnz"):
        assert k in out
    assert out["sparse_policy_nnz"] <= max(1, int(0.01 * out["neural_policy_params"])) or out["sparse_policy_nnz"] <= 10
    paths = write_report(run)
    md = paths["md"].read_text()
    htm = paths["html"].read_text()
    pol = run.load_model("policy")
    assert pol.equations()[0] in md and "th_dot' =" in md
    assert "data:image/png;base64," in htm and "<img" in htm and "src='plots/" not in htm  # self-contained
    assert "Sparse vs neural policy" in md and "Learning curve" in md


def test_grid_ranks_with_one_gram_and_fits_one_ensemble_within_the_budget(seed):
    """The grid is ranked by single STLSQ fits; the chosen point's ensemble is the model, within max_nnz."""
    from sindyrl.policy import _fit_grid

    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(3000, 3))
    Y = (0.8 * X[:, 0] - 0.5 * X[:, 1] * X[:, 2] + 0.3 * X[:, 2] ** 3 + 0.01 * rng.normal(size=3000))[:, None]
    cfg = DistillConfig(degree=3, n_models=5, thresholds=[1e-4, 1e-2, 0.4], alphas=[1e-8])
    low, high = np.array([-2.0]), np.array([2.0])
    fit = _fit_grid(X, Y, NAMES, ["u"], low, high, cfg, None, seed)
    names = fit.model.term_names()
    found = {names[k] for k in np.flatnonzero(fit.model.coef[0])}
    assert {"cos_th", "sin_th th_dot", "th_dot^3"} <= found and fit.val_error < 1e-3
    assert fit.model.ensemble.shape[0] == 5  # the chosen point is fitted as an ensemble
    small = _fit_grid(X, Y, NAMES, ["u"], low, high, cfg, 2, seed)  # the cubic term does not fit a 2-term budget
    assert small.model.nnz <= 2 and small.threshold == 0.4
    assert small.val_error > 10 * fit.val_error


def test_imitation_fit_survives_near_collinear_terms_of_a_balance_task(seed):
    """Near upright, cos th ~ 1: the bias, cos th and their powers are nearly collinear, the ensemble's members
    split weights among them differently, and their coefficient-wise median predicts badly (held-out error
    0.7-1.6 here). The fit must predict the teacher as well as one least-squares fit does."""
    from sindyrl.policy import _fit_grid

    rng = np.random.default_rng(seed)
    n = 6000
    t1, t2 = rng.normal(size=n) * 0.08, rng.normal(size=n) * 0.3
    w1, w2, x = rng.normal(size=n) * 2, rng.normal(size=n) * 3, rng.normal(size=n) * 0.3
    X = np.stack([x, np.cos(t1), np.cos(t2), np.sin(t1), np.sin(t2), w1, w2], 1)
    Y = np.clip(3 * np.sin(t1) + 2 * np.sin(t2) + 0.3 * w1 + 0.2 * w2 - 0.5 * x, -2, 2)[:, None]
    names = ["x", "c1", "c2", "s1", "s2", "w1", "w2"]
    fit = _fit_grid(X, Y, names, ["u"], np.array([-1.0]), np.array([1.0]), DistillConfig(), None, seed)
    assert fit.val_error < 0.005, fit.val_error  # one STLSQ fit: 0.0008; the ensemble's median: 0.7-1.6
    assert np.mean((fit.model.evaluate(X) - np.clip(Y, -1, 1)) ** 2) < 0.005  # the model saved, bounds and all


def test_distill_confirms_the_best_candidates_on_the_real_env_and_counts_the_steps(tmp_path):
    run = _small_run(tmp_path, "confirm", 1, {"eval_episodes": 0},
                     {"passes": 3, "confirm_top": 2, "confirm_episodes": 1})
    lines = []
    reused = run.read_summary().get("eval_returns") is not None
    out = distill_run(run, echo=lines.append)
    rec = out["distill_history"][-1]
    assert rec["pass"] == "confirm" and len(rec["candidates"]) == 2
    scores = [c["surrogate_score"] for c in rec["candidates"]]
    assert scores == sorted(scores, reverse=True)  # the two best by the surrogate, best first
    best = max(rec["candidates"], key=lambda c: c["real_return_mean"])
    assert rec["chosen"] == best["candidate"] and rec["surrogate_choice"].startswith("pass ")
    # the kept policy is the confirmed winner: its nnz, and its own (fresh-start) confirm return is a real one
    assert out["sparse_policy_nnz"] == best["nnz"]
    assert np.isfinite(best["real_return_mean"]) and best["episodes"] == 1
    # 2 candidates x 1 episode x 40 steps, plus the final episodes (the neural policy's unless reused)
    finals = len(out["sparse_policy_returns"]) + (0 if reused else len(out["neural_policy_returns"]))
    assert out["real_steps_distill"] == 2 * 40 + 40 * finals
    assert any(line.startswith("[confirm] kept") for line in lines)
    run.update_summary(out)
    md = write_report(run)["md"].read_text()
    assert "confirmed on real episodes" in md and best["candidate"] in md
