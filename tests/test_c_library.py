"""The drop-in C library (``sindyrl export RUN --c-library DIR``): its files, and its example compiled
strictly with gcc and clang and run against Python."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from firmware_bridge.library import write_c_library
from sindyrl.sparse import SparseModel

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def policy() -> SparseModel:
    return SparseModel(
        ["cos_th", "sin_th", "th_dot"], ["u"],
        [((1, "pow", 1),), ((2, "pow", 1),), ((0, "pow", 1), (2, "pow", 1)), ((2, "pow", 3),), ((1, "sin", 2.0),),
         ()],
        coef=np.array([[-6.0, -1.5, 0.8, 0.05, 0.3, 0.1]]), output_bounds=(np.array([-2.0]), np.array([2.0])),
        input_bounds=(np.array([-1.0, -1.0, -8.0]), np.array([1.0, 1.0, 8.0])), name="swingup",
    )


def run_example(lib, compiler: str, tmp_path) -> np.ndarray:
    exe = tmp_path / f"example-{compiler}"
    subprocess.run([compiler, *STRICT, "-O2", f"-I{lib.directory}", str(lib.example), str(lib.source), "-lm",
                    "-o", str(exe)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()
    assert len(out) == len(lib.states)
    return np.array([[float(v) for v in ln.split("->")[1].split()] for ln in out])


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_library_example_compiles_strictly_and_matches_python(compiler, tmp_path):
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    model = policy()
    lib = write_c_library(model, tmp_path / "lib")
    got = run_example(lib, compiler, tmp_path)
    want = model.evaluate(lib.states.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.ptp(want) > 0.5  # the stored states give different actions


def test_library_files_say_what_the_policy_is(tmp_path):
    model = policy()
    lib = write_c_library(model, tmp_path / "lib", units={"th_dot": "rad/s", "u": "N m"})
    names = sorted(p.relative_to(lib.directory).as_posix() for p in lib.directory.rglob("*") if p.is_file())
    assert names == ["README.md", "examples/host/main.c", "library.json", "library.properties", "sindyrl_eval.h",
                     "sindyrl_policy.c", "sindyrl_policy.h"]
    header, source = lib.header.read_text(), lib.source.read_text()
    assert "int sindyrl_policy_eval(const float *in, size_t n_in, float *out, size_t n_out);" in header
    assert '#include "sindyrl_policy.h"' in source and model.content_hash() in header
    for banned in ("malloc", "stdio", "printf", "sindyrl_protocol", "sindyrl_hal", "sindyrl_board"):
        assert banned not in source and banned not in header
    readme = (lib.directory / "README.md").read_text()
    for want in ["u = -6 sin_th - 1.5 th_dot", "| 2 | `th_dot` | [-8, 8] | rad/s |", "| 0 | `u` | [-2, 2] | 0 | N m |",
                 "SINDYRL_POLICY_SAFE_ACTION", model.content_hash()]:
        assert want in readme, want
    manifest = json.loads((lib.directory / "library.json").read_text())
    assert manifest["name"] == "sindyrl-policy" and manifest["headers"] == ["sindyrl_policy.h"]
    assert manifest["sindyrl"]["model_hash"] == model.content_hash()
    props = dict(ln.split("=", 1) for ln in (lib.directory / "library.properties").read_text().splitlines() if ln)
    assert props["name"] == "sindyrl_policy" and props["architectures"] == "*" and props["version"]


def test_fixed_point_library_states_its_error_bound(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    model = policy()
    lib = write_c_library(model, tmp_path / "lib", real="fixed")
    assert "SINDYRL_POLICY_ERROR_BOUND" in lib.header.read_text()
    assert "Fixed-point error bound" in (lib.directory / "README.md").read_text()
    got = run_example(lib, "gcc", tmp_path)
    assert np.max(np.abs(got - model.evaluate(lib.states.astype(np.float64)))) <= lib.error_bound.max()


def test_export_command_writes_the_library(tmp_path):
    from sindyrl.cli import main
    from sindyrl.config import config_from_dict
    from sindyrl.runs import Run

    run = Run.create(config_from_dict({"env": {"id": "Pendulum-v1"}, "seed": 3}), root=tmp_path, name="pend")
    run.save_model("policy", policy())
    out = tmp_path / "mylib"
    assert main(["export", str(run.path), "--what", "sparse-policy", "--n-states", "100", "--c-library", str(out)]) == 0
    assert (out / "sindyrl_policy.c").is_file() and (out / "library.json").is_file()
    assert json.loads((out / "library.json").read_text())["sindyrl"]["model_hash"] == policy().content_hash()
