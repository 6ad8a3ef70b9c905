"""A policy set on the board: K sparse policies in one firmware, EXP3-IX choosing the arm per episode.

The board's choices and probabilities are checked against the Python mirror
of its selector (same xorshift32, float32 arithmetic) and against
sindyrl.robust.bandits.EXP3IX, on the host build and on the Cortex-M4F in QEMU;
a short closed loop on Pendulum-v1 reports each episode's return to the board.
"""

from __future__ import annotations

import math
import struct
import time

import gymnasium as gym
import numpy as np
import pytest
from board_tools import need_tools

from firmware_bridge.boards import HostBoard, QemuBoard
from firmware_bridge.build import build_firmware
from firmware_bridge.codegen import generate_c
from firmware_bridge.link import BoardErrorReply, BoardLink
from firmware_bridge.policy_set import (
    BoardEXP3IX,
    PolicySetConfig,
    generate_policy_set_c,
    load_policy_set,
    policy_set_hil_episodes,
)
from firmware_bridge.protocol import (
    ErrorCode,
    FrameDecoder,
    MsgType,
    encode_frame,
    pack_episode_end,
    unpack_bandit_state,
    unpack_error,
)
from sindyrl.robust.bandits import EXP3IX
from sindyrl.sparse import SparseModel

OBS = ["cos_th", "sin_th", "th_dot"]
BOUNDS = (np.array([-2.0]), np.array([2.0]))


def swing_policy() -> SparseModel:
    """Energy-pumping PD controller for Pendulum-v1: often brings the pendulum up."""
    return SparseModel(
        OBS, ["u"],
        [((1, "pow", 1),), ((2, "pow", 1),), ((0, "pow", 1), (2, "pow", 1)), ((2, "pow", 3),),
         ((0, "pow", 1), (1, "pow", 1))],
        coef=np.array([[-6.0, -1.5, 0.8, 0.05, -1.0]]), output_bounds=BOUNDS, name="swing",
    )


def damping_policy() -> SparseModel:
    """Plain damping: never swings up, so its returns are clearly different."""
    return SparseModel(OBS, ["u"], [((2, "pow", 1),)], coef=np.array([[-0.5]]), output_bounds=BOUNDS, name="damp")


def policies() -> list[SparseModel]:
    return [swing_policy(), damping_policy(), SparseModel(OBS, ["u"], [(), ((1, "pow", 1),)],
                                                          coef=np.array([[0.3, -2.0]]), output_bounds=BOUNDS,
                                                          name="push")]


CONFIG = PolicySetConfig(n_arms=3, return_bounds=(-1600.0, 0.0), horizon=50, seed=12345)


def build(tmp_path, target: str, pols=None, config=CONFIG):
    pols = policies() if pols is None else pols
    return build_firmware(generate_policy_set_c(pols, "pset", tmp_path / "c", config), target)


def raw_exchange(link: BoardLink, wire: bytes, timeout: float = 3.0) -> list:
    link._write(wire)
    dec, got, deadline = FrameDecoder(), [], time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        got += dec.feed(link._port.read(max(1, link._port.in_waiting)))
    return got


def check_policy_set_board(link: BoardLink) -> None:
    """What a policy-set board must do, host or Cortex-M4F."""
    pols = policies()
    info = link.hello()
    assert (info.n_in, info.n_out, info.name) == (3, 1, "pset")
    # power-up state: the firmware's own seed and configuration
    ref = BoardEXP3IX.from_config(CONFIG)
    s = link.bandit_state()
    assert (s.arm, s.n_arms, s.episodes) == (ref.arm, 3, 0)
    np.testing.assert_allclose(s.probabilities, [1 / 3] * 3, rtol=1e-6)

    # 50 episodes with returns that favour arm 1: choices equal, probabilities within float32 rounding
    rng = np.random.default_rng(0)
    means = np.array([-900.0, -300.0, -1200.0])
    X = np.random.default_rng(1).uniform([-1, -1, -8], [1, 1, 8], size=(4, 3)).astype(np.float32)
    arms_seen = set()
    for t in range(50):
        arm = s.arm
        arms_seen.add(arm)
        if t % 10 == 0:  # the board acts with the arm it announced
            A = np.array([link.act(x) for x in X])
            np.testing.assert_allclose(A, pols[arm].evaluate(X.astype(np.float64)), rtol=1e-5, atol=1e-5)
        ret = float(means[arm] + rng.normal(0, 150))
        s = link.episode_end(ret)
        ref.episode_end(ret)
        assert (s.arm, s.episodes) == (ref.arm, t + 1), f"episode {t}"
        np.testing.assert_allclose(s.probabilities, ref.probabilities(), rtol=2e-6, atol=1e-7)
    assert len(arms_seen) == 3 and s.probabilities[1] == s.probabilities.max() > 0.5  # it learnt

    # malformed EPISODE_END: ERROR, and the bandit state is unchanged
    before = link.bandit_state()
    for payload, code in [(b"", ErrorCode.BAD_LENGTH), (b"\x00\x00\x80", ErrorCode.BAD_LENGTH),
                          (pack_episode_end(1.0) + b"\x00", ErrorCode.BAD_LENGTH),
                          (struct.pack("<f", math.nan), ErrorCode.NONFINITE),
                          (struct.pack("<f", -math.inf), ErrorCode.NONFINITE)]:
        with pytest.raises(BoardErrorReply) as e:
            link.request(MsgType.EPISODE_END, payload)
        assert e.value.reply.code == code and e.value.reply.request_type == MsgType.EPISODE_END
        assert e.value.reply.safe_action.tolist() == [0.0]
    with pytest.raises(BoardErrorReply) as e:
        link.request(MsgType.BANDIT_QUERY, b"\x01")
    assert e.value.reply.code == ErrorCode.BAD_LENGTH
    # a corrupted EPISODE_END never reaches the bandit
    bad = bytearray(encode_frame(MsgType.EPISODE_END, 7, pack_episode_end(-10.0)))
    bad[-2] ^= 0x40 if bad[-2] != 0x40 else 0x01
    (f,) = raw_exchange(link, bytes(bad))
    assert f.type == MsgType.ERROR and unpack_error(f.payload).code in (ErrorCode.BAD_CRC, ErrorCode.BAD_COBS)
    after = link.bandit_state()
    assert (after.arm, after.episodes) == (before.arm, before.episodes)
    np.testing.assert_array_equal(after.probabilities, before.probabilities)

    # a resent EPISODE_END (same seq and payload: its reply was lost) is answered, not counted twice
    wire = b"\x00" + encode_frame(MsgType.EPISODE_END, 42, pack_episode_end(-250.0))
    (f1,) = raw_exchange(link, wire)
    (f2,) = raw_exchange(link, wire)
    s1, s2 = unpack_bandit_state(f1.payload), unpack_bandit_state(f2.payload)
    assert s1.episodes == before.episodes + 1
    assert (s2.arm, s2.episodes) == (s1.arm, s1.episodes) and np.array_equal(s2.probabilities, s1.probabilities)
    ref.episode_end(-250.0)
    assert s1.arm == ref.arm

    # reset from the host: reproducible, and with a configuration that matches sindyrl's EXP3IX
    a = [link.bandit_reset(99).arm] + [link.episode_end(-500.0).arm for _ in range(10)]
    b = [link.bandit_reset(99).arm] + [link.episode_end(-500.0).arm for _ in range(10)]
    assert a == b
    T, K, lo, hi = 60, 3, -1600.0, 0.0
    py = EXP3IX(K, horizon=T)
    s = link.bandit_reset(7, (py.eta, py.gamma, lo, hi))
    table = np.random.default_rng(5).uniform(0, 1, size=(T, K)) * np.array([0.4, 1.0, 0.6])
    for t in range(T):
        r = float(table[t, s.arm])
        py.update(s.arm, r)
        s = link.episode_end(lo + r * (hi - lo))
        np.testing.assert_allclose(s.probabilities, py.probabilities(), rtol=1e-4, atol=1e-6)
    assert s.episodes == T and s.probabilities[1] > 0.5
    # a configuration the bandit cannot use is refused and leaves the state alone
    for cfg, code in [((0.1, 0.05, 0.0, 0.0), ErrorCode.BAD_VALUE), ((-0.1, 0.05, -1.0, 0.0), ErrorCode.BAD_VALUE),
                      ((math.nan, 0.05, -1.0, 0.0), ErrorCode.NONFINITE)]:
        with pytest.raises(BoardErrorReply) as e:
            link.bandit_reset(1, cfg)
        assert e.value.reply.code == code
    kept = link.bandit_state()
    assert (kept.arm, kept.episodes) == (s.arm, T) and np.array_equal(kept.probabilities, s.probabilities)
    with pytest.raises(BoardErrorReply) as e:
        link.request(MsgType.BANDIT_RESET, b"\x01\x02")
    assert e.value.reply.code == ErrorCode.BAD_LENGTH
    assert link.stats.retries == 0


def test_python_mirror_matches_sindyrl_exp3ix():
    """The float32 mirror and the float64 EXP3IX agree on probabilities when they pull the same arms."""
    py = EXP3IX(4, horizon=100, c=1.0)
    m = BoardEXP3IX(4, py.eta, py.gamma, (0.0, 1.0), seed=3)
    rewards = np.random.default_rng(2).uniform(size=(100, 4)) * np.array([0.2, 0.5, 0.9, 0.1])
    for t in range(100):
        arm = m.arm
        py.update(arm, rewards[t, arm])
        m.episode_end(rewards[t, arm])
        np.testing.assert_allclose(m.probabilities(), py.probabilities(), rtol=1e-4, atol=1e-6)
    assert np.argmax(m.probabilities()) == 2


def _draws(seed: int, n: int = 30) -> list[int]:
    b = BoardEXP3IX(5, 0.0, 0.0, (0.0, 1.0), seed=seed)  # eta 0: uniform, so only the PRNG decides
    return [b.arm] + [b.episode_end(0.5) for _ in range(n)]


def test_python_mirror_draws_are_seeded_and_uniform():
    assert _draws(0) == _draws(0) and _draws(1) != _draws(2)
    counts = np.bincount(_draws(3, 4999), minlength=5)
    assert counts.min() > 900 and counts.max() < 1100
    # xorshift32 (13, 17, 5) from seed 1: the first outputs are 270369, 67634689 (a known sequence)
    b = BoardEXP3IX(2, 0.0, 0.0, (0.0, 1.0), seed=1)
    assert b.rng == 270369 and b._next() == 67634689


def test_generate_policy_set_rejects_bad_input(tmp_path):
    other = SparseModel(["a", "b", "c"], ["u"], [()], coef=np.array([[1.0]]), output_bounds=BOUNDS)
    unbounded = SparseModel(OBS, ["u"], [()], coef=np.array([[1.0]]))
    cfg2 = PolicySetConfig(2, (-1.0, 0.0))
    with pytest.raises(ValueError, match="same inputs/outputs"):
        generate_policy_set_c([swing_policy(), other], "p", tmp_path, cfg2)
    with pytest.raises(ValueError, match="output_bounds"):
        generate_policy_set_c([swing_policy(), unbounded], "p", tmp_path, cfg2)
    with pytest.raises(TypeError, match="policy 1"):
        generate_policy_set_c([swing_policy(), "policy"], "p", tmp_path, cfg2)
    with pytest.raises(ValueError, match="n_arms=2"):
        generate_policy_set_c([swing_policy(), damping_policy()], "p", tmp_path, CONFIG)
    with pytest.raises(ValueError, match="return_bounds"):
        PolicySetConfig(2, (0.0, 0.0))
    with pytest.raises(ValueError, match="n_arms"):
        PolicySetConfig(33, (0.0, 1.0))


def test_host_policy_set_board(tmp_path):
    need_tools("host")
    fw = build(tmp_path, "host")
    src = (tmp_path / "c" / "pset.h").read_text()
    assert "#define SINDYRL_PSET_N_ARMS 3u" in src and "sindyrl_pset_select" in src
    with HostBoard(fw.path) as board, BoardLink(board.url, timeout=2.0) as link:
        check_policy_set_board(link)


def test_single_model_board_does_not_serve_the_bandit(tmp_path):
    need_tools("host")
    fw = build_firmware(generate_c(swing_policy(), "policy", tmp_path), "host")
    with HostBoard(fw.path) as board, BoardLink(board.url) as link:
        for req, payload in [(MsgType.EPISODE_END, pack_episode_end(-1.0)), (MsgType.BANDIT_QUERY, b""),
                             (MsgType.BANDIT_RESET, b"\x00" * 4)]:
            with pytest.raises(BoardErrorReply) as e:
                link.request(req, payload)
            assert e.value.reply.code == ErrorCode.UNKNOWN_TYPE
        assert link.act([1.0, 0.0, 0.0]).shape == (1,)


@pytest.mark.qemu
def test_qemu_policy_set_board(tmp_path):
    need_tools("mps2-an386", with_qemu=True)
    fw = build(tmp_path, "mps2-an386")
    assert 0 < fw.flash < 64 * 1024 and 0 < fw.ram < 32 * 1024
    with QemuBoard(fw.path) as board, BoardLink(board.url, timeout=3.0) as link:
        check_policy_set_board(link)


def _closed_loop(board_cls, fw_path, pols, config, episodes: int) -> dict:
    with board_cls(fw_path) as board, BoardLink(board.url, timeout=3.0) as link:
        link.bandit_reset(config.seed)
        res = policy_set_hil_episodes(link, lambda: gym.make("Pendulum-v1"), pols, n_episodes=episodes, seed=0)
        assert link.stats.protocol_errors == 0
    # the same episodes in Python, with the arms the Python mirror draws from the same returns
    ref = BoardEXP3IX.from_config(config)
    for i, (arm, ret, st) in enumerate(zip(res["arms"], res["returns"], res["states"])):
        assert arm == ref.arm, f"episode {i}"
        env = gym.make("Pendulum-v1")
        obs, _ = env.reset(seed=i)
        total, done = 0.0, False
        while not done:
            a = np.clip(pols[arm].evaluate(obs), -2.0, 2.0).astype(np.float32)
            obs, r, term, trunc, _ = env.step(a)
            total += float(r)
            done = term or trunc
        env.close()
        assert abs(ret - total) <= 1e-4 * abs(total)
        ref.episode_end(ret)
        assert st.arm == ref.arm and st.episodes == i + 1
        np.testing.assert_allclose(st.probabilities, ref.probabilities(), rtol=2e-6, atol=1e-7)
    assert res["lengths"] == [200] * episodes and res["max_action_diff"] < 1e-5
    return res


@pytest.mark.qemu
def test_qemu_policy_set_closed_loop_on_pendulum(tmp_path):
    need_tools("mps2-an386", with_qemu=True)
    pols = [swing_policy(), damping_policy()]
    # a large learning rate, so four episodes visibly move the probabilities
    config = PolicySetConfig(2, (-1600.0, 0.0), eta=2.0, seed=4)
    fw = build(tmp_path, "mps2-an386", pols, config)
    res = _closed_loop(QemuBoard, fw.path, pols, config, episodes=4)
    assert not np.allclose(res["states"][-1].probabilities, 0.5)


def test_host_policy_set_closed_loop_on_pendulum(tmp_path):
    need_tools("host")
    pols = [swing_policy(), damping_policy()]
    config = PolicySetConfig(2, (-1600.0, 0.0), eta=2.0, seed=11)
    fw = build(tmp_path, "host", pols, config)
    res = _closed_loop(HostBoard, fw.path, pols, config, episodes=3)
    assert len(res["returns"]) == 3


def test_hil_cli_with_a_policy_set_directory(tmp_path, capsys):
    need_tools("host")
    from sindyrl.cli import main
    from sindyrl.config import config_from_dict
    from sindyrl.runs import Run

    run = Run.create(config_from_dict({"env": {"id": "Pendulum-v1"}, "seed": 3}), root=tmp_path, name="pend")
    d = tmp_path / "set"
    swing_policy().to_json(d / "0_swing.json")
    damping_policy().to_json(d / "1_damp.json")
    assert [p.name for p in load_policy_set(d)] == ["swing", "damp"]
    assert main(["hil", str(run.path), "--policy-set", str(d)]) != 0
    assert "--return-bounds" in capsys.readouterr().err
    assert main(["hil", str(run.path), "--policy-set", str(d), "--return-bounds", "-1600", "0",
                 "--episodes", "3"]) == 0
    s = run.read_summary()
    assert s["hil_policy_set_arms"] == 2 and len(s["hil_policy_set_returns"]) == 3
    assert s["hil_policy_set_python_replay_agrees"] is True and s["hil_policy_set_protocol_errors"] == 0
    assert s["hil_policy_set_max_action_diff"] < 1e-5
    assert sum(s["hil_policy_set_probabilities"]) == pytest.approx(1.0, abs=1e-6)
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "natural.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match="neural"):
        load_policy_set(tmp_path / "zips")


def test_policy_set_board_under_sanitizers_survives_random_bandit_frames(tmp_path):
    """Valid frames of the new types with random payloads and random lengths: ERROR or a sane state, no UB."""
    need_tools("host")
    fw = build_firmware(generate_policy_set_c(policies(), "pset", tmp_path / "c", CONFIG), "host", sanitize=True)
    rng = np.random.default_rng(8)
    with HostBoard(fw.path) as board, BoardLink(board.url, timeout=2.0) as link:
        for _ in range(300):
            t = int(rng.choice([MsgType.EPISODE_END, MsgType.BANDIT_QUERY, MsgType.BANDIT_RESET]))
            n = int(rng.choice([0, 4, 20, int(rng.integers(0, 253))]))
            payload = bytes(rng.integers(0, 256, n, dtype=np.uint8))
            try:
                s = unpack_bandit_state(link.request(t, payload).payload)
            except BoardErrorReply as e:
                assert e.reply.code in (ErrorCode.BAD_LENGTH, ErrorCode.NONFINITE, ErrorCode.BAD_VALUE)
                continue
            assert s.n_arms == 3 and 0 <= s.arm < 3
            assert np.all(np.isfinite(s.probabilities)) and abs(float(s.probabilities.sum()) - 1) < 1e-5
        s = link.bandit_reset(5)
        assert s.episodes == 0 and board.alive()


def test_policy_set_c_selects_and_evaluates_each_arm(tmp_path):
    """The generated set file alone (ctypes): select(arm) switches the policy eval runs; bad arms are refused."""
    import ctypes

    from firmware_bridge.build import build_shared_library

    need_tools("host")
    pols = policies()
    gen = generate_policy_set_c(pols, "pset", tmp_path, CONFIG)
    lib = ctypes.CDLL(str(build_shared_library(gen, tmp_path / "lib")))
    lib.sindyrl_pset_select.argtypes = [ctypes.c_size_t]
    lib.sindyrl_pset_selected.restype = ctypes.c_size_t
    fp = ctypes.POINTER(ctypes.c_float)
    lib.sindyrl_pset_eval.argtypes = [fp, ctypes.c_size_t, fp, ctypes.c_size_t]
    X = np.random.default_rng(2).uniform([-1, -1, -8], [1, 1, 8], size=(10, 3)).astype(np.float32)
    for arm in (2, 0, 1):
        assert lib.sindyrl_pset_select(arm) == 0 and lib.sindyrl_pset_selected() == arm
        for x in X:
            y = np.zeros(1, np.float32)
            assert lib.sindyrl_pset_eval(x.ctypes.data_as(fp), 3, y.ctypes.data_as(fp), 1) == 0
            np.testing.assert_allclose(y, pols[arm].evaluate(x.astype(np.float64)), rtol=1e-5, atol=1e-5)
    assert lib.sindyrl_pset_select(3) != 0 and lib.sindyrl_pset_selected() == 1
