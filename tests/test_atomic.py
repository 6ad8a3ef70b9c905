"""atomic_write: the one atomic file writer (run directory, SparseModel JSON, buffers, ONNX)."""

import pytest

from sindyrl.atomic import atomic_write
from sindyrl.runs import atomic_write as from_runs


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    assert from_runs is atomic_write  # still importable from the run directory
    p = tmp_path / "sub" / "f.json"
    atomic_write(p, "old")
    atomic_write(p, b"new")
    assert p.read_text() == "new" and p.stat().st_mode & 0o777 == 0o644
    with pytest.raises(TypeError):
        atomic_write(p, 3)
    assert p.read_text() == "new" and [q.name for q in p.parent.iterdir()] == ["f.json"]
