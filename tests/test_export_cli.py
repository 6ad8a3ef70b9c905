"""Tests of the export stage and the ``sindyrl export`` command on a small real run directory."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from export import load_onnx
from export.stage import stage
from sindyrl.cli import main
from sindyrl.config import config_from_dict
from sindyrl.data import collect
from sindyrl.runs import Run
from sindyrl.sparse import SparseModel

OBS = ["cos_th", "sin_th", "th_dot"]


def _dynamics() -> SparseModel:
    # a plausible one-step pendulum model, without input_bounds: parity states come from the run's data
    lin = [((i, "pow", 1),) for i in range(4)]
    terms = lin + [((1, "pow", 1), (2, "pow", 1)), ((0, "pow", 1), (2, "pow", 1))]
    coef = [[1, 0, 0, 0, 0, -0.05], [0, 1, 0, 0, 0.05, 0], [0, 0.15, 1, 0.15, 0, 0]]
    return SparseModel(OBS + ["u"], OBS, terms, coef, unit_pairs=[(0, 1)], name="dynamics")


def _sparse_policy() -> SparseModel:
    terms = [((1, "pow", 1),), ((2, "pow", 1),), ((0, "pow", 1), (1, "pow", 1)), ((1, "sin", 1.0),)]
    return SparseModel(OBS, ["u"], terms, [[-3.0, -0.4, 1.2, 0.5]], output_bounds=([-2.0], [2.0]),
                       input_bounds=([-1, -1, -8], [1, 1, 8]), name="policy")


@pytest.fixture
def run(tmp_path) -> Run:
    cfg = config_from_dict({"env": {"id": "Pendulum-v1"}, "seed": 3, "agent": {"algo": "sac"},
                            "dyna": {"final_eval_episodes": 2}})
    run = Run.create(cfg, root=tmp_path, name="r")
    env = run.make_env()
    collect(env, 300, seed=0).save(run.data_path)
    run.agent_path.parent.mkdir(parents=True, exist_ok=True)
    SAC("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [64, 64]}).save(run.agent_path)
    run.save_model("dynamics", _dynamics())
    run.save_model("policy", _sparse_policy())
    # a learned reward r(obs, u), no input_bounds: parity states from the data (observations and actions)
    run.save_model("reward", SparseModel(OBS + ["u"], ["r"], [((2, "pow", 2),), ((3, "pow", 2),), ((0, "pow", 1),)],
                                         [[-0.1, -0.001, 1.0]], name="reward"))
    return run


def test_stage_exports_everything_the_run_has(run):
    out = stage(run, quantize=True, n_states=2000, echo=lambda *a: None)
    files = {p.name for p in run.export_dir.glob("*.onnx")}
    assert files == {"policy.onnx", "policy.int8.onnx", "sparse_policy.onnx", "dynamics.onnx", "reward.onnx"}
    for what in ("policy", "sparse_policy", "dynamics", "reward"):
        assert out[f"onnx_{what}_bytes"] == (run.export_dir / f"{what}.onnx").stat().st_size
        assert 0 <= out[f"onnx_{what}_parity_max_abs"] <= 1e-5
    assert out["onnx_parity_max_abs"] == max(out[f"onnx_{w}_parity_max_abs"]
                                             for w in ("policy", "sparse_policy", "dynamics", "reward"))
    assert out["onnx_policy_int8_bytes"] < out["onnx_policy_bytes"]
    assert 0 < out["onnx_policy_int8_max_abs_action_change"] < 0.5
    assert np.isfinite(out["onnx_policy_int8_return_change"])
    assert out["onnx_policy_int8_return_change"] == pytest.approx(
        out["onnx_policy_int8_return_mean"] - out["onnx_policy_float_return_mean"])
    m = load_onnx(run.export_dir / "policy.onnx")
    assert m.input_names == OBS and m.output_names == ["u"] and m.metadata["algorithm"] == "SAC"
    import hashlib

    assert m.metadata["source_sha256"] == hashlib.sha256(run.agent_path.read_bytes()).hexdigest()
    dyn = load_onnx(run.export_dir / "dynamics.onnx")
    assert dyn.metadata["source_hash"] == run.load_model("dynamics").content_hash()
    assert dyn.input_names == OBS + ["u"] and dyn.output_names == OBS
    assert load_onnx(run.export_dir / "reward.onnx").output_names == ["r"]
    # float and int8 policies, as many Pendulum episodes each as the final evaluation (none here: 1)
    assert out["real_steps_export"] == 2 * run.confirm_episodes() * 200 == 2 * 200
    with pytest.raises(ValueError, match=r"unknown key stages\.export\.quantise"):
        stage(run, quantise=True)


def test_cli_export_and_clear_errors(run, capsys, tmp_path):
    assert main(["export", str(run.path), "--what", "dynamics", "--n-states", "500"]) == 0
    summary = run.read_summary()
    assert summary["onnx_dynamics_bytes"] > 0 and summary["onnx_parity_max_abs"] <= 1e-5
    assert "dynamics.onnx" in capsys.readouterr().out
    assert not (run.export_dir / "policy.onnx").exists()

    run.model_path("reward").unlink()
    assert main(["export", str(run.path), "--what", "reward"]) == 2
    err = capsys.readouterr().err
    assert "no reward model" in err and "models/reward.json" in err
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    run.agent_path.unlink()
    assert main(["export", str(run.path), "--what", "policy"]) == 2
    assert "no trained agent" in capsys.readouterr().err
    assert main(["export", str(run.path), "--what", "sparse-policy", "--quantize"]) == 2
    assert "--quantize applies to the neural policy" in capsys.readouterr().err


def test_run_with_vecnormalize(run):
    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    vn = VecNormalize(venv, clip_obs=2.0)
    vn.reset()
    for _ in range(100):
        vn.step(np.array([vn.action_space.sample()]))
    vn.save(run.vecnormalize_path)
    out = stage(run, what="policy", n_states=2000, echo=lambda *a: None)
    assert out["onnx_policy_parity_max_abs"] <= 1e-5
    m = load_onnx(run.export_dir / "policy.onnx")
    assert json.loads(m.metadata["vecnormalize"]) is True
    agent = run.load_agent()
    X = np.random.default_rng(0).uniform([-1, -1, -8], [1, 1, 8], (500, 3)).astype(np.float32)
    np.testing.assert_allclose(m(X), agent.predict(vn.normalize_obs(X), deterministic=True)[0], atol=1e-5, rtol=0)


def test_inference_benchmark_runs_on_a_tiny_budget(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "inference.json"
    docs = tmp_path / "docs" / "benchmarks.md"  # a copy: the test must not rewrite the real docs
    docs.parent.mkdir()
    docs.write_text("# B\n<!-- inference:start -->\nold\n<!-- inference:end -->\n")
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "inference.py"), "--repeats", "1", "--min-time", "0.001",
         "--net-arch", "16,16", "--n-states", "500",
         "--out", str(out), "--write-docs", "--docs", str(docs)], capture_output=True, text=True, timeout=300, cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())["results"][0]
    assert set(res["latency_us"]) == {"1", "1024"}
    assert all(v > 0 for lat in res["latency_us"].values() for v in lat.values())
    assert res["bytes"]["onnx_int8"] < res["bytes"]["onnx_float"] < res["bytes"]["checkpoint_zip"]
    assert res["parity_max_abs"]["onnx_float"] <= 1e-5 and "| onnxruntime int8 |" in proc.stdout
    assert "| onnxruntime int8 |" in docs.read_text() and "old" not in docs.read_text()
    written = json.loads((tmp_path / "docs" / "results" / "inference.json").read_text())
    assert "--docs" not in written["command"] and written["command"].endswith("--write-docs")
    assert written["figures"]["sac_16x16.latency_ratio_to_torch.batch1.ort_float"] > 0


def test_pipeline_export_stage_takes_config_options(tmp_path):
    """``sindyrl run`` calls export.stage.stage with the ``stages.export`` options of the config."""
    from sindyrl.pipeline import run_stage

    cfg = config_from_dict({"env": {"id": "Pendulum-v1"}, "stages": {"export": {"what": "dynamics", "n_states": 300}}})
    run = Run.create(cfg, root=tmp_path, name="p")
    run.save_model("dynamics", _dynamics().with_coef(_dynamics().coef, input_bounds=([-1, -1, -8, -2], [1, 1, 8, 2])))
    out = run_stage(run, "export", echo=lambda *a: None)
    assert set(out) == {"onnx_dynamics_bytes", "onnx_dynamics_parity_max_abs", "onnx_parity_max_abs"}
    assert [p.name for p in run.export_dir.glob("*.onnx")] == ["dynamics.onnx"]
