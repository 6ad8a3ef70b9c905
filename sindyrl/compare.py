"""``sindyrl compare RUN [RUN ...]``: the headline figures of several runs side by side.

One row per figure (real steps, each controller's mean return and worst episode, policy size, board
figures), one column per run and a last column of mean ± std over the runs (the seeds of a sweep, say).
Printed on the console and written as a self-contained HTML page. A directory that is not a run but holds
runs (a sweep directory) stands for all of them. The figures are those of the run report's headline
(:func:`sindyrl.report.headline_figures`), so both always agree.
"""

from __future__ import annotations

import html
import math
import sys
from pathlib import Path

import numpy as np

from .runs import Run, atomic_write

__all__ = ["compare_runs", "format_table", "write_html", "headline_row", "register", "expand_runs"]

#: controller keys in row order, with the name used in the table (labels differ between runs: "sparse (20 terms)")
_CONTROLLERS = {"neural": "neural policy", "surrogate": "neural, surrogate estimate", "sparse": "sparse policy",
                "mpc": "MPC", "mpc_sqpmethod": "MPC (sqpmethod)", "mpc_c": "MPC (generated C)", "lqr": "LQR",
                "hil": "board (HIL)"}


def headline_row(run: Run) -> dict[str, float | str | None]:
    """The headline of one run as flat ``figure -> value`` (numbers, or strings for the few text figures)."""
    from .report import headline_figures

    h = headline_figures(run)
    row: dict[str, float | str | None] = {"task": h["task"], "seed": h["seed"]}
    total = h["real_steps_total"]
    row["real steps, total" if h["real_steps_total_complete"] else "real steps, total (training only)"] = total
    for _, label, n in h["real_steps"]:
        row[f"real steps, {label}"] = n
    for c in h["controllers"]:
        name = _CONTROLLERS.get(c["key"], c["label"])
        row[f"{name}: mean return"] = c["mean"]
        row[f"{name}: worst episode"] = c["min"]
    row["sparse policy nonzeros"] = h["policy_nnz"]
    row["network weights"] = h["policy_params"]
    b = h["board"]
    for key, name in (("flash_bytes", "board flash (B)"), ("ram_bytes", "board RAM (B)"),
                      ("instructions_per_call", "board instructions per call"),
                      ("board_ns_per_call", "board ns per call"), ("max_action_diff", "parity board vs Python"),
                      ("onnx_parity_max_abs", "parity ONNX vs Python")):
        if b.get(key) is not None:
            row[name] = b[key]
    row["skipped"] = ", ".join(h["skipped"]) or None
    return row


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories of ``paths``: a run as it is, a directory of runs (a sweep) as its runs, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").is_file():
            out.append(p)
            continue
        if not p.is_dir():
            raise ValueError(f"compare: run directory not found: {p}")
        inner = sorted(q.parent for q in p.glob("*/config.yaml"))
        if not inner:
            inner = sorted(q.parent for q in p.glob("*/*/config.yaml"))  # sweep/trials/<trial>
        if not inner:
            raise ValueError(f"compare: {p} is neither a run directory (no config.yaml) nor a directory of runs")
        out += inner
    if not out:
        raise ValueError("compare: give at least one run directory")
    return out


def compare_runs(paths: list[str | Path]) -> tuple[list[str], list[str], list[list[str]]]:
    """(run names, figure names, cells): ``cells[i]`` is figure ``i`` for every run, then mean ± std."""
    runs = [Run.open(p) for p in expand_runs(paths)]
    rows = [headline_row(r) for r in runs]
    names = _unique_names(runs)
    figures: list[str] = []
    for r in rows:
        figures += [k for k in r if k not in figures]
    cells = []
    for f in figures:
        vals = [r.get(f) for r in rows]
        nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(float(v))]
        agg = ""
        if f not in ("seed",) and len(nums) >= 2 and len(nums) == sum(v is not None for v in vals):
            agg = f"{_fmt(float(np.mean(nums)), f)} ± {_fmt(float(np.std(nums, ddof=1)), f)}"
        elif all(isinstance(v, str) for v in vals) and len(set(vals)) == 1:
            agg = str(vals[0])
        cells.append([_fmt(v, f) for v in vals] + [agg])
    return names, figures, cells


def _unique_names(runs: list[Run]) -> list[str]:
    names = [r.path.name for r in runs]
    if len(set(names)) < len(names):  # same trial names in two sweeps: add the parent
        names = [f"{r.path.parent.name}/{r.path.name}" for r in runs]
    return names


def _fmt(v, figure: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    v = float(v)
    if not math.isfinite(v):
        return "diverged"
    if "parity" in figure:
        return f"{v:.2g}"
    if v.is_integer():
        return f"{int(v):,}"
    return f"{v:,.1f}"


def format_table(names: list[str], figures: list[str], cells: list[list[str]]) -> str:
    """The table as aligned text for a terminal."""
    header = ["figure", *names, "mean ± std (n-1)"]
    body = [[f, *c] for f, c in zip(figures, cells)]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def write_html(path: str | Path, names: list[str], figures: list[str], cells: list[list[str]],
               run_paths: list[Path] | None = None) -> Path:
    """A self-contained HTML page of the table; run names link to their report.html where there is one."""
    path = Path(path)
    heads = []
    for i, n in enumerate(names):
        rep = run_paths[i] / "report.html" if run_paths else None
        if rep is not None and rep.is_file():
            try:
                href = rep.resolve().relative_to(path.parent.resolve()).as_posix()
            except ValueError:
                href = rep.resolve().as_uri()
            heads.append(f"<th><a href='{html.escape(href)}'>{html.escape(n)}</a></th>")
        else:
            heads.append(f"<th>{html.escape(n)}</th>")
    rows = "".join("<tr><th scope='row'>" + html.escape(f) + "</th>"
                   + "".join(f"<td>{html.escape(c)}</td>" for c in cs) + "</tr>" for f, cs in zip(figures, cells))
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>sindyrl compare</title><style>"
            "body{font-family:system-ui,sans-serif;margin:1.5em;font-size:14px}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}"
            "th[scope=row]{text-align:left;font-weight:normal}thead th{background:#f3f3f3}"
            "td:last-child{font-weight:bold;background:#fafafa}.wrap{overflow-x:auto}</style></head><body>"
            f"<h1>sindyrl compare: {len(names)} runs</h1><div class='wrap'><table><thead><tr><th>figure</th>"
            + "".join(heads) + "<th>mean ± std (n-1)</th></tr></thead><tbody>" + rows
            + "</tbody></table></div></body></html>")
    atomic_write(path, page)
    return path


def cmd_compare(args) -> int:
    paths = expand_runs(args.runs)
    names, figures, cells = compare_runs(paths)
    print(format_table(names, figures, cells))
    if args.html:
        out = write_html(args.html, names, figures, cells, paths)
        print(f"\nhtml: {out}")
    return 0


def register(subparsers) -> None:
    """Add ``sindyrl compare`` to the CLI."""
    c = subparsers.add_parser("compare", help="headline figures of several runs side by side (console and HTML)",
                              description=__doc__.split("\n\n")[0])
    c.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or a sweep directory for all its runs")
    c.add_argument("--html", default="compare.html",
                   help="write the table as an HTML page here (default: compare.html; '' to skip)")
    c.set_defaults(func=cmd_compare)


if __name__ == "__main__":  # pragma: no cover
    from .cli import main

    sys.exit(main(["compare", *sys.argv[1:]]))
