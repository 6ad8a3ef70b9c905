"""Hardware-in-the-loop on the real Pendulum-v1: host board, Cortex-M4F in QEMU, ONNX edge server.

The headline check (issue 5): with the sparse policy on the emulated
Cortex-M4F, 5 closed-loop episodes give the Python policy's returns within
1e-4 relative, with zero protocol errors; the neural policy's C code on the
board matches onnxruntime within 1e-4 per action.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest
from board_tools import need_tools

from firmware_bridge.boards import HostBoard, OnnxBoard, QemuBoard
from firmware_bridge.build import build_firmware
from firmware_bridge.codegen import generate_c
from firmware_bridge.hil import hil_episodes, run_hil, run_policy_hil
from firmware_bridge.link import BoardErrorReply, BoardLink, BoardLinkError
from firmware_bridge.protocol import BenchUnit, ErrorCode, ModelKind
from firmware_bridge.stage import stage
from sindyrl.sparse import SparseModel


def pendulum_env():
    return gym.make("Pendulum-v1")


def pendulum_policy() -> SparseModel:
    """A small polynomial controller for Pendulum-v1: it swings up from some starts and saturates often."""
    return SparseModel(
        ["cos_th", "sin_th", "th_dot"], ["u"],
        [((1, "pow", 1),), ((2, "pow", 1),), ((0, "pow", 1), (2, "pow", 1)), ((2, "pow", 3),), ((0, "pow", 1), (1, "pow", 1))],
        coef=np.array([[-6.0, -1.5, 0.8, 0.05, -1.0]]),
        output_bounds=(np.array([-2.0]), np.array([2.0])),
        input_bounds=(np.array([-1.0, -1.0, -8.0]), np.array([1.0, 1.0, 8.0])), name="policy",
    )


def td3_agent(seed: int = 0):
    import stable_baselines3 as sb3
    import torch

    agent = sb3.TD3("MlpPolicy", pendulum_env(), seed=seed, device="cpu", policy_kwargs={"net_arch": [64, 64]})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # an untrained actor outputs ~0: spread it so the actions use the whole range
        for p in agent.policy.actor.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return agent


@pytest.mark.qemu
def test_qemu_sparse_policy_returns_equal_python(tmp_path):
    need_tools("mps2-an386", with_qemu=True)
    report = run_policy_hil(pendulum_policy(), pendulum_env, board="qemu", work_dir=tmp_path, episodes=5, seed=0,
                            echo=lambda s: None)
    print(report.format())
    assert report.lengths == [200] * 5
    assert report.return_rel_diff_max <= 1e-4
    assert report.protocol_errors == 0
    assert report.max_action_diff < 1e-5
    assert np.ptp(report.returns) > 100  # different starts, different episodes: the check is not trivial
    assert 20 < report.instructions_per_call < 2000
    assert report.flash_bytes > 0 and report.ram_bytes > 0
    assert 0 < report.latency_p50_ms <= report.latency_p99_ms
    s = report.summary()
    assert s["hil_board"] == "qemu" and s["hil_protocol_errors"] == 0 and len(s["hil_returns"]) == 5
    assert (tmp_path / "hil-qemu-sparse.json").is_file()


def test_host_sparse_policy(tmp_path):
    need_tools("host")
    report = run_policy_hil(pendulum_policy(), pendulum_env, board="host", work_dir=tmp_path, episodes=2, seed=7,
                            max_steps=60, echo=lambda s: None)
    assert report.lengths == [60, 60]
    assert report.return_rel_diff_max <= 1e-4 and report.protocol_errors == 0
    assert report.board_ns_per_call > 0 and report.instructions_per_call is None


@pytest.mark.qemu
def test_qemu_neural_policy_matches_onnxruntime(tmp_path):
    need_tools("mps2-an386", with_qemu=True)
    import onnxruntime as ort

    from export.neural import export_policy

    agent = td3_agent()
    onnx_path = tmp_path / "policy.onnx"
    export_policy(agent, onnx_path, n_states=1000)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    build = build_firmware(generate_c(agent, "policy", tmp_path / "c"), "mps2-an386")
    obs = np.random.default_rng(0).uniform([-1, -1, -8], [1, 1, 8], size=(300, 3)).astype(np.float32)
    want = sess.run(None, {sess.get_inputs()[0].name: obs})[0]
    with QemuBoard(build.path) as board, BoardLink(board.url, timeout=3.0) as link:
        got = np.array([link.act(o) for o in obs])
        ipc = link.instructions_per_call(200, obs[0])
        # and closed loop, against SB3's predict
        res = hil_episodes(link, pendulum_env, lambda o: agent.predict(o, deterministic=True)[0], n_episodes=1,
                           max_steps=50)
        assert res["max_action_diff"] <= 1e-4 and link.stats.protocol_errors == 0
    err = float(np.max(np.abs(got - want)))
    print(f"neural policy on the Cortex-M4F vs onnxruntime: max abs action difference {err:.2e}; "
          f"{ipc:.0f} instructions per call")
    assert err <= 1e-4
    assert np.ptp(want) > 1.0
    assert ipc > 4 * 64 * 64  # at least a few instructions per multiply-accumulate of the hidden layer


def _tanh_onnx(path, W: np.ndarray, b: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["obs", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
             helper.make_node("Tanh", ["z"], ["t"]), helper.make_node("Mul", ["t", "two"], ["action"])]
    graph = helper.make_graph(
        nodes, "policy", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", W.shape[0]])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", W.shape[1]])],
        [numpy_helper.from_array(W.astype(np.float32), "W"), numpy_helper.from_array(b.astype(np.float32), "b"),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_onnx_edge_server_speaks_the_protocol(tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    path = tmp_path / "edge.onnx"
    _tanh_onnx(path, W, b)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with OnnxBoard(path) as board, BoardLink(board.url, timeout=5.0) as link:
        info = link.hello()
        assert (info.kind, info.n_in, info.n_out, info.name) == (ModelKind.ONNX, 3, 2, "edge")
        obs = rng.normal(size=(20, 3)).astype(np.float32)
        got = np.array([link.act(o) for o in obs])
        np.testing.assert_array_equal(got, sess.run(None, {"obs": obs})[0])
        with pytest.raises(BoardErrorReply) as e:
            link.act(np.array([0.0, np.inf, 0.0]))
        assert e.value.reply.code == ErrorCode.NONFINITE and e.value.reply.safe_action.tolist() == [0.0, 0.0]
        assert link.ping(b"hello") > 0
        assert link.bench(10, obs[0]).unit == BenchUnit.NANOSECONDS


def test_onnx_board_hil_with_exported_sparse_policy(tmp_path):
    report = run_policy_hil(pendulum_policy(), pendulum_env, board="onnx", work_dir=tmp_path, episodes=2,
                            max_steps=50, bench_calls=20, echo=lambda s: None)
    assert report.return_rel_diff_max <= 1e-4 and report.protocol_errors == 0
    assert report.max_action_diff < 1e-5


def test_onnx_board_hil_with_exported_neural_policy(tmp_path):
    report = run_policy_hil(td3_agent(), pendulum_env, board="onnx", work_dir=tmp_path, episodes=1, max_steps=30,
                            bench_calls=10, echo=lambda s: None)
    assert report.max_action_diff <= 1e-5 and report.protocol_errors == 0
    assert report.return_rel_diff_max <= 1e-4


def test_onnx_edge_server_on_a_pty(tmp_path):
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(3, 1)), rng.normal(size=1)
    _tanh_onnx(tmp_path / "edge.onnx", W, b)
    with OnnxBoard(tmp_path / "edge.onnx", transport="pty") as board, BoardLink(board.url, timeout=5.0) as link:
        assert board.url.startswith("/dev/")
        x = np.array([0.5, -0.5, 2.0], np.float32)
        want = 2.0 * np.tanh(x.astype(np.float64) @ W + b)
        np.testing.assert_allclose(link.act(x), want, rtol=1e-6)


def _kill_mid_episode(board, link, at_step: int = 10) -> None:
    model = pendulum_policy()
    steps = []

    def reference(obs):
        steps.append(1)
        if len(steps) == at_step:
            board.kill()
        return model.evaluate(obs)

    t0 = time.monotonic()
    with pytest.raises(BoardLinkError, match=f"HIL episode 0, step {at_step}: .*board at"):
        hil_episodes(link, pendulum_env, reference, n_episodes=3)
    assert time.monotonic() - t0 < link.timeout * (link.retries + 1) + 3.0


def test_board_killed_mid_episode_host(tmp_path):
    need_tools("host")
    build = build_firmware(generate_c(pendulum_policy(), "policy", tmp_path), "host")
    with HostBoard(build.path) as board, BoardLink(board.url, timeout=0.5, retries=1) as link:
        _kill_mid_episode(board, link)


@pytest.mark.qemu
def test_board_killed_mid_episode_qemu(tmp_path):
    need_tools("mps2-an386", with_qemu=True)
    build = build_firmware(generate_c(pendulum_policy(), "policy", tmp_path), "mps2-an386")
    with QemuBoard(build.path) as board, BoardLink(board.url, timeout=0.5, retries=1) as link:
        _kill_mid_episode(board, link)


def test_run_directory_cli_and_stage(tmp_path):
    need_tools("host")
    from sindyrl.cli import main
    from sindyrl.config import config_from_dict
    from sindyrl.runs import Run

    run = Run.create(config_from_dict({"env": {"id": "Pendulum-v1"}, "seed": 3}), root=tmp_path, name="pend")
    run.save_model("policy", pendulum_policy())
    from sindyrl.pipeline import run_stage

    report = run_hil(run, board="host", episodes=2, max_steps=40, echo=lambda s: None)
    assert run.read_summary() == {}  # the pipeline is the one writer of summary.json
    assert report.real_steps == 2 * 2 * 40  # board episodes and the Python reference
    out = run_stage(run, "hil", echo=lambda s: None, board="host", episodes=2, max_steps=40)
    summary = run.read_summary()
    assert summary["hil_board"] == "host" and summary["hil_policy"] == "sparse"
    assert summary["hil_returns"] == pytest.approx(report.returns) and out["hil_returns"] == summary["hil_returns"]
    assert summary["real_steps_hil"] == summary["real_steps_total"] == 160
    assert summary["hil_return_rel_diff_max"] <= 1e-4 and summary["hil_protocol_errors"] == 0
    assert (run.firmware_dir / "hil-host-sparse.json").is_file()
    out = stage(run, board="host", episodes=1, max_steps=20, echo=lambda s: None)
    assert out["hil_episodes"] == 1 and set(out) >= {"hil_latency_p50_ms", "hil_max_action_diff", "hil_flash_bytes"}
    assert main(["hil", str(run.path), "--board", "host", "--episodes", "1"]) == 0
    assert run.read_summary()["hil_episodes"] == 1
    with pytest.raises(FileNotFoundError, match="no agent|trained agent"):
        run_hil(run, board="host", policy="neural", echo=lambda s: None)
    # the run's agent (PPO with gSDE, as the Pendulum example config trains it)
    import stable_baselines3 as sb3

    agent = sb3.PPO("MlpPolicy", run.make_env(), use_sde=True, seed=0, device="cpu",
                    policy_kwargs={"net_arch": [16, 16]})
    run.agent_path.parent.mkdir(parents=True, exist_ok=True)
    agent.save(run.agent_path)
    neural = run_hil(run, board="host", policy="neural", episodes=1, max_steps=20, echo=lambda s: None)
    assert neural.max_action_diff <= 1e-5 and neural.protocol_errors == 0
    assert neural.policy == "neural"
    with pytest.raises(ValueError, match=r"unknown key stages\.hil\.boudrate"):
        stage(run, board="host", boudrate=9600)
    with pytest.raises(ValueError, match="board must be one of"):
        run_hil(run, board="arduino", echo=lambda s: None)


def test_onnx_board_uses_the_runs_export_and_checks_its_hash(tmp_path):
    from export.sparse_model import export_sparse_model
    from sindyrl.config import config_from_dict
    from sindyrl.runs import Run

    run = Run.create(config_from_dict({"env": {"id": "Pendulum-v1"}, "seed": 1}), root=tmp_path, name="pend")
    policy = pendulum_policy()
    run.save_model("policy", policy)
    export_sparse_model(policy, run.export_dir / "sparse_policy.onnx")
    report = run_hil(run, board="onnx", episodes=1, max_steps=20, bench_calls=5, echo=lambda s: None)
    assert report.model_hash == policy.content_hash() and report.return_rel_diff_max <= 1e-4
    assert not (run.firmware_dir / "sparse_policy.onnx").exists()  # served the run's export, no new one
    stale = policy.with_coef(policy.coef * 0.5)
    export_sparse_model(stale, run.export_dir / "sparse_policy.onnx")
    with pytest.raises(BoardLinkError, match="exported from another model"):
        run_hil(run, board="onnx", episodes=1, max_steps=5, echo=lambda s: None)
