"""The pipeline's stage contract: typed stage options checked at load time, old option keys, stages that cannot
apply skipped with their reason, the one writer of summary.json, and real steps per stage."""

import json
import warnings

import pytest
import yaml

from sindyrl.config import ConfigError, config_from_dict, load_config
from sindyrl.pipeline import STAGES, real_steps_total, record_summary, run_pipeline, run_stage
from sindyrl.runs import Run
from sindyrl.stage_options import ControlOptions, HILOptions, StageSkipped

# a custom linear system with a known numpy reward that has no CasADi form and no target state: the control
# stage fits a reward model for the MPC cost and finds the LQR equilibrium itself
TOY = {
    "name": "toy", "seed": 0,
    "env": {"id": "toy_envs:LinearEnv", "kwargs": {"horizon": 20}},
    "collect": {"random_steps": 200, "steps_per_iteration": 0},
    "dynamics": {"library": {"degree": 1}, "threshold": 0.02, "n_models": 3},
    "reward": {"known": "toy_envs:reward"},
    "agent": {"algo": "ppo", "n_envs": 2, "initial_steps": 128, "kwargs": {"n_steps": 64, "batch_size": 64}},
    "dyna": {"iterations": 1, "eval_episodes": 1, "final_eval_episodes": 1},
    "distill": {"n_models": 2, "passes": 1, "n_rollouts": 2, "eval_episodes": 1, "thresholds": [0.01],
                "alphas": [1.0e-4], "degree": 1},
}


@pytest.mark.parametrize("stages, match", [
    ({"control": {"horizn": 10}}, r"unknown key stages\.control\.horizn"),
    ({"hil": {"episodes": "many"}}, r"stages\.hil\.episodes: expected an integer"),
    ({"hil": {"episodes": 0}}, r"stages\.hil\.episodes: must be >= 1"),
    ({"export": {"what": "everything"}}, r"stages\.export\.what: 'everything' is not one of"),
    ({"robust": {"epsilonn": 0.1}}, r"unknown key stages\.robust\.epsilonn"),
    ({"controller": {}}, r"unknown key stages\.controller \(known keys in stages: control, export, hil, robust\)"),
])
def test_unknown_or_bad_stage_options_fail_at_load_with_the_key_path(stages, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"env": {"id": "X"}, "stages": stages})


def test_stage_options_defaults_keep_real_evaluation_cheap():
    cfg = config_from_dict({"env": {"id": "X"}, "stages": {"control": {"methods": "mpc", "target": [1, 0]}}})
    assert cfg.stages.control == ControlOptions(methods=["mpc"], target=[1.0, 0.0])
    # None: as many as the final evaluation (Run.confirm_episodes), which is sized by the training's real steps
    assert cfg.stages.control.n_episodes is None and cfg.stages.hil.episodes is None
    assert cfg.stages.export.n_episodes is None
    assert cfg.stages.robust is None  # opt-in
    # the resolved config (config.yaml of a run) loads back to the same options
    from sindyrl.config import config_to_dict

    assert config_from_dict(config_to_dict(cfg)).stages == cfg.stages


def test_old_package_keys_warn_and_still_work(tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text(yaml.safe_dump({"env": {"id": "X"}, "stages": {"controllers": {"horizon": 12},
                                                                "firmware_bridge": {"board": "host"}}}))
    with pytest.warns(FutureWarning) as caught:
        cfg = load_config(p, ["stages.firmware_bridge.episodes=2"])
    messages = [str(w.message) for w in caught]
    assert any("stages.controllers is deprecated" in m and "use stages.control " in m for m in messages)
    assert any("stages.firmware_bridge is deprecated" in m and "use stages.hil " in m for m in messages)
    assert cfg.stages.control.horizon == 12 and cfg.stages.hil == HILOptions(board="host", episodes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match=r"stages\.controllers and stages\.control"):
            config_from_dict({"env": {"id": "X"}, "stages": {"controllers": {}, "control": {}}})
        with pytest.raises(ConfigError, match=r"unknown key stages\.control\.horizn"):
            config_from_dict({"env": {"id": "X"}, "stages": {"controllers": {"horizn": 1}}})


def test_summary_skips_merge_and_real_steps_add_up(tmp_path):
    run = Run.create(config_from_dict({"env": {"id": "X"}}), root=tmp_path, name="s")
    record_summary(run, {"real_steps_collect": 100, "real_steps_eval": 20, "real_steps_fit": 100})
    record_summary(run, {}, skipped={"hil": "skipped by the user"})
    s = record_summary(run, {"real_steps_control": 7}, skipped={"robust": "not configured"})
    assert s["skipped"] == {"hil": "skipped by the user", "robust": "not configured"}
    assert s["real_steps_total"] == 127 == real_steps_total(s)  # real_steps_fit is data, not steps spent
    s = record_summary(run, {"hil_return_mean": 1.0}, done="hil")
    assert s["skipped"] == {"robust": "not configured"}


# a drifting system (no action holds its state) with a step reward no polynomial fits: neither an LQR
# equilibrium nor an MPC cost exists, and the control stage is skipped
DRIFT = {**TOY, "env": {"id": "toy_envs:DriftEnv"}, "reward": {"known": "toy_envs:drift_reward"}}


def test_a_run_whose_control_stage_cannot_apply_completes(tmp_path, capsys):
    from sindyrl.cli import main

    cfg_file = tmp_path / "toy.yaml"
    cfg_file.write_text(yaml.safe_dump(DRIFT))
    code = main(["run", str(cfg_file), "--runs-dir", str(tmp_path / "runs"), "--name", "toy", "--skip", "export,hil",
                 "--quiet"])
    assert code == 0
    run = Run.open(tmp_path / "runs" / "toy")
    s = run.read_summary()
    assert "target state" in s["skipped"]["control"] and "LQR" in s["skipped"]["control"]
    assert "no steady state" in s["skipped"]["control"]
    assert s["skipped"]["export"] == s["skipped"]["hil"] == "skipped by the user"
    assert s["skipped"]["robust"].startswith("not configured")
    assert set(s["skipped"]) == {"control", "export", "hil", "robust"}
    assert "sparse_policy_return_mean" in s and (run.path / "report.html").is_file()
    md = (run.path / "report.md").read_text()
    assert "**Skipped**" in md and "control (" in md and "target state" in md
    assert s["real_steps_total"] == sum(v for k, v in s.items() if k.startswith("real_steps_")
                                        and k not in ("real_steps_total", "real_steps_fit"))
    assert s["real_steps_total"] >= s["real_steps_collect"] == 200
    out = capsys.readouterr().out
    assert "skipped: control" in out
    # the explicit command still fails, with the reason
    assert main(["control", str(run.path)]) == 2
    assert "a quadratic tracking cost needs a target state (pass --target" in capsys.readouterr().err
    with pytest.raises(StageSkipped, match="target state"):
        run_stage(run, "control", echo=lambda *a: None, skip_ok=False)


def test_the_control_stage_applies_to_a_custom_system_with_a_numpy_reward(tmp_path):
    import numpy as np

    from sindyrl.cli import main

    cfg_file = tmp_path / "toy.yaml"
    cfg_file.write_text(yaml.safe_dump({**TOY, "stages": {"control": {"n_episodes": 2, "horizon": 10}}}))
    assert main(["run", str(cfg_file), "--runs-dir", str(tmp_path / "runs"), "--name", "toy", "--skip",
                 "export,hil,report", "--quiet"]) == 0
    run = Run.open(tmp_path / "runs" / "toy")
    s = run.read_summary()
    assert "control" not in s["skipped"]
    # reward -(|x|^2 + 0.1 u^2): fitted exactly, and its best steady state is the origin
    assert s["control_reward_fit_accurate"] is True and s["control_reward_fit_heldout_error"] < 1e-6
    np.testing.assert_allclose(s["control_steady_state_x"], [0.0, 0.0], atol=1e-3)
    assert s["control_lqr_spectral_radius"] < 1 and s["control_mpc_episodes"] == 2
    assert s["real_steps_control"] >= 2 * 2 * 20  # two controllers, two 20-step episodes each (+ the comparison)
    assert s["real_steps_total"] == real_steps_total(s)
    assert run.model_path("reward_fit").is_file()


def test_pipeline_prints_skips_and_the_real_steps_table(tmp_path):
    cfg = config_from_dict({**TOY, "dynamics": {"model": "nn", "nn": {"epochs": 2}}})
    run = Run.create(cfg, root=tmp_path, name="nn")
    lines: list[str] = []
    summary = run_pipeline(cfg, run, skip=["report"], echo=lambda *a: lines.append(" ".join(map(str, a))),
                           progress_bar=False)
    assert summary["skipped"]["distill"] == "no sparse dynamics model (dynamics.model: nn)"
    assert "=== distill: skipped (no sparse dynamics model (dynamics.model: nn))" in lines
    i = lines.index("=== real steps")
    table = lines[i:]
    assert any(t.split() == ["collect", "200"] for t in table)
    assert table[-1].split() == ["total", str(summary["real_steps_total"])]
    assert json.loads((run.path / "summary.json").read_text()) == summary
    with pytest.raises(ValueError, match="unknown stage"):
        run_stage(run, "fly")
    assert list(STAGES) == ["train", "distill", "export", "control", "hil", "robust", "report"]
