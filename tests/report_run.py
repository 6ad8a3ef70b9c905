"""A small but real run directory for report, compare and browser tests, in a few seconds instead of a training.

Real parts: Pendulum-v1 data (3 random episodes), an E-SINDy dynamics model fitted on them (models/dynamics.json),
a 20-term sparse policy (models/policy.json), and real-env evaluations (returns and traces) of three simple
controllers. Stand-ins: metrics.csv (3 iterations) and the HIL/export figures, with plausible values.
"""

from __future__ import annotations

import itertools
import json

import numpy as np

from sindyrl.config import config_from_dict
from sindyrl.data import collect
from sindyrl.dynamics import SINDyDynamics
from sindyrl.evaluation import evaluate_policy
from sindyrl.runs import Run, atomic_write
from sindyrl.sparse import SparseModel

NAMES = ["cos_th", "sin_th", "th_dot"]


def _policy(seed: int) -> SparseModel:
    """u = -2 sin θ - 0.6 θ̇ + small cubic terms: every monomial of degree <= 3 (20 terms), all nonzero."""
    terms = [tuple((i, "pow", float(e)) for i, e in sorted(dict(zip(*np.unique(c, return_counts=True))).items()))
             for d in range(4) for c in itertools.combinations_with_replacement(range(3), d)]
    rng = np.random.default_rng(seed)
    coef = rng.uniform(-0.05, 0.05, (1, len(terms)))
    coef[0, terms.index(((1, "pow", 1.0),))] = -2.0
    coef[0, terms.index(((2, "pow", 1.0),))] = -0.6
    return SparseModel(NAMES, ["u"], terms, coef, output_bounds=(np.array([-2.0]), np.array([2.0])),
                       name="policy")


def make_report_run(root, name: str = "demo", seed: int = 0) -> Run:
    cfg = config_from_dict({
        "name": "pendulum", "seed": seed, "env": {"id": "Pendulum-v1"}, "reward": {"known": "pendulum"},
        "collect": {"random_steps": 600}, "dynamics": {"library": {"degree": 3, "control": "full"}, "n_models": 5,
                                                       "threshold": 1e-3},
        "dyna": {"iterations": 3, "eval_episodes": 5, "final_eval_episodes": 5}, "distill": {"eval_episodes": 5},
    })
    run = Run.create(cfg, root=root, name=name)
    spec = run.spec
    env = run.make_env(seed=seed)
    buf = collect(env, 600, seed=seed)
    env.close()
    buf.save(run.data_path)
    # the same split as the last Dyna iteration of a 3-iteration run (iteration 3: seed + 2)
    _, val = buf.split_episodes(cfg.dynamics.holdout, seed + 2)
    dyn = SINDyDynamics.from_config(cfg.dynamics, spec.obs_names, spec.action_names, spec.unit_pairs, seed).fit(buf,
                                                                                                            val)
    run.save_model("dynamics", dyn.model_)
    pol = _policy(seed)
    run.save_model("policy", pol)

    def neural(o):  # stands in for the network: the policy's linear part
        return np.clip([-2.0 * o[1] - 0.6 * o[2]], -2, 2)

    def mpc(o):
        return np.clip([-2.5 * o[1] - 0.8 * o[2]], -2, 2)

    n, s0 = 5, seed
    res = {}
    for label, act in (("neural", neural), ("sparse", pol.evaluate), ("mpc", mpc)):
        res[label] = evaluate_policy(act, run.make_env, n, seed=s0, keep_trace=True)
        run.save_trace(label, res[label].trace)
    rows = []
    for it in range(3):
        r = res["neural"] * (3 - it) / 1.5
        rows.append({"iteration": it + 1, "real_steps_fit": 200 * (it + 1), "real_steps_collect": 200 * (it + 2),
                     "real_steps_eval": 1000 * (it + 1), "surrogate_steps": 20000 * (it + 1),
                     "eval_return_mean": float(r.mean()), "eval_return_std": float(r.std()),
                     "eval_return_min": float(r.min()), "model_one_step_error": 0.01 / (it + 1),
                     "model_rollout_error": 0.1 / (it + 1), "dynamics_nnz": dyn.model_.nnz,
                     "dynamics_members": dyn.model_.n_models, "wall_seconds": 5.0 * (it + 1)})
    rows[-1]["real_steps_fit"] = len(buf)
    run.write_metrics(rows)
    nr, sr, mr = res["neural"], res["sparse"], res["mpc"]
    run.update_summary({
        "env_id": "Pendulum-v1", "algo": "ppo", "seed": seed, "real_steps_collect": len(buf),
        "real_steps_eval": 3000 + 1000, "eval_return_mean": float(nr.mean()), "eval_return_std": float(nr.std()),
        "eval_return_min": float(nr.min()), "eval_episodes": n, "eval_returns": nr.tolist(),
        "surrogate_return_mean": float(nr.mean()) * 0.9, "surrogate_return_min": float(nr.min()) * 0.9,
        "neural_policy_return_mean": float(nr.mean()), "neural_policy_return_std": float(nr.std()),
        "neural_policy_returns": nr.tolist(), "sparse_policy_return_mean": float(sr.mean()),
        "sparse_policy_return_std": float(sr.std()), "sparse_policy_returns": sr.tolist(),
        "sparse_policy_return_min": float(sr.min()), "neural_policy_params": 4481, "sparse_policy_nnz": pol.nnz,
        "distill_history": [{"pass": 1, "n_states": 20000, "nnz": pol.nnz, "val_mse": 0.05, "return_mean": -200.0}],
        "control_mpc_return_mean": float(mr.mean()), "control_mpc_return_std": float(mr.std()),
        "control_mpc_return_min": float(mr.min()),
        "hil_board": "qemu", "hil_policy": "sparse", "hil_return_mean": float(sr[:3].mean()),
        "hil_returns": sr[:3].tolist(), "hil_flash_bytes": 6828, "hil_ram_bytes": 10624,
        "hil_instructions_per_call": 125.0, "hil_latency_p50_ms": 0.95, "hil_max_action_diff": 1.9e-6,
        "onnx_parity_max_abs": 2.1e-6,
        "real_steps_distill": 2 * n * 200, "real_steps_control": n * 200, "real_steps_hil": 3 * 200,
        "real_steps_total": len(buf) + 4000 + 2 * n * 200 + n * 200 + 3 * 200,
        "skipped": {"robust": "no stages.robust section in the config"},
    })
    atomic_write(run.path / "control.json", json.dumps({
        "env_id": "Pendulum-v1", "seed": s0, "episodes": n,
        "controllers": {"mpc": {"label": "MPC (ipopt, horizon 30)", "return_mean": float(mr.mean()),
                                "return_std": float(mr.std()), "return_min": float(mr.min()),
                                "returns": mr.tolist(), "seed": s0, "episodes": n}}}))
    run.write_manifest()
    return run
