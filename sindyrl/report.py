"""The run report: ``report.md`` and a self-contained ``report.html`` (plots embedded, opens offline).

In the order a reader wants it:

1. the headline: task, real steps (training, evaluation, per stage), every controller's final return with its
   worst episode, policy size, board figures, what was skipped and why;
2. the learned equations, typeset in MathML (lines break between terms; plain text on demand);
3. plots: per-episode returns of every controller on the same starts, one closed-loop episode of each from the
   same start, the model's open-loop prediction of a held-out real episode with the ensemble's spread, the
   learning curve against real steps with the worst episodes marked; then the detail tables;
4. provenance: resolved configuration, versions, hashes, the run directory's files.

Writing the report never runs the environment: every figure comes from what the run directory holds.
:func:`headline_figures` is the one definition of the headline, shared with ``sindyrl compare``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import config_to_dict
from .runs import Run, atomic_write

__all__ = ["write_report", "headline_figures", "controller_rows"]

#: figures this module draws itself; any other PNG in plots/ goes to "Other figures"
_OWN_PLOTS = {"learning_curve.png", "model_rollout.png", "policy_comparison.png", "returns.png", "closed_loop.png"}

#: per-stage real-step keys: summary key -> label (others named real_steps_<stage> are added as they come)
_STEP_LABELS = {"real_steps_collect": "training: collection", "real_steps_eval": "training: evaluation",
                "real_steps_final_eval": "training: final evaluation"}


# ------------------------------------------------------------------ figures
def _f(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _row(key: str, label: str, mean, std=None, worst=None, returns=None, first_seed=None, note: str = "",
         estimate: bool = False) -> dict:
    returns = [float(r) for r in returns] if returns else None
    worst = _f(worst)
    worst_seed = None
    if returns:
        k = min(range(len(returns)), key=returns.__getitem__)
        worst = returns[k] if worst is None else worst
        if first_seed is not None:
            worst_seed = int(first_seed) + k
    return {"key": key, "label": label, "mean": _f(mean), "std": _f(std), "min": worst, "worst_seed": worst_seed,
            "episodes": len(returns) if returns else None, "returns": returns, "note": note, "estimate": estimate}


def controller_rows(summary: dict, control: dict | None = None) -> list[dict]:
    """Every controller of a run with its final return: neural, (surrogate estimate), sparse, control's, HIL.

    Each row: ``key``, ``label``, ``mean``, ``std``, ``min`` (worst episode), ``worst_seed``, ``episodes``,
    ``returns`` (per episode, when stored), ``note``, ``estimate`` (True for the surrogate's own estimate).
    """
    s, control = summary, control or {}
    seed = s.get("seed")
    out = []
    algo = str(s.get("algo", "agent")).upper()
    if "eval_return_mean" in s:
        out.append(_row("neural", f"neural policy ({algo})", s["eval_return_mean"], s.get("eval_return_std"),
                        s.get("eval_return_min"), s.get("eval_returns"), seed))
    elif "neural_policy_return_mean" in s:
        out.append(_row("neural", f"neural policy ({algo})", s["neural_policy_return_mean"],
                        s.get("neural_policy_return_std"), None, s.get("neural_policy_returns"), seed))
    if "surrogate_return_mean" in s:
        out.append(_row("surrogate", "neural, estimated in the surrogate", s["surrogate_return_mean"],
                        s.get("surrogate_return_std"), s.get("surrogate_return_min"), None,
                        note="the agent's own estimate from stored starts (no real steps)", estimate=True))
    if "sparse_policy_return_mean" in s:
        nnz = s.get("sparse_policy_nnz")
        out.append(_row("sparse", f"sparse policy ({nnz} terms)" if nnz else "sparse policy",
                        s["sparse_policy_return_mean"], s.get("sparse_policy_return_std"),
                        s.get("sparse_policy_return_min"), s.get("sparse_policy_returns"), seed))
    ctl = control.get("controllers", {})
    done = set()
    for key, c in ctl.items():
        if key in ("neural_policy", "sparse_policy"):
            continue  # the same policies as above, re-evaluated by the control stage for its own table
        out.append(_row(key, c.get("label", key), c.get("return_mean"), c.get("return_std"), c.get("return_min"),
                        c.get("returns"), c.get("seed", control.get("seed"))))
        done.add(key)
    for k in sorted(s):
        if k.startswith("control_") and k.endswith("_return_mean"):
            key = k[len("control_"):-len("_return_mean")]
            if key not in done:
                p = f"control_{key}_"
                out.append(_row(key, key.upper(), s[k], s.get(p + "return_std"), s.get(p + "return_min")))
    if "hil_return_mean" in s:
        out.append(_row("hil", f"{s.get('hil_policy', '')} policy on the {s.get('hil_board', '?')} board".strip(),
                        s["hil_return_mean"], None, None, s.get("hil_returns"), s.get("hil_seed", seed),
                        note="generated C driving the real env over the serial protocol"))
    return out


def _stage_steps(s: dict) -> list[tuple[str, str, int]]:
    """(key, label, steps) of every real-step count the run recorded, in pipeline order."""
    from .pipeline import STAGES

    rows = [(k, lab, int(s[k])) for k, lab in _STEP_LABELS.items() if _f(s.get(k)) is not None]
    keys = [k for k in s if k.startswith("real_steps_") and k not in _STEP_LABELS and k != "real_steps_total"
            and _f(s.get(k)) is not None]
    order = {f"real_steps_{n}": i for i, n in enumerate(STAGES)}
    for k in sorted(keys, key=lambda k: (order.get(k, 99), k)):
        rows.append((k, f"stage {k[len('real_steps_'):]}", int(s[k])))
    return rows


def headline_figures(run: Run) -> dict:
    """The run's headline, as plain values (``None`` where the run does not have a figure).

    Keys: ``run``, ``task``, ``algo``, ``seed``, ``real_steps`` (list of (key, label, steps)),
    ``real_steps_total``, ``real_steps_total_complete``, ``controllers`` (:func:`controller_rows`),
    ``policy_nnz``, ``policy_params``, ``board`` (dict of board figures), ``skipped`` ({stage: reason}).
    """
    s = run.read_summary()
    control = _read_json(run.path / "control.json")
    steps = _stage_steps(s)
    total = _f(s.get("real_steps_total"))
    complete = total is not None
    if total is None and steps:
        total = sum(n for _, _, n in steps)
        # runs before per-stage counting recorded only the training stage's collection and evaluation
        complete = any(k not in _STEP_LABELS for k, _, _ in steps)
    board = {}
    if "hil_board" in s:
        board = {
            "board": s.get("hil_board"), "flash_bytes": s.get("hil_flash_bytes"), "ram_bytes": s.get("hil_ram_bytes"),
            "instructions_per_call": s.get("hil_instructions_per_call"),
            "board_ns_per_call": s.get("hil_board_ns_per_call"), "latency_p50_ms": s.get("hil_latency_p50_ms"),
            "max_action_diff": s.get("hil_max_action_diff"), "return_rel_diff_max": s.get("hil_return_rel_diff_max"),
        }
    if "onnx_parity_max_abs" in s:
        board["onnx_parity_max_abs"] = s["onnx_parity_max_abs"]
    skipped = s.get("skipped") or {}
    if isinstance(skipped, (list, tuple)):
        skipped = {str(k): "" for k in skipped}
    return {
        "run": run.path.name, "task": s.get("env_id", run.config.env.id), "algo": s.get("algo", run.config.agent.algo),
        "seed": s.get("seed", run.config.seed), "real_steps": steps, "real_steps_total": total,
        "real_steps_total_complete": complete, "controllers": controller_rows(s, control),
        "policy_nnz": s.get("sparse_policy_nnz"), "policy_params": s.get("neural_policy_params"),
        "board": board, "skipped": {str(k): str(v) for k, v in skipped.items()},
    }


# ---------------------------------------------------------------- formatting
def _n(v, digits: int = 1) -> str:
    """A number for a table: thousands separated, missing as an en dash, diverged as such."""
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return "diverged"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{int(v):,}".replace(",", "\u202f")
    return f"{v:,.{digits}f}".replace(",", "\u202f")


def _g(v) -> str:
    return "–" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # one CSS class per row ("" for none)
    caption: str = ""

    def add(self, *cells, cls: str = "") -> None:
        self.rows.append([str(c) for c in cells])
        self.classes.append(cls)

    def md(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self.rows]
        return (f"{self.caption}\n\n" if self.caption else "") + "\n".join(lines) + "\n"

    def html(self, cls: str = "") -> str:
        out = [f"<table class='{cls}'>" if cls else "<table>"]
        if self.caption:
            out.append(f"<caption>{_esc(self.caption)}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in self.header) + "</tr></thead><tbody>")
        for r, c in zip(self.rows, self.classes):
            out.append((f"<tr class='{c}'>" if c else "<tr>") + "".join(f"<td>{_esc(x)}</td>" for x in r) + "</tr>")
        return "".join(out) + "</tbody></table>"


@dataclass
class _Section:
    """One part of the report: the same content as Markdown and as HTML."""

    id: str
    title: str
    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def text(self, s: str, cls: str = "") -> None:
        self.md.append(s + "\n")
        self.html.append(f"<p class='{cls}'>{_esc(s)}</p>" if cls else f"<p>{_esc(s)}</p>")

    def table(self, t: _Table, cls: str = "") -> None:
        self.md.append(t.md())
        self.html.append(t.html(cls))

    def image(self, p: Path | None, alt: str) -> None:
        if p is None or not p.is_file():
            return
        self.md.append(f"![{alt}](plots/{p.name})\n")
        b64 = base64.b64encode(p.read_bytes()).decode()
        self.html.append(f"<figure><img alt='{_esc(alt)}' src='data:image/png;base64,{b64}'></figure>")

    def details(self, summary: str, body: str, pre: bool = True) -> None:
        self.md.append(f"<details><summary>{summary}</summary>\n\n```\n{body}\n```\n\n</details>\n")
        inner = f"<pre>{_esc(body)}</pre>" if pre else body
        self.html.append(f"<details><summary>{_esc(summary)}</summary>{inner}</details>")


# ------------------------------------------------------------------ sections
def _headline(run: Run, h: dict) -> tuple[str, str]:
    """(markdown, html) of the headline block."""
    md, left, right = [], [], []
    task = f"{h['task']} · {str(h['algo']).upper()} · seed {h['seed']} · run {h['run']}"
    md.append(f"**{task}**\n")
    steps = _Table(["where", "real steps"])
    for _, label, n in h["real_steps"]:
        steps.add(label, _n(n))
    if h["real_steps_total"] is not None:
        if h["real_steps_total_complete"]:
            steps.add("total", _n(int(h["real_steps_total"])), cls="total")
        else:
            steps.add("total (later stages' steps not recorded)",
                      _n(int(h["real_steps_total"])), cls="total")
    rets = _Table(["controller", "mean return", "worst episode", "episodes"])
    for c in h["controllers"]:
        mean = _n(c["mean"]) + (f" ± {_n(c['std'])}" if c["std"] is not None else "")
        worst = _n(c["min"]) + (f" (seed {c['worst_seed']})" if c["worst_seed"] is not None else "")
        eps = str(c["episodes"]) if c["episodes"] else ("estimate" if c["estimate"] else "–")
        rets.add(c["label"], mean, worst, eps, cls="estimate" if c["estimate"] else "")
    if steps.rows:
        md.append(steps.md())
        left.append("<h2>Real steps</h2>" + steps.html("steps"))
    if rets.rows:
        md.append(rets.md())
        left.append("<h2>Final return of each controller</h2>" + rets.html("returns"))
    else:
        left.append("<p>No controller has been evaluated yet.</p>")
    if h["policy_nnz"] is not None:
        size = f"{h['policy_nnz']} nonzero coefficients"
        if h["policy_params"]:
            size += (f" against {_n(int(h['policy_params']))} network weights "
                     f"({100 * h['policy_nnz'] / max(h['policy_params'], 1):.2f}% of the size)")
        md.append(f"**Sparse policy size**: {size}.\n")
        right.append(f"<h2>Policy size</h2><p class='big'>{_esc(size)}</p>")
    b = h["board"]
    if b:
        bt = _Table(["board figure", "value"])
        if b.get("board"):
            bt.add("board", b["board"])
        if b.get("flash_bytes") is not None:
            bt.add("flash / RAM", f"{_n(int(b['flash_bytes']))} B / {_n(int(b['ram_bytes'] or 0))} B")
        if b.get("instructions_per_call") is not None:
            bt.add("per policy call", f"{b['instructions_per_call']:.0f} instructions")
        elif b.get("board_ns_per_call") is not None:
            bt.add("per policy call", f"{b['board_ns_per_call']:.0f} ns")
        if b.get("latency_p50_ms") is not None:
            bt.add("round trip (p50)", f"{b['latency_p50_ms']:.2f} ms")
        if b.get("max_action_diff") is not None:
            bt.add("parity board vs Python", f"max |Δaction| {b['max_action_diff']:.2g}")
        if b.get("onnx_parity_max_abs") is not None:
            bt.add("parity ONNX vs Python", f"max abs {b['onnx_parity_max_abs']:.2g}")
        md.append(bt.md())
        right.append("<h2>Board</h2>" + bt.html("board"))
    if h["skipped"]:
        items = "".join(f"<li><b>{_esc(k)}</b>{': ' + _esc(v) if v else ''}</li>" for k, v in h["skipped"].items())
        md.append("**Skipped**: " + "; ".join(f"{k}{' (' + v + ')' if v else ''}" for k, v in h["skipped"].items())
                  + "\n")
        right.append(f"<h2>Skipped</h2><ul class='skipped'>{items}</ul>")
    else:
        right.append("<h2>Skipped</h2><p>nothing recorded as skipped</p>")
    body = (f"<header id='headline' class='headline'><h1>{_esc(h['task'])} <span class='sub'>"
            f"{_esc(str(h['algo']).upper())} · seed {_esc(h['seed'])} · run {_esc(h['run'])}</span></h1>"
            f"<div class='cols'><div>{''.join(left)}</div><div>{''.join(right)}</div></div></header>")
    return "\n".join(md), body


def _equations(run: Run) -> _Section:
    from .mathml import equation_rows

    sec = _Section("equations", "Learned equations")
    any_model = False
    for name, title, kind in (("dynamics", "Dynamics x[k+1] = f(x[k], u[k])", "next"),
                              ("reward", "Reward r(x[k], u[k])", "map"),
                              ("policy", "Sparse policy u = π(x)", "map")):
        if not run.model_path(name).is_file():
            continue
        any_model = True
        m = run.load_model(name)
        info = f"{m.nnz} nonzero coefficients" + (f", {m.n_models} ensemble members (median shown)"
                                                  if m.n_models else "")
        sec.md.append(f"**{title}** — {info}\n")
        sec.html.append(f"<h3>{_esc(title)} <span class='sub'>{_esc(info)}</span></h3>")
        if kind == "next":
            sec.html.append("<p class='note'>Right-hand sides at step k.</p>")
        sec.html.append(f"<div class='equations' id='eq-{name}'>" + "".join(equation_rows(m, kind)) + "</div>")
        lhs = [f"{o}'" for o in m.outputs] if kind == "next" else None
        plain = "\n".join(m.equations(lhs=lhs))
        sec.md.append(f"```\n{plain}\n```\n")
        sec.html.append(f"<details><summary>plain text</summary><pre>{_esc(plain)}</pre></details>")
        sel = (m.metadata or {}).get("selection")
        if isinstance(sel, dict) and sel.get("candidates"):
            sec.table(_selection_table(sel))
    if run.config.reward.known_spec:
        sec.text(f"Reward: the known function '{run.config.reward.known_spec}'.")
    term = _termination_text(run)
    if term:
        sec.text(term)
    if not any_model:
        sec.text("(no models yet)")
    return sec


def _selection_table(sel: dict) -> _Table:
    """``library: auto``'s candidates, by error, with the choice (*) and the most accurate one (b) marked."""
    t = _Table(["", f"candidate ({sel.get('what', 'model')})", "threshold", "nonzero / terms",
                f"held-out error ({sel.get('metric', '')})"])
    cands = list(enumerate(sel["candidates"]))
    cands.sort(key=lambda ic: (ic[1].get("error") is None, ic[1].get("error") or 0.0))
    for i, c in cands[:12]:
        mark = "*" if i == sel.get("chosen") else "b" if i == sel.get("best") else ""
        err = c.get("error")
        t.add(mark, c.get("label", ""), _g(c.get("threshold")), f"{c.get('nnz')} / {c.get('n_terms')}",
              "diverged" if err is None else _g(err))
    return t


def _termination_text(run: Run) -> str:
    """Where surrogate episodes end: the learned rule, or the known function, or nothing."""
    from .termination import BUILTIN_TERMINATIONS

    rule = run.load_termination()
    if rule is not None:
        return (f"Episode ends in the surrogate: {rule.describe()} (on the fitting data: "
                f"{100 * rule.recall_:.0f}% of the ends found, {100 * rule.false_alarm_:.2f}% false alarms).")
    spec = run.config.env.termination
    if spec not in (None, "none", "learned"):
        return f"Episode ends in the surrogate: the known function '{spec}'."
    if spec is None and run.config.env.id in BUILTIN_TERMINATIONS:
        return f"Episode ends in the surrogate: the built-in termination of {run.config.env.id}."
    return ""


def _plots(run: Run, h: dict) -> _Section:
    from . import plots

    sec = _Section("plots", "Plots")
    s = run.read_summary()
    rows = [c for c in h["controllers"] if c["returns"]]
    if rows:
        sec.html.append("<h3>Per-episode returns of every controller</h3>")
        sec.md.append("### Per-episode returns of every controller\n")
        sec.image(plots.plot_returns(run, rows), "per-episode returns")
    traces = run.load_traces()
    sec.html.append("<h3>Closed loop of each controller from the same start</h3>")
    sec.md.append("### Closed loop of each controller from the same start\n")
    if traces:
        labels = {c["key"]: c["label"] for c in h["controllers"]}
        labels.update({"neural_policy": labels.get("neural", "neural"), "sparse_policy": labels.get("sparse", "sparse")})
        sec.image(plots.plot_traces(run, traces, labels), "closed-loop episodes")
    else:
        sec.text("No closed-loop episode was recorded in this run (traces/ is empty); the stages record the first "
                 "episode of their evaluation with evaluate_policy(..., keep_trace=True) and Run.save_trace.",
                 "note")
    sec.html.append("<h3>Model rollout against a held-out real episode</h3>")
    sec.md.append("### Model rollout against a held-out real episode\n")
    sec.text("Open-loop prediction of the learned dynamics from the first state with the recorded actions, the band "
             "is the spread of the ensemble members' own rollouts.")
    sec.image(plots.plot_rollout(run), "model rollout")
    metrics = run.read_metrics()
    sec.html.append("<h3>Learning curve (return against real environment steps)</h3>")
    sec.md.append("### Learning curve (return against real environment steps)\n")
    sec.image(plots.plot_learning_curve(run), "learning curve")
    if metrics:
        t = _Table(["iteration", "real steps (fit)", "eval return", "worst episode", "one-step error",
                    "rollout error"])
        for r in metrics:
            t.add(int(r["iteration"]), _n(int(r.get("real_steps_fit") or r["real_steps_collect"])),
                  f"{_n(r['eval_return_mean'])} ± {_n(r.get('eval_return_std'))}", _n(r.get("eval_return_min")),
                  _n(r.get("model_one_step_error"), 4), _n(r.get("model_rollout_error"), 4))
        if "eval_return_mean" in s:
            t.add("final", "", f"{_n(s['eval_return_mean'])} ± {_n(s.get('eval_return_std'))}",
                  _n(s.get("eval_return_min")), f"{s.get('eval_episodes', '?')} episodes", "", cls="total")
        sec.table(t)
    return sec


def _details(run: Run) -> list[_Section]:
    from . import plots

    s = run.read_summary()
    out = []
    if "neural_policy_params" in s:
        sec = _Section("policy", "Sparse vs neural policy")
        t = _Table(["policy", "size"])
        t.add("neural (weights and biases of the actor)", _n(int(s["neural_policy_params"])))
        t.add("sparse (nonzero coefficients)", _n(int(s["sparse_policy_nnz"])))
        sec.table(t)
        hist = s.get("distill_history") or []
        if hist:
            d = _Table(["pass", "labelled states", "nnz", "held-out MSE", "surrogate return", "refined",
                        "real return"],
                       caption="Distillation passes (DAgger; chosen by the surrogate return from stored real "
                               "states; \"ppo\": the best pass fine-tuned as a sparse actor)")
            for p in hist:
                if p["pass"] == "confirm":
                    continue
                refined = ("–" if "refine_kept" not in p else
                           f"{_n(p.get('refined_surrogate_return_mean', p.get('surrogate_return_mean')))} "
                           f"({'kept' if p['refine_kept'] else 'not kept'})")
                mse = p.get("val_mse")
                d.add(p["pass"], _n(int(p["n_states"])) if "n_states" in p else "–", p.get("nnz", "–"),
                      "–" if mse is None else f"{mse:.4g}",
                      _n(p.get("surrogate_return_mean")) if p["pass"] != "ppo" else "–", refined,
                      _n(p.get("return_mean")))
            sec.table(d)
            for p in hist:
                if p["pass"] != "confirm":
                    continue
                c = _Table(["candidate", "surrogate score", "nnz", "real return", "episodes", "kept"],
                           caption="The best candidates by the surrogate, confirmed on real episodes of their own "
                                   f"(distill.confirm_top); by the surrogate alone: {p.get('surrogate_choice')}")
                for r in p["candidates"]:
                    c.add(r["candidate"], _n(r["surrogate_score"]), r["nnz"], _n(r["real_return_mean"]),
                          r["episodes"], "yes" if r["candidate"] == p["chosen"] else "")
                sec.table(c)
        sec.image(plots.plot_policy_actions(run), "neural and sparse actions")
        out.append(sec)
    ctl = run.path / "control.md"
    if ctl.is_file():
        sec = _Section("control", "Classical control on the learned model")
        body = "\n".join(ln for ln in ctl.read_text().splitlines() if not ln.startswith("#"))
        sec.md.append(body + "\n")
        sec.html.append(_md_to_html(body))
        out.append(sec)
    other = {k: v for k, v in s.items() if k.startswith(("onnx_", "hil_", "robust_"))
             and not isinstance(v, (list, dict))}
    if other:
        sec = _Section("figures", "Export, hardware-in-the-loop and robustness figures")
        t = _Table(["figure", "value"])
        for k, v in sorted(other.items()):
            t.add(k, f"{v:.4g}" if isinstance(v, float) else v)
        sec.table(t)
        out.append(sec)
    extra = sorted(p for p in run.plots_dir.glob("*.png") if p.name not in _OWN_PLOTS)
    if extra:
        sec = _Section("other-figures", "Other figures")
        for p in extra:
            sec.image(p, p.stem)
        out.append(sec)
    return out


def _provenance(run: Run) -> _Section:
    sec = _Section("provenance", "Provenance")
    cfg = yaml.safe_dump(config_to_dict(run.config), sort_keys=False)
    sec.details("resolved configuration (config.yaml)", cfg.rstrip())
    man = _read_json(run.path / "manifest.json")
    if man:
        t = _Table(["", ""])
        for k in ("created", "updated", "python", "platform"):
            if k in man:
                t.add(k, man[k])
        for k, v in (man.get("versions") or {}).items():
            t.add(k, v if v is not None else "not installed")
        for k, v in (man.get("timings") or {}).items():
            t.add(f"time: {k}", f"{float(v):.0f} s")
        t.caption = "versions and timings (manifest.json)"
        sec.table(t, "kv")
        if man.get("hashes"):
            ht = _Table(["file", "sha256"], caption="hashes")
            for k, v in man["hashes"].items():
                ht.add(k, v)
            sec.table(ht, "kv")
    files = sorted(p for p in run.path.rglob("*") if p.is_file() and not p.name.startswith("."))
    ft = _Table(["file", "bytes"], caption=f"the run directory ({len(files)} files)")
    for p in files:
        ft.add(str(p.relative_to(run.path)), _n(p.stat().st_size))
    sec.md.append(ft.md())
    sec.html.append(f"<details><summary>{_esc(ft.caption)}</summary>{ft.html('kv')}</details>")
    sec.details("summary.json", json.dumps(run.read_summary(), indent=1, sort_keys=True))
    return sec


def _md_to_html(md: str) -> str:
    """Just enough Markdown for the tables other stages write (control.md): tables, code, bold, paragraphs."""
    lines = md.splitlines()
    out, i = [], 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
            continue
        if ln.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= {"-", ":"} for c in cells):
                    rows.append(cells)
                i += 1
            t = "<table>"
            for k, r in enumerate(rows):
                tag = "th" if k == 0 else "td"
                t += "<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in r) + "</tr>"
            out.append(t + "</table>")
            continue
        if ln.strip():
            out.append(f"<p>{_inline(ln)}</p>")
        i += 1
    return "\n".join(out)


def _inline(s: str) -> str:
    esc = html.escape(s)
    parts = esc.split("**")
    esc = "".join(p if k % 2 == 0 else f"<b>{p}</b>" for k, p in enumerate(parts))
    parts = esc.split("`")
    return "".join(p if k % 2 == 0 else f"<code>{p}</code>" for k, p in enumerate(parts))


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:0 auto;
 padding:12px 20px 40px;line-height:1.4;font-size:15px;color:#1b1b1b;overflow-wrap:anywhere}
h1{font-size:1.5em;margin:.2em 0 .4em}h2{font-size:1.15em;margin:1.1em 0 .35em}h3{font-size:1.02em;margin:1em 0 .3em}
.headline h2{font-size:.95em;margin:.5em 0 .25em;color:#444;text-transform:uppercase;letter-spacing:.03em}
.sub{font-weight:normal;color:#555;font-size:.8em}
.cols{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:0 28px}
@media (max-width:800px){.cols{grid-template-columns:minmax(0,1fr)}}
.big{font-size:1.05em;margin:.2em 0}
table{border-collapse:collapse;margin:.3em 0 .6em;max-width:100%;font-size:14px}
td,th{border:1px solid #d5d5d5;padding:2px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}caption{text-align:left;font-weight:bold;padding:.2em 0}
table.returns td:nth-child(n+2),table.steps td:nth-child(2){text-align:right;white-space:nowrap}
table.returns td:nth-child(3){color:#a11}
tr.total td{font-weight:bold}tr.estimate td{font-style:italic;color:#555}
table.kv{font-size:13px}
pre{background:#f5f5f5;padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere;font-size:12.5px}
img{max-width:100%;height:auto;display:block}figure{margin:.4em 0 1em}
.equations{margin:.2em 0 .4em}
.eq{display:flex;align-items:baseline;gap:.35em;margin:.35em 0;padding:.15em 0;border-bottom:1px dotted #e3e3e3}
.eq .lhs{flex:none;white-space:nowrap}
.eq .rhs{display:flex;flex-wrap:wrap;align-items:baseline;column-gap:.5em;row-gap:.3em;min-width:0}
math{font-size:1.12em}
details{margin:.3em 0 .8em}summary{cursor:pointer;color:#235}
.note{color:#555;font-size:.92em}
ul.skipped{margin:.2em 0;padding-left:1.2em}
nav{font-size:.9em;margin:.8em 0;color:#555}nav a{margin-right:.8em}
"""


def write_report(run: Run) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` into the run directory (and the figures into ``plots/``)."""
    h = headline_figures(run)
    head_md, head_html = _headline(run, h)
    sections = [_equations(run), _plots(run, h), *_details(run), _provenance(run)]
    title = f"sindyrl report — {run.config.name or run.config.env.id} ({run.path.name})"
    md = [f"# {title}\n", head_md]
    body = [head_html, "<nav>" + "".join(f"<a href='#{s.id}'>{_esc(s.title)}</a>" for s in sections) + "</nav>"]
    for sec in sections:
        md.append(f"## {sec.title}\n\n" + "\n".join(sec.md))
        body.append(f"<section id='{sec.id}'><h2>{_esc(sec.title)}</h2>" + "\n".join(sec.html) + "</section>")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>")
    paths = {"md": run.path / "report.md", "html": run.path / "report.html"}
    atomic_write(paths["md"], "\n".join(md))
    atomic_write(paths["html"], page)
    return paths
