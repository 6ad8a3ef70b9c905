"""The run report's content and order, and ``sindyrl compare`` on two runs."""

import re

import pytest
from report_run import make_report_run

from sindyrl.cli import main
from sindyrl.compare import compare_runs, format_table
from sindyrl.report import headline_figures, write_report
from sindyrl.runs import Run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_report_run(root, f"seed{s}", seed=s) for s in (0, 1)]


def test_headline_has_every_controller_with_its_worst_episode(runs):
    run = runs[0]
    h = headline_figures(run)
    s = run.read_summary()
    keys = [c["key"] for c in h["controllers"]]
    assert keys == ["neural", "surrogate", "sparse", "mpc", "hil"]
    sparse = h["controllers"][2]
    assert sparse["min"] == min(s["sparse_policy_returns"])
    assert sparse["worst_seed"] == s["seed"] + s["sparse_policy_returns"].index(sparse["min"])
    assert h["real_steps_total"] == s["real_steps_total"] and h["real_steps_total_complete"]
    assert [k for k, _, _ in h["real_steps"]] == ["real_steps_collect", "real_steps_eval", "real_steps_distill",
                                                   "real_steps_control", "real_steps_hil"]
    assert h["skipped"] == {"robust": "no stages.robust section in the config"}


def test_report_order_and_content(runs):
    run = runs[0]
    paths = write_report(run)
    page = paths["html"].read_text()
    md = paths["md"].read_text()
    # headline, then equations, plots, details, provenance last
    order = [page.index(x) for x in ("id='headline'", "id='equations'", "id='plots'", "id='provenance'")]
    assert order == sorted(order)
    assert page.index("id='headline'") < page.index("<math")
    for plot in ("returns.png", "closed_loop.png", "model_rollout.png", "learning_curve.png"):
        assert (run.plots_dir / plot).is_file(), plot
    assert page.count("data:image/png;base64,") >= 5 and "src='plots/" not in page  # self-contained
    assert "<script" not in page  # no JavaScript
    assert page.count("<div class='eq'") == 3 + 1  # three state equations, one policy equation
    pol = run.load_model("policy")
    assert pol.equations()[0] in md and "th_dot' =" in md  # plain text too
    assert "<details><summary>plain text</summary>" in page
    assert "no stages.robust section" in page
    # the configuration is collapsed, at the end
    assert page.index("resolved configuration") > page.index("id='plots'")
    assert re.search(r"<details><summary>resolved configuration", page)


def test_report_of_a_run_without_traces_or_later_stages(tmp_path):
    from sindyrl.config import config_from_dict

    run = Run.create(config_from_dict({"env": {"id": "Pendulum-v1"}}), root=tmp_path, name="empty")
    page = write_report(run)["html"].read_text()
    assert "No closed-loop episode was recorded" in page and "No controller has been evaluated yet" in page


def test_compare_two_runs(runs, tmp_path, capsys):
    names, figures, cells = compare_runs([r.path for r in runs])
    assert names == ["seed0", "seed1"]
    row = dict(zip(figures, cells))
    a, b = (r.read_summary()["sparse_policy_return_mean"] for r in runs)
    mean_std = row["sparse policy: mean return"][-1]
    assert mean_std.startswith(f"{(a + b) / 2:,.1f} ± ")
    assert row["task"][-1] == "Pendulum-v1" and row["seed"][:2] == ["0", "1"] and row["seed"][-1] == ""
    text = format_table(names, figures, cells)
    assert "sparse policy: worst episode" in text and "seed1" in text
    out = tmp_path / "cmp.html"
    assert main(["compare", str(runs[0].path.parent), "--html", str(out)]) == 0  # a directory of runs
    assert "seed0" in capsys.readouterr().out
    page = out.read_text()
    assert page.count("<th scope='row'>") == len(figures) and "report.html" in page
