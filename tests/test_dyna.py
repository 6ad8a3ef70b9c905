"""The Dyna loop end to end on a tiny budget; resume after a crash without losing real data; the CLI."""

import json

import numpy as np
import pytest

import sindyrl.dyna as dyna_mod
from sindyrl.cli import main
from sindyrl.config import config_from_dict
from sindyrl.dyna import Dyna
from sindyrl.runs import Run

TINY = {
    "name": "tiny",
    "seed": 1,
    "env": {"id": "Pendulum-v1", "max_episode_steps": 50},
    "collect": {"random_steps": 300, "steps_per_iteration": 100},
    "dynamics": {"library": {"degree": 2}, "n_models": 5},
    "reward": {"known": "pendulum"},
    "agent": {"algo": "ppo", "n_envs": 4, "initial_steps": 1024, "steps_per_iteration": 512,
              "kwargs": {"n_steps": 128, "batch_size": 128, "n_epochs": 2}},
    "dyna": {"iterations": 3, "eval_episodes": 1, "final_eval_episodes": 2},
}


def test_dyna_runs_writes_artifacts_and_resumes_after_crash(tmp_path, monkeypatch):
    cfg = config_from_dict(TINY)
    run = Run.create(cfg, root=tmp_path, name="r")
    real_eval = dyna_mod.evaluate_policy
    calls = {"n": 0}

    def crashing_eval(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # iteration 2, after training, before its real collection
            raise RuntimeError("simulated crash")
        return real_eval(*a, **k)

    monkeypatch.setattr(dyna_mod, "evaluate_policy", crashing_eval)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Dyna(cfg, run, echo=lambda *a: None, progress_bar=False).run()
    state = json.loads((run.path / "state.json").read_text())
    assert state["iteration"] == 1
    data_after_crash = run.load_data()
    assert len(data_after_crash) == 400  # 300 random + 100 with the policy of iteration 1
    monkeypatch.setattr(dyna_mod, "evaluate_policy", real_eval)

    summary = Dyna(Run.open(run.path).config, Run.open(run.path), echo=lambda *a: None, progress_bar=False).run()
    data = run.load_data()
    assert len(data) == 500  # nothing lost, nothing collected twice
    np.testing.assert_array_equal(data.obs[:400], data_after_crash.obs)
    rows = run.read_metrics()
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    for col in ("real_steps_collect", "real_steps_eval", "surrogate_steps", "eval_return_mean", "eval_return_std",
                "surrogate_return_mean", "surrogate_return_min", "collect_return_mean", "model_one_step_error",
                "wall_seconds"):
        assert col in rows[0]
    assert summary["real_steps_collect"] == 500
    assert summary["real_steps_eval"] == 3 * 50  # one opt-in evaluation episode per iteration
    assert summary["real_steps_final_eval"] == 2 * 50
    assert summary["surrogate_steps"] >= 1024 + 512 + 512
    assert len(summary["eval_returns"]) == 2
    assert summary["surrogate_starts"] > 0 and summary["surrogate_return_min"] <= summary["surrogate_return_mean"]
    for f in ("models/dynamics.json", "agent/agent.zip", "metrics.csv", "manifest.json", "state.json",
              "plots/learning_curve.png", "plots/model_rollout.png", "config.yaml"):
        assert (run.path / f).is_file(), f
    assert not (run.path / "summary.json").is_file()  # the pipeline is the only writer of summary.json


def test_default_learning_curve_spends_no_real_step_on_evaluation(tmp_path):
    """By default the curve is the collected episodes' return plus the surrogate estimate; the only real
    evaluation is the final one, sized so that it and the later stages' confirmations (as many episodes each,
    five in all) cost at most the collected steps."""
    data = dict(TINY, dyna={"iterations": 2})
    cfg = config_from_dict(data)
    run = Run.create(cfg, root=tmp_path, name="r")
    summary = Dyna(cfg, run, echo=lambda *a: None, progress_bar=False).run()
    assert summary["real_steps_eval"] == 0
    assert summary["real_steps_collect"] == 400
    assert summary["eval_episodes"] == 1  # 400 collected real steps pay for five confirmations of one 50-step episode
    assert 5 * summary["real_steps_final_eval"] <= summary["real_steps_collect"]
    rows = run.read_metrics()
    assert rows[0]["eval_return_mean"] is None and rows[0]["collect_return_mean"] is not None
    assert rows[0]["collect_episodes"] == 2  # 100 steps with the policy: two 50-step episodes
    assert all(r["surrogate_starts"] > 0 for r in rows)


def test_cli_fit_prints_equations(tmp_path, capsys):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(TINY))
    assert main(["fit", str(p), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "th_dot' =" in out and "sin_th" in out
    assert (tmp_path / "m" / "dynamics.json").is_file()


def test_cli_bad_config_is_one_clear_line(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("env: {id: Pendulum-v1}\nagent: {algo: a2c}\n")
    assert main(["train", str(p), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "agent.algo" in err and "Traceback" not in err
    assert main(["distill", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_custom_module_class_env_and_module_function_reward(tmp_path, seed):
    """Any gymnasium.Env given as "module:Class", with a known reward given as "module:function"."""
    cfg = config_from_dict({
        "seed": seed,
        "env": {"id": "toy_envs:LinearEnv", "kwargs": {"horizon": 30}},
        "collect": {"random_steps": 300, "steps_per_iteration": 0},
        "dynamics": {"library": {"degree": 1}, "threshold": 0.02, "n_models": 3},
        "reward": {"known": "toy_envs:reward"},
        "agent": {"algo": "ppo", "n_envs": 2, "initial_steps": 256, "kwargs": {"n_steps": 64, "batch_size": 64}},
        "dyna": {"iterations": 1, "eval_episodes": 1, "final_eval_episodes": 1},
    })
    run = Run.create(cfg, root=tmp_path, name="toy")
    assert run.obs_names == ["x0", "x1"] and run.action_names == ["u0"]
    Dyna(cfg, run, echo=lambda *a: None, progress_bar=False).run()
    m = run.load_model("dynamics")
    # the linear system is recovered exactly: x0' = x0 + 0.1 x1 ; x1' = -0.2 x0 + 0.95 x1 + 0.1 u0
    np.testing.assert_allclose(m.evaluate(np.array([[0.3, -0.5, 0.7]])), [[0.3 - 0.05, -0.06 - 0.475 + 0.07]],
                               atol=1e-8)
    assert m.nnz == 5


def test_pipeline_with_nn_dynamics_skips_the_sparse_stages(tmp_path):
    from sindyrl.pipeline import run_pipeline

    data = dict(TINY, dyna={"iterations": 1, "eval_episodes": 1, "final_eval_episodes": 1},
                dynamics={"model": "nn", "nn": {"epochs": 5}})
    cfg = config_from_dict(data)
    run = Run.create(cfg, root=tmp_path, name="nn")
    lines = []
    summary = run_pipeline(cfg, run, echo=lines.append, progress_bar=False)
    reason = "no sparse dynamics model (dynamics.model: nn)"
    assert {s: summary["skipped"][s] for s in ("distill", "export", "control", "hil")} == dict.fromkeys(
        ("distill", "export", "control", "hil"), reason)
    assert f"=== control: skipped ({reason})" in lines
    assert "eval_return_mean" in summary and (run.path / "report.html").is_file()
    assert not run.model_path("policy").is_file()


def test_agents_without_tensorboard_write_no_sb3_folders(tmp_path, monkeypatch):
    """SB3's default logger makes an empty /tmp/SB3-<date> folder at every learn(); sindyrl's agents do not."""
    import tempfile

    import gymnasium as gym
    import stable_baselines3 as sb3

    from sindyrl.runs import quiet_logger

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    env = gym.make("Pendulum-v1")
    model = quiet_logger(sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu"))
    model.learn(64)
    model.learn(64, reset_num_timesteps=False)
    assert list(tmp_path.iterdir()) == []
    plain = sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    plain.learn(64)  # the check can fail: SB3 alone does make its folder here
    assert [p.name[:4] for p in tmp_path.iterdir()] == ["SB3-"]
    env.close()


def test_real_step_budget_and_adaptive_batches(tmp_path):
    """collect.max_real_steps ends the loop with the budget spent exactly (the last batch cut to fit) and
    resuming a finished run adds nothing; adaptive batches stay short while the model is poor."""
    d = json.loads(json.dumps(TINY))
    d["collect"].update(random_steps=100, random_episode_steps=50, steps_per_iteration=100,
                        min_steps_per_iteration=30, model_error_tolerance=0.0, max_real_steps=190)
    d["dyna"].update(iterations=10, eval_episodes=0)
    cfg = config_from_dict(d)
    run = Run.create(cfg, root=tmp_path, name="b")
    summary = Dyna(cfg, run, echo=lambda *a: None, progress_bar=False).run()
    rows = run.read_metrics()
    # tolerance 0: the model never counts as good, so every batch is the short one, the last cut to the budget
    assert [int(r["collect_steps"]) for r in rows] == [30, 30, 30, 0]
    assert summary["real_steps_collect"] == 190 == len(run.load_data())
    Dyna(Run.open(run.path).config, Run.open(run.path), echo=lambda *a: None, progress_bar=False).run()
    assert len(run.read_metrics()) == 4 and len(run.load_data()) == 190


def test_adaptive_batch_doubles_once_the_model_is_good(tmp_path):
    d = json.loads(json.dumps(TINY))
    d["collect"].update(steps_per_iteration=400, min_steps_per_iteration=50, model_error_tolerance=0.1,
                        max_real_steps=1000)
    cfg = config_from_dict(d)
    dy = Dyna(cfg, Run.create(cfg, root=tmp_path, name="a"), echo=lambda *a: None, progress_bar=False)
    state = dyna_mod.DynaState()
    good, poor = {"model_rollout_error": 0.05}, {"model_rollout_error": 0.5}
    sizes = []
    for scores in (poor, good, good, good, poor, {"model_rollout_error": float("nan")}, good):
        sizes.append(dy.batch_steps(state, scores, 300))
        state.last_batch = sizes[-1]
    assert sizes == [50, 100, 200, 400, 50, 50, 100]
    assert dy.batch_steps(state, good, 950) == 50  # what is left of the budget
    assert dy.budget_used(1000) and not dy.budget_used(999)


def test_few_episodes_are_held_out_by_segments():
    """One random episode and a partial batch: the hold-out takes segments of both, not a whole episode."""
    from sindyrl.data import TransitionBuffer

    buf = TransitionBuffer(1, 1)
    for ep, n in ((0, 200), (1, 100)):
        buf.add(np.arange(n)[:, None] * 1.0, np.zeros((n, 1)), np.zeros(n), np.arange(1, n + 1)[:, None] * 1.0,
                np.zeros(n, bool), np.zeros(n, bool), np.full(n, ep))
    for seed in range(5):
        train, val = buf.split_episodes(0.2, seed)
        assert 40 <= val.sum() <= 120 and train[:200].sum() >= 120 and train[200:].sum() >= 40
        # held-out parts are contiguous segments of at least 40 transitions
        runs = np.split(np.flatnonzero(val), np.flatnonzero(np.diff(np.flatnonzero(val)) > 1) + 1)
        assert all(len(r) >= 40 for r in runs)
    # with enough episodes, whole episodes as before
    many = TransitionBuffer(1, 1)
    for ep in range(6):
        many.add(np.zeros((50, 1)), np.zeros((50, 1)), np.zeros(50), np.zeros((50, 1)), np.zeros(50, bool),
                 np.zeros(50, bool), np.full(50, ep))
    _, val = many.split_episodes(0.2, 0)
    assert val.sum() == 50


def test_keep_better_undoes_further_training_that_scores_worse(tmp_path, monkeypatch):
    """dyna.keep_better: when the training after a refit scores worse on the new model than the last
    iteration's agent did, that agent comes back (its actual weights: SB3's get_parameters hands out live
    state dicts that the training would have changed too)."""
    import torch

    from sindyrl.evaluation import SurrogateAssessment

    d = json.loads(json.dumps(TINY))
    d["dyna"].update(iterations=2, eval_episodes=0, max_extra_rounds=0, restart_on_drop=None)
    cfg = config_from_dict(d)
    run = Run.create(cfg, root=tmp_path, name="k")
    dy = Dyna(cfg, run, echo=lambda *a: None, progress_bar=False)
    real_assess, real_train = dyna_mod.assess_in_surrogate, Dyna.train
    calls, weights = [], []

    def assess(*a, **k):
        res = real_assess(*a, **k)
        calls.append(res)
        # iteration 1: one call; iteration 2: the old agent, then the trained one, made to score worse
        return SurrogateAssessment(res.returns - 1000.0, res.lengths) if len(calls) == 3 else res

    def train(self, venv, n, label):
        out = real_train(self, venv, n, label)
        weights.append({k: v.clone() for k, v in self.agent.policy.state_dict().items()})
        return out

    monkeypatch.setattr(dyna_mod, "assess_in_surrogate", assess)
    monkeypatch.setattr(Dyna, "train", train)
    dy.run()
    rows = run.read_metrics()
    assert len(calls) == 3 and [int(r["kept_previous_agent"]) for r in rows] == [0, 1]
    now = dy.agent.policy.state_dict()
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in now)  # the second training did change it
    assert all(torch.equal(now[k], weights[0][k]) for k in now)  # and the first iteration's weights are back
    assert float(rows[1]["surrogate_return_mean"]) == float(calls[1].mean)


def test_restart_on_drop_trains_a_fresh_agent_and_keeps_the_better(tmp_path, monkeypatch):
    """dyna.restart_on_drop: a refit that makes the last agent score far worse than it did on the old model
    trains a fresh agent too; the better one by surrogate score is kept (here the fresh one)."""
    from sindyrl.evaluation import SurrogateAssessment

    d = json.loads(json.dumps(TINY))
    d["dyna"].update(iterations=2, eval_episodes=0, max_extra_rounds=0, restart_on_drop=0.5)
    cfg = config_from_dict(d)
    run = Run.create(cfg, root=tmp_path, name="r")
    dy = Dyna(cfg, run, echo=lambda *a: None, progress_bar=False)
    real_assess = dyna_mod.assess_in_surrogate
    calls, agents = [], []

    def assess(act, *a, **k):
        res = real_assess(act, *a, **k)
        calls.append(res)
        agents.append(dy.agent)
        # 2: the old agent on the new model, 3: the continued one: both far worse; 4: the fresh one as it is
        return SurrogateAssessment(res.returns - 5000.0, res.lengths) if len(calls) in (2, 3) else res

    monkeypatch.setattr(dyna_mod, "assess_in_surrogate", assess)
    dy.run()
    rows = run.read_metrics()
    assert len(calls) == 4 and [int(r["restarted_agent"]) for r in rows] == [0, 1]
    assert agents[3] is not agents[2] and dy.agent is agents[3]  # a new SB3 object, and the one kept
    assert int(rows[1]["kept_previous_agent"]) == 0
    assert int(rows[1]["surrogate_steps"]) == 1024 + 512 + 1024  # the fresh agent's initial_steps counted
