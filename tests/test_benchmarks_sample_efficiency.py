"""benchmarks/sample_efficiency.py end to end with --quick (Pendulum only, tiny budgets), and its aggregation."""

import json
from pathlib import Path

import pytest
from bench_tools import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _load():
    return load_benchmark('sample_efficiency')


def test_quick_benchmark_writes_results_plot_and_table(tmp_path, capsys):
    se = _load()
    out = tmp_path / "results"
    args = se.Args(quick=True, out_dir=str(out), runs_dir=str(tmp_path / "runs"))
    res = se.main(args)
    data = json.loads((out / "sample_efficiency.json").read_text())
    assert [(t["method"], t["seed"]) for t in data["trials"]] == [("sindy", 0), ("nn", 0), ("ppo", 0), ("sac", 0)]
    for t in data["trials"]:
        steps = [s for s, _ in t["curve"]]
        assert steps == sorted(steps) and len(steps) >= 2
        if t["method"] in ("ppo", "sac"):
            assert steps[-1] == t["real_steps"]  # the final evaluation is the last point
        assert t["wall_seconds"] > 0 and t["final_return"] < 0  # Pendulum returns are negative
    sindy = next(t for t in data["trials"] if t["method"] == "sindy")
    assert sindy["real_steps"] == 300 and [s for s, _ in sindy["curve"]] == [200, 300]
    assert 0 < sindy["sparse_policy_nnz"] < sindy["neural_policy_params"]
    # the low-data budget: one Dyna run with its own schedule, spending exactly the budget, MPC on its model
    low = {(t["method"], t["budget"]): t for t in data["low_data_trials"]}
    assert set(low) == {("sindy", 150), ("nn", 150), ("ppo", None), ("sac", None)}
    for m in ("sindy", "nn"):
        assert low[m, 150]["real_steps"] == 150 and low[m, 150]["batches"] == [50, 50, 0]
    assert low["sindy", 150]["mpc"]["real_steps"] == 150 and low["sindy", 150]["mpc"]["return"] < 0
    assert "150" in low["sac", None]["returns"] and "150" in low["ppo", None]["returns"]
    cells = res["low_data"]["pendulum"]["methods"]
    assert set(cells) == {"sindy", "nn", "mpc", "sac", "ppo"} and cells["mpc"]["150"]["seeds"] == [0]
    agg = res["aggregate"]["pendulum"]
    assert set(agg["methods"]) == {"sindy", "nn", "ppo", "sac"} and set(agg["ratios"]) == {"ppo", "sac", "nn"}
    assert (out / "sample_efficiency.png").stat().st_size > 5000
    md = capsys.readouterr().out
    assert "Pendulum-v1" in md and "| sindyrl Dyna (E-SINDy) | 1 | 300 |" in md and "Compactness" in md
    assert "low-data budgets" in md and "| MPC on the learned sparse model | 1 |" in md and "no action repeat" in md
    # a restart reuses every stored trial (nothing is trained again); with --write-docs it rewrites the section of
    # the --docs file and writes results/sample_efficiency.json beside it: a copy here, the real docs stay as they are
    real_docs, real_json = ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "results" / "sample_efficiency.json"
    before = (real_docs.read_text(), real_json.read_text() if real_json.exists() else None)
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text(before[0])
    again = se.main(se.dataclasses.replace(args, write_docs=True, docs=str(docs)))
    assert again["trials"] == res["trials"]
    assert (real_docs.read_text(), real_json.read_text() if real_json.exists() else None) == before
    section = docs.read_text().split("<!-- sample_efficiency:start -->")[1].split("<!-- sample_efficiency:end -->")[0]
    assert "| sindyrl Dyna (E-SINDy) | 1 | 300 |" in section and "--quick" in section
    low = docs.read_text().split("<!-- sample_efficiency_low_data:start -->")[1].split(
        "<!-- sample_efficiency_low_data:end -->")[0]
    assert "| MPC on the learned sparse model | 1 |" in low and "no action repeat" in low
    written = json.loads((tmp_path / "docs" / "results" / "sample_efficiency.json").read_text())
    assert written["command"] == "python benchmarks/sample_efficiency.py --quick"
    fig = written["figures"]
    assert fig["pendulum.sindy.real_steps"] == 300 and fig["pendulum.sindy.return_at.300"] < 0
    assert fig["pendulum.sindy.sparse_policy_nnz"] == sindy["sparse_policy_nnz"]
    assert {"pendulum.steps_to_threshold_ratio.sac", "pendulum.sac.final_return"} <= set(fig)
    assert fig["pendulum_low_data.sindy.150.mean"] == cells["sindy"]["150"]["mean"]
    # a changed SAC budget reruns the SAC trial only
    se.QUICK["pendulum"]["sac"] = {**se.QUICK["pendulum"]["sac"], "steps": 200, "eval_every": 100}
    third = se.main(args)
    assert third["trials"][:3] == res["trials"][:3]
    assert third["trials"][3]["real_steps"] == 200 and third["trials"][3]["settings"]["sac"]["steps"] == 200


def test_aggregation_steps_to_threshold_and_ratios():
    se = _load()
    st = {"threshold": -200.0, "budgets": [1000, 5000], "env_id": "Pendulum-v1"}
    trials = [
        {"task": "p", "method": "sindy", "seed": 0, "curve": [[500, -900], [1000, -150]], "final_return": -150,
         "real_steps": 1000, "wall_seconds": 1.0},
        {"task": "p", "method": "sac", "seed": 0, "curve": [[1000, -800], [4000, -190], [5000, -150]],
         "final_return": -150, "real_steps": 5000, "wall_seconds": 2.0},
        {"task": "p", "method": "ppo", "seed": 0, "curve": [[2000, -900], [6000, -800]], "final_return": -800,
         "real_steps": 6000, "wall_seconds": 2.0},
    ]
    agg = se.aggregate(trials, {"p": st})["p"]
    assert agg["methods"]["sindy"]["steps_to_threshold"][0] == 1000
    assert agg["methods"]["sac"]["at_budget"]["1000"][0] == -800
    assert agg["ratios"]["sac"]["ratio"] == pytest.approx(4.0)
    assert agg["ratios"]["ppo"]["ratio"] is None and agg["ratios"]["ppo"]["lower_bound"] == pytest.approx(6.0)
    # the lowest final return of the sindyrl seeds (-150): sindyrl first reached it at 1,000, SAC at 5,000, PPO never
    assert agg["match"]["level"] == -150 and agg["match"]["sindy_steps"] == 1000
    assert agg["match"]["ratios"]["sac"]["ratio"] == pytest.approx(5.0)
    assert agg["match"]["ratios"]["ppo"]["lower_bound"] == pytest.approx(6.0)
    assert se.return_at([[10, 1.0]], 5) is None


def test_stored_trial_is_redistilled_only_when_the_distillation_settings_changed():
    se = _load()
    st = se.task_settings("pendulum", quick=True)
    args = se.Args(quick=True)
    current = se.dataclasses.asdict(se.dyna_config("pendulum", "sindy", 0, st).distill)
    trial = {"task": "pendulum", "method": "sindy", "seed": 0, "distill_settings": json.loads(json.dumps(current))}
    assert not se._stale_distillation(trial, st, args)
    assert se._stale_distillation({**trial, "distill_settings": {**current, "n_rollouts": 1}}, st, args)
    assert se._stale_distillation({k: v for k, v in trial.items() if k != "distill_settings"}, st, args)
    assert not se._stale_distillation({**trial, "method": "ppo", "distill_settings": None}, st, args)
    assert not se._stale_distillation({**trial, "distill_settings": None}, st, se.Args(quick=True, distill=False))


def test_trial_settings_are_per_method():
    se = _load()
    st = se.task_settings("pendulum", quick=False)
    other_sac = {**st, "sac": {**st["sac"], "steps": 1}}
    # a new SAC budget invalidates the SAC trials only; a new threshold or table budget invalidates nothing
    assert se.trial_settings("sac", other_sac) != se.trial_settings("sac", st)
    for m in ("sindy", "nn", "ppo"):
        assert se.trial_settings(m, other_sac) == se.trial_settings(m, st)
    table_only = {**st, "threshold": 0.0, "budgets": [1]}
    assert all(se.trial_settings(m, table_only) == se.trial_settings(m, st) for m in se.METHODS)
    assert se.trial_settings("nn", {**st, "nn": {"epochs": 1}}) != se.trial_settings("nn", st)
    assert se.trial_settings("sindy", {**st, "nn": {"epochs": 1}}) == se.trial_settings("sindy", st)


def test_a_failing_trial_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    se = _load()

    def broken(task, method, seed, settings):
        if method == "sac":
            raise RuntimeError("simulated crash")
        return real(task, method, seed, settings)

    real = se.run_model_free
    monkeypatch.setattr(se, "run_model_free", broken)
    out = tmp_path / "results"
    res = se.main(se.Args(quick=True, out_dir=str(out), runs_dir=str(tmp_path / "runs"), distill=False))
    # the low-data SAC run of the same seed fails too (reported apart); everything else ran
    assert res["failed"] == {"pendulum/sac/s0": "RuntimeError: simulated crash",
                             "low/pendulum/sac/s0": "RuntimeError: simulated crash"} and res["not_run"] == []
    assert [t["method"] for t in res["trials"]] == ["sindy", "nn", "ppo"]
    assert not (out / "sample_efficiency" / "pendulum_sac_s0.json").exists()  # a restart runs it again
    assert "pendulum/sac/s0 FAILED" in capsys.readouterr().out


def test_low_data_schedules_spend_exactly_each_budget():
    se = _load()
    ld = se.TASKS["pendulum"]["low_data"]
    for b in ld["budgets"]:
        sch = se.low_data_schedule(b, ld)
        spent = sch["collect.random_steps"] + ld["batches"] * sch["collect.steps_per_iteration"]
        assert spent == b == sch["collect.max_real_steps"] and sch["dyna.iterations"] == ld["batches"] + 1
        assert sch["collect.random_steps"] % sch["collect.random_episode_steps"] == 0
    assert se.low_data_schedule(500, ld)["collect.random_steps"] == 200


def test_a_deadline_earlier_in_the_day_is_tomorrows():
    """--deadline 00:45 given at 23:46 must not stop the run before it starts (it did)."""
    import datetime as dt

    se = _load()
    now = dt.datetime.now(dt.timezone.utc)
    earlier = (now - dt.timedelta(minutes=2)).strftime("%H:%M")
    at = dt.datetime.fromisoformat(se._absolute_deadline(earlier))
    assert dt.timedelta(hours=23) < at - now < dt.timedelta(hours=24) and not se._past_deadline(earlier)
    assert se._past_deadline((now - dt.timedelta(minutes=1)).isoformat())


def test_e_sindy_against_dyna_nn_in_real_steps_to_the_threshold():
    se = _load()

    def cells(**means):
        return {b: {"mean": m} for b, m in means.items()}

    agg = {"methods": {"sindy": cells(**{"250": -400.0, "500": -180.0, "1000": -150.0}),
                       "nn": cells(**{"500": -700.0, "1000": -300.0, "2000": -190.0})}}
    text = se.models_compared(agg, -200.0)
    assert "E-SINDy Dyna 500, Dyna-NN on the same schedule 2,000: E-SINDy needs 0.25× the steps" in text
    agg["methods"]["nn"]["2000"]["mean"] = -250.0
    text = se.models_compared(agg, -200.0)
    assert "Dyna-NN on the same schedule not within 2,000" in text and "< 0.25×" in text
    assert se.models_compared({"methods": {"sindy": agg["methods"]["sindy"]}}, -200.0) == ""
