"""benchmarks/docs_output.py: the section writer and the results JSON every benchmark script shares."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.docs_output import flatten, numeric, results_path, slug, write_results, write_section  # noqa: E402

DOC = """# Benchmarks

<!-- alpha:start -->
## Alpha

old alpha
<!-- alpha:end -->

between

<!-- beta:start -->
old beta
<!-- beta:end -->
tail
"""


@pytest.fixture
def docs(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    path.parent.mkdir()
    path.write_text(DOC)
    return path


def test_section_is_replaced_exactly_once_and_the_rest_is_kept(docs):
    write_section("alpha", "## Alpha\n\nnew alpha\n", docs)
    text = docs.read_text()
    assert text == DOC.replace("old alpha", "new alpha")
    assert text.count("<!-- alpha:start -->") == 1 and text.count("new alpha") == 1
    # rewriting is idempotent and surrounding newlines of the markdown do not pile up
    write_section("alpha", "\n\n## Alpha\n\nnew alpha", docs)
    assert docs.read_text() == text
    write_section("beta", "new beta", docs)
    assert docs.read_text() == text.replace("old beta", "new beta")
    assert not list(docs.parent.glob("*.tmp"))


@pytest.mark.parametrize("text", [
    DOC.replace("<!-- alpha:start -->\n", ""),  # no start
    DOC.replace("<!-- alpha:end -->\n", ""),  # no end
    DOC + "<!-- alpha:start -->\nagain\n<!-- alpha:end -->\n",  # twice
    DOC.replace("<!-- alpha:start -->", "X").replace("<!-- alpha:end -->", "<!-- alpha:start -->")
       .replace("X", "<!-- alpha:end -->"),  # the wrong way round
])
def test_bad_markers_are_a_clear_error_and_nothing_is_written(docs, text):
    docs.write_text(text)
    with pytest.raises(ValueError, match=r"section 'alpha' needs exactly one <!-- alpha:start --> followed by"):
        write_section("alpha", "new", docs)
    assert docs.read_text() == text


def test_markdown_holding_the_markers_is_refused(docs):
    with pytest.raises(ValueError, match="contains its own markers"):
        write_section("alpha", "<!-- alpha:start -->\nnew\n<!-- alpha:end -->", docs)
    assert docs.read_text() == DOC


def test_results_round_trip_flat_and_sorted(docs):
    figures = {"ratio_vs_real_env": 14.5, "nnz": np.int64(28), "ok": True, "missing": None,
               "ipopt": {"ms_mean": np.float64(4.5), "failures": 1}, "bad": float("nan")}
    path = write_results("alpha", figures, "python benchmarks/alpha.py --write-docs", docs)
    assert path == docs.parent / "results" / "alpha.json" == results_path("alpha", docs)
    text = path.read_text()
    data = json.loads(text)
    assert data["figures"] == {"bad": None, "ipopt.failures": 1, "ipopt.ms_mean": 4.5, "missing": None,
                               "nnz": 28, "ok": 1, "ratio_vs_real_env": 14.5}
    assert data["section"] == "alpha" and data["command"] == "python benchmarks/alpha.py --write-docs"
    assert len(data["date"]) == 10 and data["date"][4] == "-"
    assert data["commit"] is None or len(data["commit"]) == 40
    assert text == json.dumps(data, indent=1, sort_keys=True) + "\n"  # sorted keys, stable layout
    assert list(data) == sorted(data)


def test_non_numeric_figures_are_refused():
    with pytest.raises(TypeError, match="'a.name' is str"):
        flatten({"a": {"name": "ipopt"}})
    with pytest.raises(TypeError, match="'xs' is list"):
        flatten({"xs": [1, 2]})


def test_a_labelled_row_becomes_figures_under_its_slug():
    row = {"name": "neural 64x64 (tanh-squashed TD3 actor)", "kind": "neural", "flash": 25528,
           "instructions_per_call": np.float64(33554.0), "returns": [1.0, 2.0]}
    assert flatten({slug(row["name"]): numeric(row)}) == {
        "neural_64x64_tanh_squashed_td3_actor.flash": 25528,
        "neural_64x64_tanh_squashed_td3_actor.instructions_per_call": 33554.0}
