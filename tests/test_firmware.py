"""Generated C against Python, and the board firmware (host process and Cortex-M4F in QEMU).

C is compiled with the project's strict flags and called through ctypes (or
over the protocol) and compared with ``SparseModel.evaluate`` / SB3
``predict``. QEMU tests are marked ``qemu``: they skip when the ARM toolchain
or QEMU is missing, unless ``SINDYRL_REQUIRE_QEMU`` is set (CI), where they fail.
"""

from __future__ import annotations

import ctypes
import socket
import subprocess
import time

import numpy as np
import pytest
from board_tools import need_tools

from firmware_bridge.boards import HostBoard, QemuBoard
from firmware_bridge.build import BuildError, build_firmware, build_shared_library
from firmware_bridge.codegen import NeuralSpec, generate_c, generate_neural_c, generate_sparse_c, neural_spec_from_sb3
from firmware_bridge.link import BoardErrorReply, BoardLink, BoardLinkError, BoardTimeout, LinkStats
from firmware_bridge.protocol import (
    SEQ_UNKNOWN,
    BenchMode,
    BenchUnit,
    ErrorCode,
    FrameDecoder,
    MsgType,
    encode_frame,
    pack_floats,
    unpack_error,
)
from sindyrl.sparse import SparseModel


@pytest.fixture(autouse=True)
def _host_compiler():
    need_tools("host")


# ------------------------------------------------------------------ models
def pendulum_policy() -> SparseModel:
    """A small polynomial controller for Pendulum-v1 (torque clipped to [-2, 2])."""
    return SparseModel(
        ["cos_th", "sin_th", "th_dot"], ["u"],
        [((1, "pow", 1),), ((2, "pow", 1),), ((0, "pow", 1), (2, "pow", 1)), ((2, "pow", 3),), ((0, "pow", 1), (1, "pow", 1))],
        coef=np.array([[-6.0, -1.5, 0.8, 0.05, -1.0]]),
        output_bounds=(np.array([-2.0]), np.array([2.0])), name="policy",
    )


def random_dynamics(seed: int) -> SparseModel:
    """Every library kind, awkward input names, a unit pair, partly infinite output bounds."""
    rng = np.random.default_rng(seed)
    inputs = ["cos th", "sin.th", "in", "2dot", "u"]
    terms = [(), ((0, "pow", 1),), ((1, "pow", 2),), ((2, "pow", 1), (4, "pow", 1)), ((3, "pow", 6),),
             ((0, "sin", 1.0),), ((3, "cos", 2.5), (4, "pow", 2)), ((1, "sin", 0.5), (2, "cos", 1.0)),
             ((2, "pow", 3), (3, "pow", 1))]
    coef = rng.normal(size=(4, len(terms))) * (rng.random((4, len(terms))) < 0.7)
    coef[3] = 0.0  # an output with no terms
    return SparseModel(
        inputs, ["c", "s", "w", "zero"], terms, coef, unit_pairs=[(0, 1)],
        output_bounds=(np.array([-np.inf, -np.inf, -0.5, -1.0]), np.array([np.inf, np.inf, 0.7, np.inf])),
        input_bounds=(-np.ones(5), np.ones(5)), name="dyn",
    )


def c_function(gen, tmp_path):
    lib = ctypes.CDLL(str(build_shared_library(gen, tmp_path)))
    fn = getattr(lib, gen.symbol)
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]

    def call(x, n_in=None, n_out=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.full(gen.n_out, 12345.0, np.float32)
        rc = fn(x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), gen.n_in if n_in is None else n_in,
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), gen.n_out if n_out is None else n_out)
        return rc, out

    return call


# --------------------------------------------------------------- sparse C
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("real", ["float", "double"])
def test_sparse_c_matches_evaluate(seed, real, tmp_path):
    model = random_dynamics(seed)
    call = c_function(generate_sparse_c(model, "dyn", tmp_path, real=real), tmp_path)
    X = np.random.default_rng(100 + seed).uniform(-1.5, 1.5, size=(400, 5)).astype(np.float32)
    want = model.evaluate(X.astype(np.float64))
    got = np.array([call(x)[1] for x in X])
    for x in X[:20]:
        assert call(x)[0] == 0
    # float: ~1e-7 relative per operation on terms of size up to ~10 (th^6 at 1.5)
    tol = 2e-5 if real == "float" else 1e-6
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * (1 + np.abs(want).max()))
    np.testing.assert_array_equal(got[:, 3], np.clip(0.0, -1.0, np.inf))
    assert np.all(got[:, 2] >= -0.5) and np.all(got[:, 2] <= np.float32(0.7))
    np.testing.assert_allclose(got[:, 0] ** 2 + got[:, 1] ** 2, 1.0, rtol=1e-5)


def test_sparse_c_computes_each_shared_factor_once(tmp_path):
    # sin/cos of one input at 1..5 times a base frequency of 0.5, shared by several terms and outputs, and a
    # power shared by two terms: two libm calls in all (the harmonics come from the recurrence), each power once
    trig = [(0, kind, 0.5 * n) for n in range(1, 6) for kind in ("sin", "cos")]
    terms = [*[(f,) for f in trig], ((1, "pow", 3), trig[0]), ((1, "pow", 3), trig[9]), ((1, "pow", 2), trig[4])]
    coef = np.random.default_rng(0).normal(size=(2, len(terms)))
    model = SparseModel(["th", "w"], ["a", "b"], terms, coef, name="harm")
    gen = generate_sparse_c(model, "harm", tmp_path)
    src = gen.source.read_text()
    assert src.count("sinf(") == 1 and src.count("cosf(") == 1
    assert src.count("= w * w;") == 1 and src.count("w_pow3 =") == 1
    assert "term10" in src and "term11" in src  # products both outputs use, computed once
    call = c_function(gen, tmp_path)
    X = np.random.default_rng(1).uniform(-30, 30, size=(300, 2)).astype(np.float32)
    X[:, 1] /= 15
    want = model.evaluate(X.astype(np.float64))
    got = np.array([call(x)[1] for x in X])
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * (1 + np.abs(want).max()))


def test_sparse_unit_pair_at_origin_and_clipping(tmp_path):
    # (0, 0) must stay (0, 0) (UNIT_EPS floor), exactly as numpy does
    m = SparseModel(["a"], ["c", "s"], [((0, "pow", 1),)], np.array([[1.0], [1.0]]), unit_pairs=[(0, 1)], name="p")
    call = c_function(generate_sparse_c(m, "p", tmp_path), tmp_path)
    assert call(np.array([0.0]))[1].tolist() == m.evaluate(np.array([[0.0]]))[0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(call(np.array([3.0]))[1], m.evaluate(np.array([[3.0]]))[0], rtol=1e-7)


def test_sparse_c_rejects_bad_calls(tmp_path):
    call = c_function(generate_sparse_c(pendulum_policy(), "policy", tmp_path), tmp_path)
    rc, out = call(np.array([np.nan, 0.0, 0.0]))
    assert rc == -2 and out[0] == 12345.0  # nothing written for a non-finite input
    assert call(np.array([np.inf, 0.0, 0.0]))[0] == -2
    assert call(np.zeros(3), n_in=2)[0] == -1
    assert call(np.zeros(3), n_out=2)[0] == -1


def test_sparse_c_is_readable_and_documented(tmp_path):
    model = pendulum_policy()
    gen = generate_c(model, "policy", tmp_path)
    header, source = gen.header.read_text(), gen.source.read_text()
    assert gen.model_hash == model.content_hash() and model.content_hash() in header
    assert "firmware_bridge.codegen" in header and "sindyrl" in header
    for name in model.inputs:
        assert name in header
    assert "u: [-2, 2]" in header
    assert "int sindyrl_policy_eval(const float *in, size_t n_in, float *out, size_t n_out);" in header
    # the equation is visible in the code
    assert "y[0] = -6.0f * sin_th" in source and "+ 0.8f * cos_th * th_dot" in source
    assert "#define SINDYRL_POLICY_SAFE_ACTION { 0.0f }" in header
    for banned in ("malloc", "stdio", "printf", "free("):
        assert banned not in source and banned not in header


def test_generate_c_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="name"):
        generate_c(pendulum_policy(), "Policy-1", tmp_path)
    with pytest.raises(TypeError, match="SparseModel"):
        generate_c(np.zeros(3), "policy", tmp_path)
    with pytest.raises(ValueError, match="real"):
        generate_sparse_c(pendulum_policy(), "policy", tmp_path, real="half")
    huge = SparseModel(["a"], ["y"], [((0, "pow", 1),)], np.array([[1e39]]), name="huge")
    with pytest.raises(ValueError, match="float32"):
        generate_sparse_c(huge, "huge", tmp_path)
    assert generate_sparse_c(huge, "huge", tmp_path, real="double").source.is_file()
    big = SparseModel([f"x{i}" for i in range(62)], ["u"], [()], np.ones((1, 1)), name="big")
    with pytest.raises(ValueError, match="62 inputs"):
        build_firmware(generate_c(big, "big", tmp_path), "host")


# ------------------------------------------------------------- neural C
def sb3_agent(algo: str, seed: int = 0, **kwargs):
    import gymnasium as gym
    import stable_baselines3 as sb3
    import torch

    cls = {"td3": sb3.TD3, "sac": sb3.SAC, "ppo": sb3.PPO}[algo]
    agent = cls("MlpPolicy", gym.make("Pendulum-v1"), seed=seed, device="cpu", **kwargs)
    # untrained heads output ~0; spread the weights so the test sees real, saturating actions
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in agent.policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return agent


@pytest.mark.parametrize("algo,kwargs", [
    ("td3", {"policy_kwargs": {"net_arch": [32, 32]}}),
    ("sac", {"policy_kwargs": {"net_arch": [32, 16]}}),
    ("ppo", {"policy_kwargs": {"net_arch": [16, 16]}}),
    ("ppo", {"use_sde": True, "policy_kwargs": {"net_arch": [16]}}),
])
def test_neural_c_matches_sb3_predict(algo, kwargs, tmp_path):
    agent = sb3_agent(algo, **kwargs)
    spec = neural_spec_from_sb3(agent, inputs=["cos_th", "sin_th", "th_dot"], outputs=["u"])
    gen = generate_neural_c(spec, "pi", tmp_path)
    call = c_function(gen, tmp_path)
    obs = np.random.default_rng(0).uniform([-1, -1, -8], [1, 1, 8], size=(300, 3)).astype(np.float32)
    got = np.array([call(o)[1] for o in obs])
    want = np.array([agent.predict(o, deterministic=True)[0] for o in obs])
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(spec.predict(obs), want, atol=2e-5)
    assert np.ptp(want) > 0.5  # the comparison covers a real range of actions
    src = gen.source.read_text()
    assert "static const float sindyrl_pi_net_l0_weights" in src and "eml_net_regress" in src
    assert "malloc" not in src and "printf" not in src


def test_neural_c_folds_vecnormalize(tmp_path):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    agent = sb3_agent("td3", policy_kwargs={"net_arch": [16, 16]})
    vn = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), norm_reward=False, clip_obs=3.0)
    vn.obs_rms.mean = np.array([0.2, -0.1, 1.0])
    vn.obs_rms.var = np.array([0.5, 0.4, 9.0])
    call = c_function(generate_c(agent, "pi", tmp_path, obs_normalizer=vn), tmp_path)
    obs = np.random.default_rng(1).uniform([-1, -1, -8], [1, 1, 8], size=(200, 3)).astype(np.float32)
    got = np.array([call(o)[1] for o in obs])
    want = np.array([agent.predict(vn.normalize_obs(o), deterministic=True)[0] for o in obs])
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_neural_rejects_other_architectures(tmp_path):
    import gymnasium as gym
    import stable_baselines3 as sb3
    import torch.nn as nn

    with pytest.raises(ValueError, match="ELU"):
        neural_spec_from_sb3(sb3_agent("ppo", policy_kwargs={"activation_fn": nn.ELU}))
    with pytest.raises(ValueError, match="Box action"):
        neural_spec_from_sb3(sb3.PPO("MlpPolicy", gym.make("CartPole-v1"), device="cpu"))
    with pytest.raises(ValueError, match="Hardtanh"):
        neural_spec_from_sb3(sb3_agent("sac", use_sde=True, policy_kwargs={"clip_mean": 2.0}))
    with pytest.raises(ValueError, match="at least 2 layers"):
        NeuralSpec([np.ones((3, 1))], [np.zeros(1)], ["tanh"], [-2.0], [2.0], squash=True)


# ------------------------------------------------------------- host board
def raw_exchange(link: BoardLink, wire: bytes, timeout: float = 2.0) -> list:
    """Write raw bytes, return the frames that come back within ``timeout`` (at least one)."""
    link._write(wire)
    dec, got, deadline = FrameDecoder(), [], time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        got += dec.feed(link._port.read(max(1, link._port.in_waiting)))
    return got


def check_board_protocol(link: BoardLink, model: SparseModel) -> None:
    """What every board must do, whatever runs it."""
    info = link.hello()
    assert (info.n_in, info.n_out, info.model_hash, info.name) == (3, 1, model.content_hash(), "policy")
    X = np.random.default_rng(3).uniform([-1, -1, -8], [1, 1, 8], size=(30, 3)).astype(np.float32)
    A = np.array([link.act(x) for x in X])
    np.testing.assert_allclose(A, model.evaluate(X.astype(np.float64)), rtol=1e-5, atol=1e-5)
    payload = bytes(np.random.default_rng(4).integers(0, 256, 252, dtype=np.uint8))
    for p in (b"", b"\x00\x00", payload):
        link.ping(p)
    for n in range(246, 253):  # runs of 254+ non-zero bytes: the board's encoder must split the COBS block
        link.ping(bytes((k % 255) + 1 for k in range(n)))
    # a non-finite observation gets ERROR with the safe action, never an action computed from it
    with pytest.raises(BoardErrorReply) as e:
        link.act(np.array([np.nan, 0, 0]))
    assert e.value.reply.code == ErrorCode.NONFINITE and e.value.reply.safe_action.tolist() == [0.0]
    with pytest.raises(BoardErrorReply) as e:
        link.request(MsgType.OBS, pack_floats([1.0, 2.0]))
    assert e.value.reply.code == ErrorCode.BAD_LENGTH
    # unknown type, corrupted frame, and garbage: ERROR replies, then normal service
    (f,) = raw_exchange(link, encode_frame(0x55, 9))
    assert f.type == MsgType.ERROR and f.seq == 9 and unpack_error(f.payload).code == ErrorCode.UNKNOWN_TYPE
    bad = bytearray(encode_frame(MsgType.OBS, 10, pack_floats([1.1, 1.2, 1.3])))
    assert bad[0] == len(bad) - 1  # no zero inside: one COBS block, so byte 6 is payload
    bad[6] ^= 0x01
    (f,) = raw_exchange(link, bytes(bad))
    assert f.type == MsgType.ERROR and f.seq == SEQ_UNKNOWN and unpack_error(f.payload).code == ErrorCode.BAD_CRC
    (f,) = raw_exchange(link, b"\x05\x01\x02" + b"\x00")
    assert unpack_error(f.payload).code == ErrorCode.BAD_COBS
    (f,) = raw_exchange(link, b"\x07" * 400 + b"\x00")
    assert unpack_error(f.payload).code == ErrorCode.OVERSIZE
    np.testing.assert_allclose(link.act(X[0]), A[0])


def test_host_board_serves_the_protocol(tmp_path):
    model = pendulum_policy()
    build = build_firmware(generate_c(model, "policy", tmp_path), "host")
    assert build.flash > 0 and build.ram > 0
    with HostBoard(build.path) as board, BoardLink(board.url, timeout=2.0) as link:
        check_board_protocol(link, model)
        r = link.bench(1000, np.zeros(3))
        assert r.unit == BenchUnit.NANOSECONDS and r.n_calls == 1000 and r.elapsed > 0
        assert link.stats.protocol_errors == link.stats.error_replies  # only the errors provoked above


def test_host_board_over_a_pty(tmp_path):
    model = pendulum_policy()
    build = build_firmware(generate_c(model, "policy", tmp_path), "host")
    with HostBoard(build.path, transport="pty") as board, BoardLink(board.url, timeout=2.0) as link:
        assert board.url.startswith("/dev/")
        x = np.array([0.1, 0.9, -1.0], np.float32)
        np.testing.assert_allclose(link.act(x), model.evaluate(x.astype(np.float64)), rtol=1e-6)


def test_host_board_under_sanitizers_survives_garbage(tmp_path):
    model = pendulum_policy()
    build = build_firmware(generate_c(model, "policy", tmp_path), "host", sanitize=True)
    rng = np.random.default_rng(5)
    with HostBoard(build.path) as board, BoardLink(board.url, timeout=2.0) as link:
        link.hello()
        for _ in range(200):
            link._write(bytes(rng.integers(0, 256, int(rng.integers(1, 700)), dtype=np.uint8)))
        x = np.array([1.0, 0.0, 0.0], np.float32)
        np.testing.assert_allclose(link.act(x), model.evaluate(x.astype(np.float64)), rtol=1e-6)
        assert link.stats.bad_frames + link.stats.stale_replies + link.stats.error_replies > 0
        assert board.alive()


class NoisyLine:
    """A TCP relay between the host and a board that damages traffic on purpose (line noise, echoes).

    ``corrupt_requests``: the first n host->board chunks get one bit flipped;
    ``duplicate_replies``: every board->host chunk is delivered twice;
    ``deaf_for``: host->board bytes are dropped for that many seconds after the host connects, and the
    first chunk after that loses its first 3 bytes (a board still booting, as an STM32 before its USART
    is enabled).
    """

    def __init__(self, board_url: str, corrupt_requests: int = 0, duplicate_replies: bool = False,
                 deaf_for: float = 0.0):
        import threading

        host, port = board_url.removeprefix("socket://").split(":")
        self.upstream = socket.create_connection((host, int(port)))
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.corrupt_left = corrupt_requests
        self.duplicate = duplicate_replies
        self.deaf_for = deaf_for
        self.dropped = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _pump(self, src, dst, mangle) -> None:
        import contextlib

        with contextlib.suppress(OSError):
            while data := src.recv(4096):
                for chunk in mangle(data):
                    dst.sendall(chunk)

    def _serve(self) -> None:
        import threading

        client, _ = self.server.accept()
        deaf_until = time.monotonic() + self.deaf_for
        clip = [self.deaf_for > 0]

        def to_board(data: bytes):
            if time.monotonic() < deaf_until:
                self.dropped += 1
                return []
            if clip[0]:
                clip[0] = False
                data = data[3:]
            if self.corrupt_left > 0 and len(data) > 8:
                self.corrupt_left -= 1
                data = bytearray(data)
                data[len(data) // 2] ^= 0x04
                data = bytes(data)
            return [data]

        threading.Thread(target=self._pump, args=(client, self.upstream, to_board), daemon=True).start()
        self._pump(self.upstream, client, lambda d: [d, d] if self.duplicate else [d])

    def close(self) -> None:
        self.upstream.close()
        self.server.close()


def test_link_retries_through_line_noise_and_skips_stale_replies(tmp_path):
    model = pendulum_policy()
    build = build_firmware(generate_c(model, "policy", tmp_path), "host")
    x = np.array([0.2, 0.98, 1.5], np.float32)
    with HostBoard(build.path) as board:
        line = NoisyLine(board.url, corrupt_requests=2)
        with BoardLink(line.url, timeout=1.0, retries=3) as link:
            np.testing.assert_allclose(link.act(x), model.evaluate(x.astype(np.float64)), rtol=1e-6)
            assert link.stats.retries == 2  # two damaged requests, answered on the third attempt
            assert link.stats.error_replies == 2  # the board said so each time (BAD_CRC / BAD_COBS...)
        line.close()
    with HostBoard(build.path) as board:
        line = NoisyLine(board.url, duplicate_replies=True)
        with BoardLink(line.url, timeout=1.0) as link:
            link.hello()
            acts = [link.act(x * k) for k in (1.0, -1.0, 0.5)]
            want = [model.evaluate((x * k).astype(np.float64)) for k in (1.0, -1.0, 0.5)]
            np.testing.assert_allclose(np.array(acts), np.array(want), rtol=1e-6)
            assert link.stats.stale_replies >= 2 and link.stats.retries == 0
        line.close()


def test_handshake_waits_for_a_board_that_is_still_booting(tmp_path):
    model = pendulum_policy()
    build = build_firmware(generate_c(model, "policy", tmp_path), "host")
    x = np.array([0.2, 0.98, 1.5], np.float32)
    with HostBoard(build.path) as board:
        line = NoisyLine(board.url, deaf_for=0.6)
        with BoardLink(line.url, timeout=1.0, retries=0) as link:
            t0 = time.monotonic()
            info = link.handshake(boot_timeout=5.0)
            assert 0.6 <= time.monotonic() - t0 < 3.0 and line.dropped >= 3  # several HELLOs went unheard
            assert info.n_in == 3 and info.n_out == 1
            assert link.stats == LinkStats()  # the boot is not counted against the link
            np.testing.assert_allclose(link.act(x), model.evaluate(x.astype(np.float64)), rtol=1e-6)
            assert link.stats.protocol_errors == 0 and link.stats.requests == 1
        line.close()
    # the same boot with a plain HELLO: the lost request is a protocol error (a timeout here)
    with HostBoard(build.path) as board:
        line = NoisyLine(board.url, deaf_for=0.6)
        with BoardLink(line.url, timeout=0.5, retries=0) as link, pytest.raises(BoardTimeout):
            link.hello()
        line.close()


def test_handshake_with_a_silent_peer_gives_up_with_a_clear_error():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    with BoardLink(f"socket://127.0.0.1:{srv.getsockname()[1]}", timeout=0.3) as link:
        t0 = time.monotonic()
        with pytest.raises(BoardTimeout, match="did not answer HELLO within 1 s"):
            link.handshake(boot_timeout=1.0)
        assert 1.0 <= time.monotonic() - t0 < 2.0
    srv.close()


def test_dead_board_fails_fast_with_a_clear_error(tmp_path):
    build = build_firmware(generate_c(pendulum_policy(), "policy", tmp_path), "host")
    with HostBoard(build.path) as board, BoardLink(board.url, timeout=0.5, retries=2) as link:
        link.act(np.zeros(3))
        board.kill()
        t0 = time.monotonic()
        with pytest.raises(BoardLinkError, match="board at"):
            link.act(np.zeros(3))
        assert time.monotonic() - t0 < 0.5 * 3 + 1.0


def test_silent_board_times_out_with_a_clear_error():
    # a peer that accepts the connection and never answers (a hung board)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    with BoardLink(f"socket://127.0.0.1:{srv.getsockname()[1]}", timeout=0.3, retries=1) as link:
        t0 = time.monotonic()
        with pytest.raises(BoardLinkError, match="no valid reply .* HELLO after 2 attempts"):
            link.hello()
        assert time.monotonic() - t0 < 0.3 * 2 + 1.0
    srv.close()


def test_unreachable_board_is_reported():
    with pytest.raises(BoardLinkError, match="cannot open board link"):
        BoardLink("socket://127.0.0.1:1", connect_timeout=0.3)


# ----------------------------------------------------------- Cortex-M4F
@pytest.mark.qemu
def test_qemu_board_serves_the_protocol_and_counts_instructions(tmp_path):
    need_tools("mps2-an386", with_qemu=True)
    model = pendulum_policy()
    build = build_firmware(generate_c(model, "policy", tmp_path), "mps2-an386")
    assert 0 < build.flash < 64 * 1024 and 0 < build.ram < 32 * 1024
    with QemuBoard(build.path) as board, BoardLink(board.url, timeout=3.0) as link:
        check_board_protocol(link, model)
        cal = link.bench(100_000, mode=BenchMode.CALIBRATE)
        assert cal.unit == BenchUnit.CORE_TICKS
        x = np.array([0.3, 0.95, -2.0], np.float32)
        a = link.instructions_per_call(1000, x)
        b = link.instructions_per_call(1000, x)
        # -icount makes the count exact; a SysTick tick is 40 instructions, so 1000 calls resolve 0.04 per call
        assert abs(a - b) <= 0.1
        assert 20 < a < 2000


@pytest.mark.qemu
def test_neural_firmware_builds_for_cortex_m4f(tmp_path):
    need_tools("mps2-an386")
    agent = sb3_agent("td3", policy_kwargs={"net_arch": [64, 64]})
    gen = generate_c(agent, "policy", tmp_path)
    build = build_firmware(gen, "mps2-an386")
    n_params = neural_spec_from_sb3(agent).n_params
    assert build.flash > 4 * n_params  # the float weights are in flash
    assert build.ram < 64 * 1024
    # no heap and no stdio linked in (eml_common.h includes <stdio.h>, but nothing may call it)
    nm = subprocess.run(["arm-none-eabi-nm", str(build.path)], capture_output=True, text=True, check=True).stdout
    linked = {line.split()[-1] for line in nm.splitlines()}
    assert "sindyrl_policy_eval" in linked
    attrs = subprocess.run(["arm-none-eabi-readelf", "-A", str(build.path)], capture_output=True, text=True).stdout
    assert "Tag_ABI_VFP_args: VFP registers" in attrs and "Tag_ABI_HardFP_use: SP only" in attrs  # hard float
    assert not linked & {"malloc", "free", "_sbrk", "printf", "puts", "fwrite", "_write", "_read"}


def test_build_errors_are_clear(tmp_path):
    gen = generate_c(pendulum_policy(), "policy", tmp_path)
    gen.source.write_text(gen.source.read_text() + "\nstatic int unused_thing;\n")
    with pytest.raises(BuildError, match="unused"):  # -Werror is really on
        build_firmware(gen, "host")
    with pytest.raises(ValueError, match="target"):
        build_firmware(gen, "avr")
