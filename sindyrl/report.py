"""The run report: ``report.md`` and a self-contained ``report.html`` (plots embedded, opens offline).

It shows what was learned (equations of the dynamics, reward and policy), how
learning went (return against real steps), how good the model is (rollout
against a held-out real trajectory), how the sparse policy compares with the
network (actions along one trajectory, returns, sizes), and whatever later
stages added (control, export, HIL, robust).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import yaml

from .config import config_to_dict
from .runs import Run, atomic_write

__all__ = ["write_report", "plot_policy_comparison"]


def plot_policy_comparison(run: Run, steps: int = 200) -> Path | None:
    """Neural and sparse actions along one real trajectory driven by the neural policy."""
    if not (run.agent_path.is_file() and run.model_path("policy").is_file()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .policy import SparsePolicy

    agent = run.load_agent()
    pol = SparsePolicy(run.load_model("policy"))
    env = run.make_env()
    obs, _ = env.reset(seed=run.config.seed)
    a_nn, a_sp = [], []
    for _ in range(steps):
        a = agent.predict(obs, deterministic=True)[0]
        a_nn.append(np.asarray(a, dtype=np.float64))
        a_sp.append(pol.act(np.asarray(obs, dtype=np.float64)))
        obs, _, term, trunc, _ = env.step(a)
        if term or trunc:
            break
    env.close()
    a_nn, a_sp = np.array(a_nn), np.array(a_sp)
    n = a_nn.shape[1]
    fig, axes = plt.subplots(n, 1, figsize=(6, 1.9 * n + 0.6), squeeze=False, sharex=True)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(a_nn[:, i], "k-", lw=1.5, label="neural")
        ax.plot(a_sp[:, i], "C2--", lw=1.2, label="sparse")
        ax.set_ylabel(run.action_names[i])
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[-1, 0].set_xlabel("step (trajectory of the neural policy on the real env)")
    fig.tight_layout()
    p = run.plots_dir / "policy_comparison.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _num(v, digits: int) -> str:
    """A number for a table; missing or diverged values print as such."""
    if v is None:
        return "diverged"
    return f"{v:.{digits}f}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _skipped_section(summary: dict) -> tuple[str, str, list[Path]] | None:
    """The stages that did not run (``summary["skipped"]``) and why."""
    skipped = summary.get("skipped") or {}
    if not skipped:
        return None
    t = "| stage | reason |\n|---|---|\n" + "".join(
        f"| {stage} | {str(reason).replace('|', '/')} |\n" for stage, reason in skipped.items())
    return ("Skipped stages", t, [])


def _sections(run: Run) -> list[tuple[str, str, list[Path]]]:
    """(title, markdown body, images) in report order."""
    s = run.read_summary()
    out: list[tuple[str, str, list[Path]]] = []
    cfg_yaml = yaml.safe_dump(config_to_dict(run.config), sort_keys=False)
    out.append(("Configuration", f"```yaml\n{cfg_yaml}```\n", []))
    eq = []
    for name, title in (("dynamics", "Dynamics x[k+1] = f(x[k], u[k])"), ("reward", "Reward r(x[k], u[k])"),
                        ("policy", "Sparse policy u = pi(x)")):
        if run.model_path(name).is_file():
            m = run.load_model(name)
            lhs = [f"{o}'" for o in m.outputs] if name == "dynamics" else None
            eq.append(f"**{title}** — {m.nnz} nonzero coefficients"
                      + (f", {m.n_models} ensemble members" if m.n_models else "") + "\n\n```\n"
                      + "\n".join(m.equations(lhs=lhs)) + "\n```\n")
    if run.config.reward.known:
        eq.append(f"**Reward**: known function `{run.config.reward.known}`.\n")
    out.append(("Learned equations", "\n".join(eq) or "(no models yet)\n", []))
    lc = run.plots_dir / "learning_curve.png"
    rows = run.read_metrics()
    body = ""
    if rows:
        body = "| iteration | real steps | eval return | model one-step error | rollout error |\n|---|---|---|---|---|\n"
        for r in rows:
            body += (f"| {int(r['iteration'])} | {int(r['real_steps_collect'])} | {_num(r['eval_return_mean'], 1)} ± "
                     f"{_num(r['eval_return_std'], 1)} | {_num(r['model_one_step_error'], 4)} | "
                     f"{_num(r.get('model_rollout_error'), 4)} |\n")
    out.append(("Learning curve (return against real environment steps)", body, [lc] if lc.is_file() else []))
    mr = run.plots_dir / "model_rollout.png"
    out.append(("Model rollout against a held-out real trajectory",
                "Open-loop prediction of the learned dynamics with the recorded actions of a real episode that was "
                "never used for fitting.\n", [mr] if mr.is_file() else []))
    if "eval_return_mean" in s or "neural_policy_return_mean" in s:
        t = "| policy | mean return | std | episodes |\n|---|---|---|---|\n"
        if "eval_return_mean" in s:
            t += f"| neural (end of Dyna) | {s['eval_return_mean']:.1f} | {s['eval_return_std']:.1f} | " \
                 f"{s.get('eval_episodes', '')} |\n"
        if "neural_policy_return_mean" in s:
            n = len(s.get("neural_policy_returns", []))
            t += f"| neural | {s['neural_policy_return_mean']:.1f} | {s['neural_policy_return_std']:.1f} | {n} |\n"
            t += f"| sparse | {s['sparse_policy_return_mean']:.1f} | {s['sparse_policy_return_std']:.1f} | {n} |\n"
        extra = []
        for k in sorted(s):
            if k.startswith("control_") and k.endswith("_return_mean"):
                extra.append(f"| {k[len('control_'):-len('_return_mean')]} | {s[k]:.1f} | "
                             f"{s.get(k.replace('_mean', '_std'), float('nan')):.1f} | |")
            if k == "hil_return_mean":
                extra.append(f"| HIL ({s.get('hil_board', 'board')}) | {s[k]:.1f} | | |")
        t += "\n".join(extra) + ("\n" if extra else "")
        t += f"\nReal steps used for collection: {s.get('real_steps_collect', '?')} " \
             f"(evaluation: {s.get('real_steps_eval', '?')} more).\n"
        out.append(("Returns on the real environment (same reset seeds)", t, []))
    if "neural_policy_params" in s:
        t = "| policy | size |\n|---|---|\n"
        t += f"| neural (weights and biases of the actor) | {s['neural_policy_params']} |\n"
        t += f"| sparse (nonzero coefficients) | {s['sparse_policy_nnz']} |\n"
        t += f"\nThe sparse policy is {100 * s['sparse_policy_nnz'] / max(s['neural_policy_params'], 1):.2f}% " \
             "of the network's size.\n"
        hist = s.get("distill_history") or []
        if hist:
            t += "\nDistillation passes (DAgger):\n\n| pass | labelled states | nnz | held-out MSE | return |\n" \
                 "|---|---|---|---|---|\n"
            for h in hist:
                ret = f"{h['return_mean']:.1f}" if "return_mean" in h else ""
                t += f"| {h['pass']} | {h['n_states']} | {h['nnz']} | {h['val_mse']:.4g} | {ret} |\n"
        pc = plot_policy_comparison(run)
        out.append(("Sparse vs neural policy", t, [pc] if pc else []))
    ctl = run.path / "control.md"
    if ctl.is_file():
        out.append(("Classical control on the learned model", ctl.read_text(), []))
    other = {k: v for k, v in s.items() if k.startswith(("onnx_", "hil_", "robust_"))
             and not isinstance(v, (list, dict))}
    if other:
        t = "| figure | value |\n|---|---|\n" + "".join(f"| {k} | {_fmt(v)} |\n" for k, v in sorted(other.items()))
        out.append(("Export, hardware-in-the-loop and robustness figures", t, []))
    skipped = _skipped_section(s)
    if skipped:
        out.append(skipped)
    extra_imgs = sorted(p for p in run.plots_dir.glob("*.png")
                        if p.name not in {"learning_curve.png", "model_rollout.png", "policy_comparison.png"})
    if extra_imgs:
        out.append(("Other figures", "", extra_imgs))
    return out


def _md_to_html(md: str) -> str:
    """Just enough Markdown for the report: tables, code blocks, bold, paragraphs."""
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
                t += "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in r) + "</tr>"
            out.append(t + "</table>")
            continue
        if ln.strip():
            esc = html.escape(ln)
            parts = esc.split("**")
            esc = "".join(p if k % 2 == 0 else f"<b>{p}</b>" for k, p in enumerate(parts))
            out.append(f"<p>{esc}</p>")
        i += 1
    return "\n".join(out)


def write_report(run: Run) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` into the run directory."""
    sections = _sections(run)
    title = f"sindyrl report — {run.config.name or run.config.env.id} ({run.path.name})"
    md = [f"# {title}\n"]
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
         "body{font-family:sans-serif;max-width:980px;margin:2em auto;line-height:1.4}"
         "pre{background:#f4f4f4;padding:.6em;overflow-x:auto;font-size:12px}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
         "img{max-width:100%}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for sec_title, body, imgs in sections:
        md.append(f"## {sec_title}\n\n{body}")
        h.append(f"<h2>{html.escape(sec_title)}</h2>")
        h.append(_md_to_html(body))
        for p in imgs:
            md.append(f"![{p.stem}](plots/{p.name})\n")
            b64 = base64.b64encode(p.read_bytes()).decode()
            h.append(f"<img alt='{html.escape(p.stem)}' src='data:image/png;base64,{b64}'>")
    h.append("<h2>Summary (summary.json)</h2><pre>"
             + html.escape(json.dumps(run.read_summary(), indent=1, sort_keys=True)) + "</pre></body></html>")
    paths = {"md": run.path / "report.md", "html": run.path / "report.html"}
    atomic_write(paths["md"], "\n".join(md))
    atomic_write(paths["html"], "\n".join(h))
    return paths
