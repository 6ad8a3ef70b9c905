"""Each emulated microcontroller board serves the protocol and runs a policy in closed loop against Python.

One short HIL per board in QEMU (skipped with the reason when the ARM toolchain or QEMU is missing; failing
instead under ``SINDYRL_REQUIRE_QEMU=1``): the STM32F405 (Cortex-M4F, netduinoplus2) and the nRF51
Cortex-M0 (microbit, no FPU), where the fixed-point policy is compared with the soft-float build.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from board_tools import need_tools

from firmware_bridge.boards import QEMU_BOARDS
from firmware_bridge.hil import BOARDS, run_policy_hil
from sindyrl.sparse import SparseModel


def pendulum_env():
    return gym.make("Pendulum-v1")


def pendulum_policy() -> SparseModel:
    return SparseModel(
        ["cos_th", "sin_th", "th_dot"], ["u"],
        [((1, "pow", 1),), ((2, "pow", 1),), ((0, "pow", 1), (2, "pow", 1)), ((2, "pow", 3),), ((0, "pow", 1), (1, "pow", 1))],
        coef=np.array([[-6.0, -1.5, 0.8, 0.05, -1.0]]),
        output_bounds=(np.array([-2.0]), np.array([2.0])),
        input_bounds=(np.array([-1.0, -1.0, -8.0]), np.array([1.0, 1.0, 8.0])), name="policy",
    )


def test_every_emulated_board_is_a_hil_board():
    from sindyrl.cli import build_parser

    assert set(QEMU_BOARDS) <= set(BOARDS)
    hil = build_parser()._subparsers._group_actions[0].choices["hil"]
    board = next(a for a in hil._actions if a.dest == "board")
    assert set(board.choices) == set(BOARDS)


@pytest.mark.qemu
def test_stm32f405_hil_matches_python(tmp_path):
    need_tools("stm32f405", with_qemu=True)
    report = run_policy_hil(pendulum_policy(), pendulum_env, board="stm32f405", work_dir=tmp_path, episodes=5,
                            seed=0, echo=lambda s: None)
    print(report.format())
    assert report.lengths == [200] * 5
    assert report.return_rel_diff_max <= 1e-4 and report.protocol_errors == 0
    assert report.max_action_diff < 1e-5
    assert np.ptp(report.returns) > 100
    assert 20 < report.instructions_per_call < 2000
    assert report.flash_bytes > 0 and report.summary()["hil_board"] == "stm32f405"


@pytest.mark.qemu
def test_stm32f405_from_the_command_line(tmp_path):
    need_tools("stm32f405", with_qemu=True)
    from sindyrl.cli import main
    from sindyrl.config import config_from_dict
    from sindyrl.runs import Run

    run = Run.create(config_from_dict({"env": {"id": "Pendulum-v1"}, "seed": 3}), root=tmp_path, name="pend")
    run.save_model("policy", pendulum_policy())
    assert main(["hil", str(run.path), "--board", "stm32f405", "--episodes", "1"]) == 0
    s = run.read_summary()
    assert s["hil_board"] == "stm32f405" and s["hil_protocol_errors"] == 0 and s["hil_return_rel_diff_max"] <= 1e-4


@pytest.mark.qemu
def test_microbit_fixed_point_against_soft_float(tmp_path):
    need_tools("microbit", with_qemu=True)
    runs = {}
    for real in ("fixed", "float"):  # fixed point is the default on a board without an FPU
        runs[real] = run_policy_hil(pendulum_policy(), pendulum_env, board="microbit", work_dir=tmp_path / real,
                                    episodes=3, seed=0, real=None if real == "fixed" else real, echo=lambda s: None)
        print(runs[real].format())
    fixed, soft = runs["fixed"], runs["float"]
    assert "sparse policy C in fixed arithmetic" in fixed.notes
    assert fixed.protocol_errors == 0 and soft.protocol_errors == 0
    assert soft.return_rel_diff_max <= 1e-4  # soft float is IEEE float32: Python's returns
    f, s = np.mean(fixed.returns), np.mean(soft.returns)
    assert abs(f - s) <= 0.02 * abs(s)
    assert fixed.instructions_per_call < soft.instructions_per_call


@pytest.mark.qemu
def test_microbit_fixed_point_object_uses_no_float_arithmetic(tmp_path):
    import subprocess

    from firmware_bridge.build import CORTEX_M0_FLAGS, STRICT_CFLAGS
    from firmware_bridge.codegen import generate_sparse_c

    need_tools("microbit")
    gen = generate_sparse_c(pendulum_policy(), "policy", tmp_path, real="fixed")
    obj = tmp_path / "policy.o"
    subprocess.run(["arm-none-eabi-gcc", *CORTEX_M0_FLAGS, *STRICT_CFLAGS, "-O2", "-c", str(gen.source),
                    f"-I{tmp_path}", "-o", str(obj)], check=True)
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True, check=True)
    # one int -> float conversion for each output; no soft-float add, multiply, compare or libm
    assert {ln.split()[-1] for ln in undefined.stdout.splitlines()} <= {"__aeabi_i2f", "memcpy"}


def guarded_reference(policy: SparseModel, margin: float):
    """The board's behaviour with the domain guard, in Python: the safe action (0) outside the widened bounds."""
    lo, hi = policy.input_bounds
    w = (hi - lo) * margin
    count = [0]

    def act(obs):
        x = np.asarray(obs, dtype=np.float32).astype(np.float64)
        if np.any(x < lo - w) or np.any(x > hi + w):
            count[0] += 1
            return np.zeros(1)
        return policy.evaluate(x)

    return act, count


@pytest.mark.parametrize("board", ["host", "stm32f405"])
def test_domain_guard_answers_out_of_bounds_inputs_with_the_safe_action(board, tmp_path):
    from sindyrl.evaluation import evaluate_policy

    need_tools("host" if board == "host" else "stm32f405", with_qemu=board != "host")
    narrow = pendulum_policy().with_coef(pendulum_policy().coef, input_bounds=(np.array([-1.0, -1.0, -2.0]),
                                                                               np.array([1.0, 1.0, 2.0])))
    report = run_policy_hil(narrow, pendulum_env, board=board, work_dir=tmp_path, episodes=2, seed=0, max_steps=100,
                            domain_guard=0.1, bench_calls=0, echo=lambda s: None)
    act, count = guarded_reference(narrow, 0.1)
    want = evaluate_policy(act, pendulum_env, n_episodes=2, seed=0, max_steps=100)
    assert report.domain_events == count[0] > 10  # |th_dot| > 2.4 is common in a swing
    assert report.protocol_errors == 0 and report.summary()["hil_domain_events"] == report.domain_events
    np.testing.assert_allclose(report.returns, want, rtol=1e-4)
    # without the define the same firmware sources act on every observation
    plain = run_policy_hil(narrow, pendulum_env, board=board, work_dir=tmp_path / "plain", episodes=1, seed=0,
                           max_steps=100, bench_calls=0, echo=lambda s: None)
    assert plain.domain_events == 0 and plain.return_rel_diff_max <= 1e-4
