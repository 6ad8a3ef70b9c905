"""Every example config runs end to end on a tiny budget (train + distill + report), on its own env."""

from pathlib import Path

import pytest

from sindyrl.config import load_config
from sindyrl.pipeline import run_pipeline
from sindyrl.runs import Run

EXAMPLES = sorted((Path(__file__).parents[1] / "examples" / "configs").glob("*.yaml"))


def tiny(cfg_path: Path) -> list[str]:
    algo = load_config(cfg_path).agent.algo
    o = [
        "collect.random_steps=120", "collect.steps_per_iteration=40", "collect.random_episode_steps=40",
        "env.max_episode_steps=40", "dyna.iterations=2", "dyna.eval_episodes=1", "dyna.final_eval_episodes=1",
        "agent.n_envs=2", "agent.initial_steps=128", "agent.steps_per_iteration=64", "dynamics.n_models=3",
        "reward.n_models=3", "surrogate.horizon=40",
        "distill.n_models=2", "distill.passes=1", "distill.n_rollouts=2", "distill.eval_episodes=1",
        "distill.thresholds=[0.01]", "distill.alphas=[1.0e-4]", "distill.degree=2",
    ]
    if algo == "ppo":
        o += ["agent.kwargs.n_steps=32", "agent.kwargs.batch_size=32", "agent.kwargs.n_epochs=1"]
    else:
        o += ["agent.kwargs.learning_starts=32", "agent.kwargs.batch_size=16", "agent.kwargs.buffer_size=1000"]
    return o


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_config_runs_on_a_tiny_budget(path, tmp_path):
    cfg = load_config(path, tiny(path))
    run = Run.create(cfg, root=tmp_path, name=path.stem)
    summary = run_pipeline(cfg, run, skip=["export", "control", "hil"], echo=lambda *a: None, progress_bar=False)
    assert summary["real_steps_collect"] == 160
    assert run.model_path("dynamics").is_file() and run.model_path("policy").is_file()
    if not cfg.reward.known_spec:
        assert run.model_path("reward").is_file()
    assert "sparse_policy_return_mean" in summary and (run.path / "report.html").is_file()
