"""Atomic file writes: readers see the old content or the new, never half of it.

The one implementation used by the run directory, ``SparseModel.to_json``, the
transitions buffer and the ONNX files. Standard library only, so that
:mod:`sindyrl.sparse` can use it and stay light.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path``: a temporary file in the same folder, then a rename.

    Missing parent folders are created. The file is readable by everyone (``0644``), as run outputs are meant
    to be shared; a failed write leaves no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
