"""DynaBoard writes the Dyna loop's scalars as TensorBoard events that TensorBoard reads back."""

import math

import pytest

from sindyrl.tensorboard import DynaBoard, agent_log_dir

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _scalars(log_dir):
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_iterations_and_final_evaluation_read_back(tmp_path):
    rows = [
        {"iteration": 1, "real_steps_fit": 1000, "real_steps_collect": 1500, "eval_return_mean": -600.0,
         "eval_return_min": -700.0, "model_one_step_error": 0.01, "model_rollout_error": math.inf,
         "surrogate_return_mean": -550.0, "dynamics_nnz": 30},
        {"iteration": 2, "real_steps_fit": 1500, "real_steps_collect": 2000, "eval_return_mean": -150.0,
         "eval_return_min": -400.0, "model_one_step_error": 0.005, "model_rollout_error": 0.03,
         "surrogate_return_mean": None, "dynamics_nnz": 27},
    ]
    with DynaBoard(tmp_path) as tb:
        assert tb.enabled
        for r in rows:
            tb.log_iteration(r)
        tb.log_final({"eval_return_mean": -151.5, "eval_return_min": -344.0}, iteration=2)
    s = _scalars(tmp_path / "tb" / "dyna")
    assert s["return/real_mean"] == [(1, -600.0), (2, -150.0)]
    assert s["return/real_min"] == [(1, -700.0), (2, -400.0)]
    assert s["real_steps/collect"] == [(1, 1500.0), (2, 2000.0)]
    assert s["model/rollout_error"] == [(2, pytest.approx(0.03))]  # a diverged (inf) error is no point
    assert s["return/surrogate_mean"] == [(1, -550.0)]  # None is left out
    assert s["returns_vs_real_steps/eval_min"] == [(1000, -700.0), (1500, -400.0)]
    assert s["final/eval_return_min"] == [(2, -344.0)]


def test_disabled_writes_nothing(tmp_path):
    tb = DynaBoard(tmp_path, enabled=False)
    assert not tb.enabled and tb.log_iteration({"iteration": 1, "eval_return_mean": 1.0}) == []
    tb.close()
    assert not (tmp_path / "tb").exists()
    assert agent_log_dir(tmp_path, enabled=False) is None


def test_sb3_agent_logs_next_to_the_dyna_scalars(tmp_path):
    import gymnasium as gym
    from stable_baselines3 import PPO

    agent = PPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
                tensorboard_log=agent_log_dir(tmp_path))
    agent.learn(128, tb_log_name="PPO")
    runs = list((tmp_path / "tb" / "agent").iterdir())
    assert runs and "train/value_loss" in _scalars(runs[0])
