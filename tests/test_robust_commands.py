"""``sindyrl robust``: options validation, CLI wiring, and (slow) a whole run on a small Pendulum run."""

import json

import numpy as np
import pytest

from sindyrl.robust.stage import RobustOptions


def test_options_defaults_and_errors_name_the_key():
    o = RobustOptions.from_dict({"epsilon": 0.1, "schedule": ["none", "mad", "adversary", "random"]})
    assert o.epsilon == 0.1 and o.mad_steps == 10 and o.iterations == 3
    with pytest.raises(ValueError, match=r"stages\.robust\.epsilonn"):
        RobustOptions.from_dict({"epsilonn": 0.1})
    with pytest.raises(ValueError, match=r"stages\.robust\.epsilon"):
        RobustOptions.from_dict({"epsilon": -1})
    with pytest.raises(ValueError, match=r"stages\.robust\.iterations"):
        RobustOptions.from_dict({"iterations": 1.5})
    with pytest.raises(ValueError, match=r"stages\.robust\.schedule"):
        RobustOptions.from_dict({"schedule": ["none", "pgd"]})
    with pytest.raises(ValueError, match=r"stages\.robust\.bandits"):
        RobustOptions.from_dict({"bandits": ["ucb1"]})
    with pytest.raises(ValueError, match=r"stages\.robust\.return_bounds"):
        RobustOptions.from_dict({"return_bounds": [0, -1]})
    with pytest.raises(ValueError, match=r"stages\.robust\.scale"):
        RobustOptions.from_dict({"scale": "mad"})


def test_cli_registers_robust_and_reports_bad_targets(tmp_path, capsys):
    from sindyrl.cli import build_parser, main

    args = build_parser().parse_args(["robust", str(tmp_path), "--epsilon", "0.3", "--iterations", "2"])
    assert args.epsilon == 0.3 and args.iterations == 2 and callable(args.func)
    assert main(["robust", str(tmp_path / "missing")]) == 2
    assert "neither a run directory nor a config file" in capsys.readouterr().err
    assert main(["robust", str(tmp_path)]) == 2  # a directory without config.yaml
    assert "not a sindyrl run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_robust_command_on_a_small_pendulum_run(tmp_path):
    """Train a small run (Dyna on the sparse surrogate), then the whole robust stage with tiny budgets."""
    from sindyrl.cli import main
    from sindyrl.robust.payoff import PayoffMatrix, non_dominated
    from sindyrl.runs import Run

    cfg = tmp_path / "pendulum.yaml"
    cfg.write_text("""
name: robust-test
seed: 0
env: {id: Pendulum-v1}
collect: {random_steps: 1000, steps_per_iteration: 500}
dynamics: {library: {degree: 3, control: full}, n_models: 5}
reward: {known: pendulum}
agent:
  algo: ppo
  n_envs: 8
  initial_steps: 120000
  steps_per_iteration: 0
  kwargs: {n_steps: 512, batch_size: 256, gamma: 0.9, gae_lambda: 0.95, n_epochs: 10, learning_rate: 1.0e-3,
           use_sde: true, sde_sample_freq: 4}
dyna: {iterations: 1, eval_episodes: 2, final_eval_episodes: 4}
stages:
  robust: {epsilon: 0.2, iterations: 1, attacker_steps: 1024, policy_steps: 2048, eval_episodes: 3,
           bandit_episodes: 24, segment: 4, bandit_seeds: 3}
""")
    assert main(["robust", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--name", "r"]) == 0
    run = Run.open(tmp_path / "runs" / "r")
    P = PayoffMatrix.from_csv(run.path / "robust" / "payoff.csv")
    assert P.attacks[:3] == ["none", "random", "mad"] and "adversary" in P.attacks
    assert (run.plots_dir / "robust_payoff.png").is_file() and (run.plots_dir / "robust_regret.png").is_file()
    report = json.loads((run.path / "robust" / "adaptation.json").read_text())
    kept = [P.policies.index(k) for k in report["kept"]]
    assert non_dominated(P.values[kept]) == list(range(len(kept)))
    s = run.read_summary()
    assert s["robust_non_dominated"] == len(report["kept"])
    assert np.isfinite(s["robust_exp3ix_return_schedule"])
