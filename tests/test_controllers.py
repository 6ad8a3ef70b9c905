"""Tests of controllers/: CasADi backend, LQR, MPC (ipopt, sqpmethod/qrqp), generated C, and bad input.

The Pendulum-v1 dynamics model is fitted once per session from real random-action
transitions (pysindy DiscreteSINDy, degree-3 polynomial library, STLSQ), and the
controllers are checked on the real gymnasium environment.
"""

from __future__ import annotations

import casadi as ca
import gymnasium as gym
import numpy as np
import pysindy as ps
import pytest

from controllers import (
    LQR,
    MPC,
    CompiledMPC,
    QuadraticCost,
    RewardCost,
    casadi_expr,
    casadi_function,
    find_equilibrium,
)
from sindyrl.data import collect
from sindyrl.evaluation import evaluate_policy
from sindyrl.sparse import SparseModel

OBS = ["cos_th", "sin_th", "th_dot"]
BOUNDS = ([-2.0], [2.0])
TARGET = [1.0, 0.0, 0.0]


def fit_pendulum_dynamics(n_episodes: int = 15, seed: int = 0) -> SparseModel:
    """Fit x[k+1] = f(x[k], u[k]) on random-action Pendulum-v1 transitions (episodes of 200 steps)."""
    buf = collect(gym.make("Pendulum-v1"), 200 * n_episodes, seed=seed)
    return fit_dynamics(buf.obs, buf.actions, buf.next_obs)


def fit_dynamics(X, U, Xn) -> SparseModel:
    X, U, Xn = (np.asarray(a, dtype=np.float64) for a in (X, U, Xn))
    fitted = ps.DiscreteSINDy(
        optimizer=ps.STLSQ(threshold=1e-3, alpha=1e-6), feature_library=ps.PolynomialLibrary(degree=3)
    ).fit(X, t=1, x_next=Xn, u=U, feature_names=OBS + ["u"])
    return SparseModel.from_pysindy(
        fitted, inputs=OBS + ["u"], outputs=OBS, unit_pairs=[(0, 1)], name="dynamics"
    )


@pytest.fixture(scope="session")
def dyn(seed) -> SparseModel:
    return fit_pendulum_dynamics(seed=seed)


def quad_cost() -> QuadraticCost:
    return QuadraticCost(TARGET, Q=[1.0, 1.0, 0.1], R=0.001, terminal_weight=[10.0, 10.0, 1.0])


def pendulum_reward_casadi(x, u):
    """Pendulum-v1's reward written with CasADi operations."""
    return -(ca.atan2(x[1], x[0]) ** 2 + 0.1 * x[2] ** 2 + 0.001 * u[0] ** 2)


class ResetHook(gym.Wrapper):
    """Calls ``hook()`` at every episode start, so a controller forgets its previous plan."""

    def __init__(self, env, hook):
        super().__init__(env)
        self.hook = hook

    def reset(self, **kwargs):
        self.hook()
        return self.env.reset(**kwargs)


def episodes(act, n: int, reset=None, steps: int | None = None) -> np.ndarray:
    def make_env():
        env = gym.make("Pendulum-v1")
        return env if reset is None else ResetHook(env, reset)

    return evaluate_policy(act, make_env, n_episodes=n, seed=0, max_steps=steps)


# ------------------------------------------------------------------ backend
def random_model(rng: np.random.Generator, n_in: int = 4, n_out: int = 3, n_terms: int = 14) -> SparseModel:
    kinds = ["pow", "sin", "cos"]
    terms: list = [()]
    while len(terms) < n_terms:
        t = []
        for _ in range(rng.integers(1, 4)):
            kind = kinds[rng.integers(3)]
            p = float(rng.integers(1, 4)) if kind == "pow" else float(rng.choice([0.5, 1.0, 2.0, 3.0]))
            t.append((int(rng.integers(n_in)), kind, p))
        terms.append(tuple(t))
    coef = rng.normal(size=(n_out, n_terms)) * (rng.random((n_out, n_terms)) < 0.7)
    return SparseModel([f"x{i}" for i in range(n_in)], [f"y{i}" for i in range(n_out)], terms, coef,
                       unit_pairs=[(0, 2)], output_bounds=([-0.9, -5.0, -0.8], [0.7, 5.0, 0.95]))


def test_casadi_backend_matches_evaluate_on_all_factor_kinds():
    rng = np.random.default_rng(1)
    for _ in range(5):
        m = random_model(rng)
        kinds = {f[1] for t in m.terms for f in t}
        assert kinds == {"pow", "sin", "cos"}
        Z = rng.uniform(-2.5, 2.5, size=(200, m.n_inputs))
        f = casadi_function(m).map(Z.shape[0])
        got = np.asarray(f(Z.T)).T
        want = m.evaluate(Z)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
        # clipping is active on some rows, renormalisation on all: the test exercises both
        assert np.any(np.isclose(want[:, 0], 0.7)) or np.any(np.isclose(want[:, 0], -0.9))


def test_casadi_backend_pendulum_model_split_and_mx(dyn):
    rng = np.random.default_rng(2)
    Z = rng.uniform([-1, -1, -8, -2], [1, 1, 8, 2], size=(100, 4))
    f = casadi_function(dyn, split=3)
    got = np.asarray(f.map(100)(Z[:, :3].T, Z[:, 3:].T)).T
    np.testing.assert_allclose(got, dyn.evaluate(Z), rtol=0, atol=1e-10)
    # renormalised (cos, sin) pair lies on the unit circle
    np.testing.assert_allclose(got[:, 0] ** 2 + got[:, 1] ** 2, 1.0, atol=1e-12)
    z = ca.MX.sym("z", 4)
    g = ca.Function("g", [z], [casadi_expr(dyn, z)])
    np.testing.assert_allclose(np.asarray(g(Z[0])).reshape(-1), dyn.evaluate(Z[0]), atol=1e-12)


def test_casadi_backend_bad_input(dyn):
    with pytest.raises(ValueError, match=r"expected \(4, 1\)"):
        casadi_expr(dyn, ca.SX.sym("x", 3))
    with pytest.raises(TypeError, match="SparseModel"):
        casadi_expr("not a model", ca.SX.sym("x", 4))
    with pytest.raises(ValueError, match="split"):
        casadi_function(dyn, split=7)


# ---------------------------------------------------------------------- LQR
def test_lqr_design_and_real_pendulum_from_100_angles(dyn):
    lqr = LQR(dyn, Q=[1.0, 1.0, 0.1], R=0.1, x_guess=TARGET, action_bounds=BOUNDS)
    x_eq = lqr.equilibrium.x
    assert abs(np.arctan2(x_eq[1], x_eq[0])) < 0.02 and abs(x_eq[2]) < 0.02
    assert lqr.equilibrium.residual < 1e-8
    assert lqr.stable and lqr.closed_loop_eigenvalues.shape == (3,)
    # the open-loop upright equilibrium is unstable: the design has work to do
    assert np.max(np.abs(np.linalg.eigvals(lqr.A))) > 1.0
    env = gym.make("Pendulum-v1").unwrapped
    rng = np.random.default_rng(0)
    final = []
    for i in range(100):
        env.reset(seed=i)
        env.state = np.array([rng.uniform(-0.2, 0.2), 0.0])
        obs = env._get_obs()
        for _ in range(200):
            obs, *_ = env.step(lqr.act(obs).astype(np.float32))
        final.append(abs(np.arctan2(obs[1], obs[0])))
    assert np.mean(np.asarray(final) < 0.05) >= 0.95


def test_lqr_zero_gain_would_fail(dyn):
    # the same check with u = 0 must fail, or the test above proves nothing
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    env.state = np.array([0.1, 0.0])
    for _ in range(200):
        obs, *_ = env.step(np.zeros(1, dtype=np.float32))
    assert abs(np.arctan2(obs[1], obs[0])) > 0.05


def test_equilibrium_given_state_solves_for_action(dyn):
    # the learned model is an equilibrium at the true one only up to its own fitting error (about 1e-3 per step
    # on random-action data: cos/sin of the angle step are cubic approximations), whatever the seed
    eq = find_equilibrium(dyn, x=TARGET, tol=1e-3)
    assert eq.residual < 1e-3 and abs(eq.u[0]) < 0.05
    lqr = LQR(dyn, x_eq=TARGET, action_bounds=BOUNDS, tol=1e-3)
    np.testing.assert_allclose(lqr.u_eq, eq.u)
    # u = u* - K (x - x*) at x* is u*
    np.testing.assert_allclose(lqr.act(lqr.x_eq), lqr.u_eq)


def test_lqr_bad_input(dyn):
    with pytest.raises(ValueError, match="no equilibrium"):
        LQR(dyn, x_eq=[1.0, 0.0, 1.0])  # spinning at 1 rad/s is not a fixed point
    with pytest.raises(ValueError, match="no equilibrium"):
        find_equilibrium(dyn, x=[0.0, 1.0, 0.0], action_bounds=BOUNDS)  # horizontal needs |u| > 2
    with pytest.raises(ValueError, match=r"action_bounds.*shape \(1,\)"):
        LQR(dyn, x_guess=TARGET, action_bounds=([-2.0, -2.0], [2.0, 2.0]))
    with pytest.raises(ValueError, match="positive definite"):
        LQR(dyn, x_guess=TARGET, R=0.0)
    with pytest.raises(ValueError, match=r"LQR Q must be"):
        LQR(dyn, x_guess=TARGET, Q=np.ones((2, 2)))
    with pytest.raises(ValueError, match="x_eq .* or x_guess"):
        LQR(dyn)
    with pytest.raises(ValueError, match="not a dynamics model"):
        LQR(dyn.with_coef(dyn.coef, outputs=["a", "b", "c"]), x_guess=TARGET)
    lqr = LQR(dyn, x_guess=TARGET)
    with pytest.raises(ValueError, match="observation has shape"):
        lqr.act([1.0, 0.0])


# ---------------------------------------------------------------------- MPC
def test_mpc_swings_up_real_pendulum_fast(dyn):
    mpc = MPC(dyn, quad_cost(), horizon=30, action_bounds=BOUNDS)
    rets = episodes(mpc.act, 3, reset=mpc.reset)
    assert rets.min() >= -260 and rets.mean() >= -200, rets
    assert mpc.failures <= 10


@pytest.mark.slow
def test_mpc_20_episodes_mean_return(dyn):
    mpc = MPC(dyn, quad_cost(), horizon=30, action_bounds=BOUNDS)
    rets = episodes(mpc.act, 20, reset=mpc.reset)
    assert rets.mean() >= -200, rets


def test_mpc_with_reward_model_and_callable_cost(dyn):
    # Pendulum's reward in (cos, sin, th_dot, u) except th^2 -> 2 (1 - cos th): exactly a sparse polynomial
    reward = SparseModel(OBS + ["u"], ["r"], [(), ((0, "pow", 1),), ((2, "pow", 2),), ((3, "pow", 2),)],
                         np.array([[-2.0, 2.0, -0.1, -0.001]]), name="reward")
    for cost in (RewardCost(reward), RewardCost(pendulum_reward_casadi)):
        mpc = MPC(dyn, cost, horizon=30, action_bounds=BOUNDS)
        rets = episodes(mpc.act, 1, reset=mpc.reset)
        assert rets[0] >= -200, rets


def test_mpc_statistics_plan_and_warm_start(dyn):
    mpc = MPC(dyn, quad_cost(), horizon=20, action_bounds=BOUNDS)
    x0 = np.array([np.cos(2.5), np.sin(2.5), 0.0])
    u, st = mpc.act(x0, return_stats=True)
    assert st.success and not st.fallback and st.iterations > 0 and st.solve_time > 0
    assert st.plan_u.shape == (20, 1) and st.plan_x.shape == (21, 3)
    np.testing.assert_allclose(st.plan_x[0], x0, atol=1e-12)
    np.testing.assert_allclose(u, st.plan_u[0])
    assert np.all(np.abs(st.plan_u) <= 2.0 + 1e-9)
    # the plan obeys the model
    pred = dyn.evaluate(np.hstack([st.plan_x[:-1], st.plan_u]))
    np.testing.assert_allclose(pred, st.plan_x[1:], atol=1e-6)
    # warm-started next step from the predicted state needs fewer iterations than the cold start
    _, st2 = mpc.act(st.plan_x[1], return_stats=True)
    assert st2.success and st2.iterations < st.iterations


def test_mpc_sqpmethod_agrees_with_ipopt(dyn):
    x0 = np.array([np.cos(0.4), np.sin(0.4), -0.5])
    a = MPC(dyn, quad_cost(), horizon=20, action_bounds=BOUNDS, solver="ipopt")
    b = MPC(dyn, quad_cost(), horizon=20, action_bounds=BOUNDS, solver="sqpmethod")
    sa, sb = a.solve(x0), b.solve(x0)
    assert sa.success and sb.success
    # two local solvers, same local optimum (up to their tolerances)
    np.testing.assert_allclose(sb.plan_u[0], sa.plan_u[0], atol=1e-3)
    np.testing.assert_allclose(sb.plan_u, sa.plan_u, atol=1e-2)
    assert abs(sa.cost - sb.cost) < 1e-5 * max(1.0, abs(sa.cost))


def test_mpc_infeasible_falls_back_to_previous_plan(dyn):
    mpc = MPC(dyn, quad_cost(), horizon=15, action_bounds=BOUNDS, state_bounds=([-2, -2, -3], [2, 2, 3]))
    u0, s0 = mpc.act([np.cos(0.3), np.sin(0.3), 0.0], return_stats=True)
    assert s0.success and mpc.failures == 0
    # 7 rad/s cannot be brought under 3 rad/s in one step with |u| <= 2: infeasible
    fast = [np.cos(0.3), np.sin(0.3), 7.0]
    u1, s1 = mpc.act(fast, return_stats=True)
    assert not s1.success and s1.fallback and mpc.failures == 1
    np.testing.assert_allclose(u1, s0.plan_u[1])
    u2, s2 = mpc.act(fast, return_stats=True)
    np.testing.assert_allclose(u2, s0.plan_u[2])
    assert mpc.failures == 2 and s2.failures == 2
    # the loop keeps going on the real env even when every step is infeasible
    impossible = MPC(dyn, quad_cost(), horizon=10, action_bounds=BOUNDS, state_bounds=([-2, -2, 50], [2, 2, 60]),
                     max_iter=20)
    rets = episodes(impossible.act, 1, steps=20)
    assert np.isfinite(rets[0]) and impossible.failures == 20


def test_mpc_bad_input(dyn):
    for h in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="horizon must be a positive integer"):
            MPC(dyn, quad_cost(), horizon=h)
    with pytest.raises(ValueError, match=r"action_bounds: low and high must have shape \(1,\)"):
        MPC(dyn, quad_cost(), action_bounds=([-2, -2], [2, 2]))
    with pytest.raises(ValueError, match=r"state_bounds: low and high must have shape \(3,\)"):
        MPC(dyn, quad_cost(), state_bounds=([-1, -1], [1, 1]))
    with pytest.raises(ValueError, match="low <= high"):
        MPC(dyn, quad_cost(), action_bounds=([2.0], [-2.0]))
    with pytest.raises(ValueError, match="pair"):
        MPC(dyn, quad_cost(), action_bounds=[-2.0])
    with pytest.raises(ValueError, match=r"target has shape \(2,\)"):
        MPC(dyn, QuadraticCost([1.0, 0.0]))
    with pytest.raises(ValueError, match="solver"):
        MPC(dyn, quad_cost(), solver="snopt")
    with pytest.raises(TypeError, match="Cost"):
        MPC(dyn, lambda x, u: 0)
    with pytest.raises(ValueError, match="reward model .* 3 inputs"):
        MPC(dyn, RewardCost(SparseModel(OBS, ["r"], [()], [[1.0]])))
    mpc = MPC(dyn, quad_cost(), horizon=5)
    with pytest.raises(ValueError, match="observation has shape"):
        mpc.act([1.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        mpc.act([np.nan, 0.0, 0.0])


# ------------------------------------------------------------ generated C
def test_generated_c_mpc_agrees_with_python(dyn, tmp_path):
    py = MPC(dyn, quad_cost(), horizon=15, action_bounds=BOUNDS, solver="sqpmethod")
    c = CompiledMPC.from_mpc(py, build_dir=tmp_path, cflags=("-O1",))
    assert c.library_path.is_file() and c.library_path.parent == tmp_path
    src = c.source_path.read_text()
    assert src.startswith("/* Generated by sindyrl") and dyn.content_hash() in src.splitlines()[0]
    assert "malloc" not in src
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=3)
    n_ok = 0
    for _ in range(25):
        up, sp = py.act(obs, return_stats=True)
        uc, sc = c.act(obs, return_stats=True)
        assert sp.success == sc.success
        if sp.success:
            n_ok += 1
            np.testing.assert_allclose(sc.plan_u, sp.plan_u, atol=1e-8)
            np.testing.assert_allclose(sc.plan_x, sp.plan_x, atol=1e-8)
        np.testing.assert_allclose(uc, up, atol=1e-8)
        obs, *_ = env.step(up.astype(np.float32))
    assert n_ok >= 20
    with pytest.raises(ValueError, match="sqpmethod"):
        CompiledMPC.from_mpc(MPC(dyn, quad_cost(), horizon=5), build_dir=tmp_path / "x")  # ipopt


# ------------------------------------------------------- command and stage
@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    from sindyrl.config import config_from_dict
    from sindyrl.data import collect
    from sindyrl.runs import Run

    cfg = config_from_dict({"env": {"id": "Pendulum-v1"}, "reward": {"known": "pendulum"}, "seed": 0})
    run = Run.create(cfg, root=tmp_path_factory.mktemp("runs"), name="pendulum")
    env = run.make_env()
    buf = collect(env, 3000, seed=0)
    env.close()
    buf.save(run.data_path)
    run.save_model("dynamics", fit_dynamics(buf.obs, buf.actions, buf.next_obs))
    # a linear sparse policy and an RL evaluation result, so the comparison table has its other rows
    lqr = LQR(run.load_model("dynamics"), x_guess=TARGET, action_bounds=BOUNDS)
    k = lqr.K[0]
    policy = SparseModel(OBS, ["u"], [(), ((0, "pow", 1),), ((1, "pow", 1),), ((2, "pow", 1),)],
                         np.array([[k @ lqr.x_eq, -k[0], -k[1], -k[2]]]), output_bounds=BOUNDS, name="policy")
    run.save_model("policy", policy)
    run.update_summary({"eval_return_mean": -150.0, "eval_return_std": 80.0, "eval_return_min": -300.0,
                        "eval_episodes": 20, "seed": 0})
    return run


def test_control_command_writes_results(pendulum_run):
    import json

    from sindyrl.cli import main

    run = pendulum_run
    assert main(["control", str(run.path), "--method", "mpc", "--horizon", "25", "--episodes", "2"]) == 0
    assert main(["control", str(run.path), "--method", "lqr", "--episodes", "2"]) == 0
    s = run.read_summary()
    assert s["control_mpc_return_mean"] >= -200 and s["control_mpc_episodes"] == 2 and s["control_mpc_horizon"] == 25
    assert s["control_mpc_step_ms"] > 0 and s["control_lqr_spectral_radius"] < 1.0
    # LQR is local: from the env's random initial states it does not swing up, and MPC does far better
    assert s["control_lqr_return_mean"] < s["control_mpc_return_mean"]
    doc = json.loads((run.path / "control.json").read_text())
    rows = doc["controllers"]
    assert set(rows) == {"mpc", "lqr", "neural_policy", "sparse_policy"}
    assert rows["mpc"]["cost"].startswith("negative reward pendulum_reward")
    assert len(rows["mpc"]["returns"]) == 2 and rows["sparse_policy"]["return_mean"] < -300
    md = (run.path / "control.md").read_text()
    assert "| MPC (ipopt, horizon 25) | 2 (0) |" in md and "LQR (learned model)" in md and "sparse policy" in md


def test_control_stage_quadratic_cost_and_generated_c(pendulum_run):
    from controllers.stage import control

    out = control(pendulum_run, method="mpc", horizon=12, n_episodes=1, solver="c", cost="quadratic",
                  target=TARGET, compare=False, echo=lambda *a: None)
    assert out["control_mpc_c_return_mean"] >= -200
    assert list((pendulum_run.path / "controllers" / "build").glob("lib*.so"))


def test_control_stage_for_the_pipeline(pendulum_run):
    from controllers.stage import stage

    out = stage(pendulum_run, methods=["lqr"], n_episodes=1, compare=False, echo=lambda *a: None)
    assert set(out) >= {"control_lqr_return_mean", "control_lqr_step_ms", "control_lqr_spectral_radius"}
    assert out["real_steps_control"] == 200  # one LQR episode of Pendulum-v1
    with pytest.raises(ValueError, match=r"unknown key stages\.control\.horizn"):
        stage(pendulum_run, horizn=10)
    with pytest.raises(ValueError, match=r"stages\.control\.methods\[0\]: 'pid' is not one of"):
        stage(pendulum_run, methods=["pid"])


def test_command_choices_match_the_stage():
    from controllers import commands
    from controllers import stage as control_stage

    assert (commands.METHODS, commands.MPC_SOLVERS, commands.COSTS) == (
        control_stage.METHODS, control_stage.MPC_SOLVERS, control_stage.COSTS)


def test_control_bad_input(pendulum_run, capsys):
    from controllers.stage import control
    from sindyrl.cli import main

    with pytest.raises(SystemExit):
        main(["control", str(pendulum_run.path), "--horizon", "0"])
    with pytest.raises(ValueError, match="target has 2 values"):
        control(pendulum_run, method="lqr", target=[1.0, 0.0])
    with pytest.raises(ValueError, match="method"):
        control(pendulum_run, method="pid")
    assert main(["control", str(pendulum_run.path / "nothing")]) != 0
    assert "run directory not found" in capsys.readouterr().err


# ------------------------------------------------------------------ example
def test_example_control_design_runs_on_a_tiny_budget():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    r = subprocess.run(
        [sys.executable, "examples/control_design.py", "--random-steps", "1500", "--episodes", "1", "--max-steps",
         "60", "--horizon", "10", "--lqr-starts", "10"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "LQR from 10 starts within 0.2 rad: 100% end within 0.05 rad" in out
    assert "generated C vs Python sqpmethod on the same states: max |du| = 0.0e+00" in out or (
        "max |du| = " in out and float(out.split("max |du| = ")[1].split(";")[0]) < 1e-8)


# --------------------------------------- a system the stage has never seen
# tests/toy_envs.py: "module:Class" linear systems with "module:function" numpy rewards that have no CasADi
# form and no known target; the stage must build its cost, equilibrium and constraints from the run alone.
def toy_run(root, env: str, reward: str, seed: int, steps: int = 1000):
    from sindyrl.config import LibraryConfig, config_from_dict
    from sindyrl.data import collect
    from sindyrl.regression import fit_sparse_regression
    from sindyrl.runs import Run

    cfg = config_from_dict({"env": {"id": f"toy_envs:{env}"}, "reward": {"known": f"toy_envs:{reward}"},
                            "seed": seed})
    run = Run.create(cfg, root=root, name=env)
    buf = collect(run.make_env(), steps, seed=seed)
    buf.save(run.data_path)
    model, _ = fit_sparse_regression(buf.obs, buf.actions, buf.next_obs, LibraryConfig(degree=1),
                                     run.obs_names + run.action_names, run.obs_names, 0.02, 1e-5, 1, seed,
                                     discrete_time=True, name="dynamics")
    run.save_model("dynamics", model)
    return run


def zero_action_return(run, n: int, seed: int) -> float:
    return float(evaluate_policy(lambda o: np.zeros(1), run.make_env, n_episodes=n, seed=seed).mean())


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))  # toy_envs, as a "module:Class" env id names it
    return tmp_path_factory.mktemp("toy_runs")


def test_control_stage_without_target_finds_the_steady_state_the_reward_prefers(toy_dir, seed):
    import json

    import toy_envs

    from controllers.stage import stage

    run = toy_run(toy_dir / f"peaked{seed}", "PeakedEnv", "peaked_reward", seed)
    lines: list[str] = []
    out = stage(run, n_episodes=3, horizon=20, compare=False, echo=lambda *a: lines.append(" ".join(map(str, a))))
    # the analytic optimum over the steady states x = (u / 2, 0): u* = 0.857, x* = (0.429, 0)
    np.testing.assert_allclose(out["control_steady_state_x"], toy_envs.PeakedEnv.STEADY_X, atol=1e-3)
    np.testing.assert_allclose(out["control_steady_state_u"], toy_envs.PeakedEnv.STEADY_U, atol=1e-3)
    assert any("steady state the reward prefers" in ln for ln in lines)
    # the reward model is exact here (a quadratic in a degree-2 library) and is the MPC cost
    assert out["control_reward_fit_accurate"] and out["control_reward_fit_heldout_error"] < 1e-6
    doc = json.loads((run.path / "control.json").read_text())
    assert doc["controllers"]["mpc"]["cost"] == "negative learned reward model 'reward_fit'"
    np.testing.assert_allclose(doc["controllers"]["lqr"]["equilibrium_x"], toy_envs.PeakedEnv.STEADY_X, atol=1e-3)
    assert doc["steady_state"]["found"] and doc["reward_fit"]["path"] == "models/reward_fit.json"
    assert run.load_model("reward_fit").metadata["accurate"] is True
    # both beat doing nothing on the real env (the zero action lets the state decay to the origin)
    zero = zero_action_return(run, 3, seed)
    assert out["control_lqr_return_mean"] > zero + 5 and out["control_mpc_return_mean"] > zero + 5
    assert out["real_steps_control"] == 2 * 3 * 50


def test_reward_fit_is_checked_on_held_out_episodes(toy_dir, seed):
    import toy_envs

    from controllers.reward_fit import MAX_HELDOUT_ERROR, fit_known_reward

    buf = collect(toy_envs.PeakedEnv(), 1000, seed=seed)
    fit = fit_known_reward(toy_envs.peaked_reward, buf, ["x0", "x1"], ["u0"], seed=seed)
    assert fit.accurate and fit.heldout_error < 1e-6 and fit.max_error == MAX_HELDOUT_ERROR == 0.1
    assert fit.n_train + fit.n_heldout == len(buf) and fit.n_heldout >= 100  # whole episodes held out
    got = fit.model.evaluate(np.concatenate([buf.obs, buf.actions], axis=1))[:, 0]
    np.testing.assert_allclose(got, toy_envs.peaked_reward(buf.obs, buf.actions, buf.next_obs), atol=1e-6)
    # a step reward: a polynomial model misses it by far on the held-out episodes
    bad = fit_known_reward(toy_envs.notched_reward, buf, ["x0", "x1"], ["u0"], seed=seed)
    assert not bad.accurate and bad.heldout_error > 0.3 and "not accurate" in bad.describe()
    with pytest.raises(ValueError, match="returned shape"):
        fit_known_reward(lambda o, a, n: np.zeros(3), buf, ["x0", "x1"], ["u0"])
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_known_reward(lambda o, a, n: np.full(len(o), np.nan), buf, ["x0", "x1"], ["u0"])


def test_a_reward_that_cannot_be_fitted_falls_back_to_tracking_with_a_message(toy_dir, seed):
    import json

    from controllers.stage import control

    run = toy_run(toy_dir / f"notched{seed}", "NotchedEnv", "notched_reward", seed)
    lines: list[str] = []
    out = control(run, method="mpc", horizon=20, n_episodes=3, compare=False,
                  echo=lambda *a: lines.append(" ".join(map(str, a))))
    assert any("not accurate enough to be the MPC cost" in ln for ln in lines)
    assert out["control_reward_fit_accurate"] is False
    row = json.loads((run.path / "control.json").read_text())["controllers"]["mpc"]
    assert row["cost"].startswith("quadratic tracking of")
    # the tracked steady state earns the reward (1 inside the notch around x0 = 0.6)
    assert out["control_steady_state_reward"] == 1.0
    assert out["control_mpc_return_mean"] > zero_action_return(run, 3, seed) + 10
    with pytest.raises(ValueError, match="not accurate enough"):
        control(run, method="mpc", cost="reward", n_episodes=1, compare=False, echo=lambda *a: None)


def test_no_steady_state_skips_with_the_reason(toy_dir, seed):
    from controllers.stage import stage
    from sindyrl.stage_options import StageSkipped

    run = toy_run(toy_dir / f"drift{seed}", "DriftEnv", "drift_reward", seed, steps=400)
    with pytest.raises(StageSkipped, match=r"LQR: LQR needs an equilibrium.*no steady state f\(x, u\) = x"):
        stage(run, n_episodes=1, compare=False, echo=lambda *a: None)


def test_mpc_starts_from_a_guess_inside_the_model_data_box():
    """An unstable cubic model left open-loop overflows within the horizon: the first guess must stay inside
    the model's data box, or ipopt stops at its first iterate on NaN residuals (InvertedDoublePendulum)."""
    model = SparseModel(["x", "u"], ["x"], [((0, "pow", 1),), ((0, "pow", 3),), ((1, "pow", 1),)],
                        [[1.5, 0.5, 1.0]], input_bounds=([-2.0, -1.0], [2.0, 1.0]), name="dynamics")
    cost = QuadraticCost([0.0], Q=[1.0], R=0.01)
    mpc = MPC(model, cost, horizon=30, action_bounds=([-1.0], [1.0]))
    guess = mpc.rollout_guess(np.array([0.3]))
    xs = guess[np.concatenate([mpc._ix[k] for k in range(31)])]
    assert np.all(np.isfinite(xs)) and xs.max() == 2.0  # open-loop it leaves the box: held at its edge
    with np.errstate(over="ignore", invalid="ignore"):
        free = [np.float64(0.3)]
        for _ in range(30):
            free.append(1.5 * free[-1] + 0.5 * free[-1] ** 3)
    assert not np.isfinite(free[-1])  # what the unclipped guess would have been
    stats = mpc.solve([0.3])
    assert stats.success and abs(stats.plan_x[-1, 0]) < 1e-2, stats.status


def test_mpc_soft_box_keeps_the_predicted_states_inside():
    # LinearEnv's dynamics; a reward that pulls x0 to 0.6, a box that stops it at 0.3
    A, B = np.array([[1.0, 0.1], [-0.2, 0.95]]), np.array([0.0, 0.1])
    model = SparseModel(["x0", "x1", "u"], ["x0", "x1"], [((0, "pow", 1),), ((1, "pow", 1),), ((2, "pow", 1),)],
                        np.column_stack([A, B]), name="dynamics")

    def reward(x, u):
        return -((x[0] - 0.6) ** 2 + x[1] ** 2 + 0.1 * u[0] ** 2)

    box = ([-np.inf, -np.inf], [0.3, np.inf])
    free = MPC(model, RewardCost(reward), horizon=40, action_bounds=([-1.0], [1.0]))
    boxed = MPC(model, RewardCost(reward), horizon=40, action_bounds=([-1.0], [1.0]), soft_state_bounds=box,
                soft_state_scale=[2.0, 2.0])
    assert "soft state box x0 in [-inf, 0.3] (penalty 10000" in boxed.describe()
    for x0 in ([0.0, 0.0], [-0.5, 0.3], [0.2, 0.1]):
        s_free, s_box = free.solve(x0), boxed.solve(x0)
        assert s_free.success and s_box.success
        assert s_free.plan_x[1:, 0].max() > 0.38
        assert s_box.plan_x[1:, 0].max() <= 0.3 + 1e-3
    # moving fast towards the edge, no action can stop x0 before 0.319 (u = -1 throughout): the soft box keeps
    # the problem feasible and the overshoot at that least one
    s_box = boxed.solve([0.25, 0.4])
    assert s_box.success and 0.3 < s_box.plan_x[1:, 0].max() <= 0.3191 + 1e-3
    np.testing.assert_allclose(s_box.plan_u[:2, 0], -1.0, atol=1e-4)
    with pytest.raises(ValueError, match="soft_state_scale"):
        MPC(model, RewardCost(reward), horizon=5, soft_state_bounds=box, soft_state_scale=[1.0, 0.0])
    with pytest.raises(ValueError, match="soft_state_weight"):
        MPC(model, RewardCost(reward), horizon=5, soft_state_bounds=box, soft_state_weight=-1.0)


def test_control_stage_keeps_mpc_inside_the_episode_end_box(toy_dir, seed):
    import toy_envs

    from controllers.stage import stage
    from controllers.termination_box import termination_box

    run = toy_run(toy_dir / f"boxed{seed}", "BoxedEnv", "alive_peaked_reward", seed, steps=1500)
    box = termination_box(run)  # fitted to the data's terminated flags: x0 > ~0.3
    assert box is not None and 0.25 < box.high[0] <= toy_envs.BoxedEnv.X0_MAX and np.isinf(box.high[1])
    lines: list[str] = []
    out = stage(run, n_episodes=3, horizon=20, compare=False, echo=lambda *a: lines.append(" ".join(map(str, a))))
    assert out["control_mpc_termination_constraint"] is True
    assert out["control_lqr_equilibrium_inside_termination_box"] is False  # x0* = 0.43 > 0.3
    assert any("MPC keeps its predicted states in the episode-end box" in ln for ln in lines)
    trace = np.load(run.path / "traces" / "mpc.npz")
    assert trace["obs"][:, 0].max() <= toy_envs.BoxedEnv.X0_MAX  # the real episode did not end
    # the same MPC without the box runs into the episode end
    doc_cost = RewardCost(run.load_model("reward_fit"))
    free = MPC(run.load_model("dynamics"), doc_cost, horizon=20, action_bounds=([-1.0], [1.0]))
    free_ret = evaluate_policy(free.act, run.make_env, n_episodes=3, seed=seed).mean()
    assert out["control_mpc_return_mean"] > free_ret + 5


def test_builtin_box_forms_agree_with_the_builtin_terminations():
    from controllers.termination_box import BUILTIN_BOXES, box_from_conditions
    from sindyrl.termination import BUILTIN_TERMINATIONS

    rng = np.random.default_rng(0)
    X = rng.uniform(-0.5, 0.5, size=(2000, 4))
    for key, conds in BUILTIN_BOXES.items():
        box = box_from_conditions(conds, 4, key)
        inside = np.all((X >= box.low) & (X <= box.high), axis=1)
        np.testing.assert_array_equal(~inside, BUILTIN_TERMINATIONS[key](X, None, X))
