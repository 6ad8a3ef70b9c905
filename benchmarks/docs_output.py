"""What a benchmark script leaves behind: its section of docs/benchmarks.md and its headline figures.

Every script in ``benchmarks/`` owns one section of docs/benchmarks.md, between ``<!-- NAME:start -->``
and ``<!-- NAME:end -->``. ``write_section`` replaces the text between the two markers (the markers stay);
``write_results`` writes ``docs/results/NAME.json`` next to it: the command that produced the figures,
the date, the git commit and the headline figures under flat keys, so the figures can be compared from
run to run without parsing markdown. A script that writes its section writes its JSON too.

Run as a script (``python benchmarks/x.py``), a benchmark puts the repository root on ``sys.path`` and
imports this module as ``benchmarks.docs_output``.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(name: str, markdown: str, docs: Path | str = DOCS) -> Path:
    """Replace the text between the ``name`` markers of ``docs`` with ``markdown``; returns the path.

    The file must hold exactly one start marker followed by one end marker, otherwise ValueError (nothing is
    written). The new file is written next to the old one and renamed over it, so a crash leaves either.
    """
    docs = Path(docs)
    start, end = markers(name)
    if start in markdown or end in markdown:
        raise ValueError(f"the markdown for section {name!r} contains its own markers; pass only the text between them")
    text = docs.read_text()
    n_start, n_end = text.count(start), text.count(end)
    if n_start != 1 or n_end != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{docs}: section {name!r} needs exactly one {start} followed by one {end} "
                         f"(found {n_start} start and {n_end} end markers)")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    body = markdown.strip("\n")
    tmp = docs.with_name(docs.name + ".tmp")
    tmp.write_text(f"{head}{start}\n{body}\n{end}{tail}")
    tmp.replace(docs)
    return docs


def results_path(name: str, docs: Path | str = DOCS) -> Path:
    """Where ``write_results`` puts the figures of section ``name``: ``results/NAME.json`` beside ``docs``."""
    return Path(docs).parent / "results" / f"{name}.json"


def slug(label: str) -> str:
    """A label as a figure key: 'neural 64x64 (TD3)' -> 'neural_64x64_td3'."""
    return re.sub(r"[^a-z0-9]+", "_", str(label).lower()).strip("_")


def flatten(figures: Mapping, prefix: str = "") -> dict[str, float | int | None]:
    """Nested figures as one level of dotted keys; every leaf must be a number or None.

    Booleans become 0/1, numpy scalars plain numbers, NaN and infinities None (JSON has no such numbers).
    """
    flat: dict[str, float | int | None] = {}
    for k, v in figures.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten(v, key + "."))
            continue
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()  # numpy scalar
        if v is None or isinstance(v, bool):
            flat[key] = None if v is None else int(v)
        elif isinstance(v, numbers.Integral):
            flat[key] = int(v)
        elif isinstance(v, numbers.Real):
            flat[key] = float(v) if math.isfinite(v) else None
        else:
            raise TypeError(f"figure {key!r} is {type(v).__name__} {v!r}, not a number")
    return flat


def numeric(row: Mapping) -> dict:
    """The entries of a measurement row that are numbers (its labels and lists left out), for ``write_results``."""
    return {k: v for k, v in row.items()
            if isinstance(v, numbers.Real) or (hasattr(v, "item") and isinstance(v.item(), numbers.Real))}


def git_commit(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """HEAD of the repository holding the benchmarks, and whether code outside docs/ differs from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":(exclude)docs"], cwd=root,
                              capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return sha or None, {0: False, 1: True}.get(diff.returncode)


def write_results(name: str, figures: Mapping, command: str, docs: Path | str = DOCS) -> Path:
    """Write ``results/NAME.json`` beside ``docs``: command, date, commit and the flattened figures.

    Keys are sorted so that two runs diff line by line. Returns the path written.
    """
    commit, dirty = git_commit()
    payload = {
        "section": name,
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "commit": commit,
        "uncommitted_changes": dirty,
        "figures": flatten(figures),
    }
    path = results_path(name, docs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path
