"""benchmarks/firmware.py runs end to end on a tiny budget (one board, one episode, few calls)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from board_tools import need_tools

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.qemu
def test_firmware_benchmark_on_a_tiny_budget(tmp_path):
    need_tools("microbit", with_qemu=True)
    out = tmp_path / "firmware.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "firmware.py"), "--boards", "microbit", "--episodes", "1",
         "--calls", "20", "--neural-calls", "2", "--n-obs", "1", "--parity-obs", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    by = {(r["arithmetic"], r["name"]): r for r in rows}
    fixed, soft = by[("fixed", "sparse, 5-term controller")], by[("soft float", "sparse, 5-term controller")]
    assert fixed["instructions_per_call"] < soft["instructions_per_call"]
    assert abs(fixed["return_board"] - soft["return_board"]) <= 0.02 * abs(soft["return_board"])
    assert all(r["protocol_errors"] == 0 for r in rows if r["fits"])
    assert not by[("soft float", "neural 256x256")]["fits"]  # 277 KB of weights on a 256 KB part
    assert "| microbit | fixed | sparse, 5-term controller |" in p.stdout
