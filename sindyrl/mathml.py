"""Typeset a :class:`~sindyrl.sparse.SparseModel`'s equations as MathML for the run report.

Each equation is a left-hand side and one ``<math>`` element per term, laid
out in a wrapping flex row by the report's CSS: lines break only between
terms, so a 20-term policy wraps instead of scrolling sideways. Browsers
render MathML natively (no JavaScript, no network).

Names are set the way a control engineer writes them: ``th`` is θ,
``th_dot`` is θ with a dot, ``cos_th`` is cos θ, ``u0`` is u with subscript 0;
any other name is kept as it is.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import numpy as np

from .sparse import SparseModel

__all__ = ["equation_rows", "name_mathml", "number_mathml"]

_GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "eps": "ε", "epsilon": "ε", "zeta": "ζ", "eta": "η",
    "th": "θ", "theta": "θ", "kappa": "κ", "lambda": "λ", "lam": "λ", "mu": "μ", "nu": "ν", "xi": "ξ",
    "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω", "om": "ω",
}
_APPLY = "<mo>&#x2061;</mo><mspace width='0.17em'/>"  # function application: "cos θ" (Chromium adds no space)
_TIMES = "<mo>&#x2062;</mo>"  # invisible times between a coefficient or frequency and what it multiplies
_FACTOR_SEP = "<mo>&#x2062;</mo><mspace width='0.2em'/>"  # between factors: "cos θ sin θ", not "cosθsinθ"


def _mi(text: str) -> str:
    return f"<mi>{html.escape(text)}</mi>"


def _symbol(base: str) -> str:
    """One identifier without trig prefix: Greek names, a trailing index as subscript, ``_dot`` as an accent."""
    parts = base.split("_")
    dots = 0
    while len(parts) > 1 and parts[-1] in ("dot", "ddot"):
        dots += 1 if parts.pop() == "dot" else 2
    head, subs = parts[0], parts[1:]
    m = re.fullmatch(r"([A-Za-z]+)(\d+)", head)
    if m and not subs:
        head, subs = m.group(1), [m.group(2)]
    core = _mi(_GREEK.get(head, head))
    if dots:
        # a plain (non-accent) over-script: with accent='true' the dot touches the letter in common fonts
        core = f"<mover>{core}<mo>{'..' if dots >= 2 else '.'}</mo></mover>"
    if subs:
        sub = "".join(f"<mn>{s}</mn>" if s.isdigit() else _mi(_GREEK.get(s, s)) for s in subs)
        core = f"<msub>{core}<mrow>{sub}</mrow></msub>"
    return core


def name_mathml(name: str, power: int = 1) -> str:
    """MathML (inner, without ``<math>``) of one input or output name, raised to ``power``."""
    m = re.fullmatch(r"(sin|cos|tan)_(.+)", name)
    if m:
        fn = _mi(m.group(1))
        if power != 1:
            fn = f"<msup>{fn}<mn>{power}</mn></msup>"
        return f"<mrow>{fn}{_APPLY}{_symbol(m.group(2))}</mrow>"
    sym = _symbol(name)
    return f"<msup>{sym}<mn>{power}</mn></msup>" if power != 1 else sym


def number_mathml(v: float, precision: int = 3) -> str:
    """A magnitude with ``precision`` significant digits; exponents as ×10ⁿ."""
    s = f"{abs(v):.{precision}g}"
    if "e" in s:
        mant, exp = s.split("e")
        exp_s = str(int(exp)).replace("-", "−")
        return f"<mn>{mant}</mn><mo>×</mo><msup><mn>10</mn><mn>{exp_s}</mn></msup>"
    return f"<mn>{s}</mn>"


def _term_mathml(term, inputs: Sequence[str]) -> str:
    parts = []
    for idx, kind, p in term:
        if kind == "pow":
            parts.append(name_mathml(inputs[idx], int(p)))
        else:
            arg = name_mathml(inputs[idx])
            if p != 1:
                f = int(p) if float(p).is_integer() else p
                arg = f"<mn>{f}</mn>{_TIMES}{arg}"
            parts.append(f"<mrow>{_mi(kind)}{_APPLY}<mo>(</mo>{arg}<mo>)</mo></mrow>")
    return _FACTOR_SEP.join(parts)


def equation_rows(model: SparseModel, kind: str = "map", precision: int = 3) -> list[str]:
    """One HTML ``<div class='eq'>`` per output, each term its own ``<math>`` (so lines break between terms).

    kind : {"map", "next"}
        ``"next"`` writes the left-hand side as ``y[k+1]`` (a discrete-time dynamics map; the right-hand side
        is at step k), ``"map"`` as ``y``.
    """
    rows = []
    for o, out_name in enumerate(model.outputs):
        lhs = name_mathml(out_name)
        if kind == "next":
            lhs += "<mo>[</mo><mi>k</mi><mo>+</mo><mn>1</mn><mo>]</mo>"
        terms = []
        nz = np.flatnonzero(model.coef[o])
        for j, k in enumerate(nz):
            c = float(model.coef[o, k])
            sign = ("<mo>−</mo>" if c < 0 else "") if j == 0 else ("<mo form='infix'>−</mo>" if c < 0
                                                                    else "<mo form='infix'>+</mo>")
            body = _term_mathml(model.terms[k], model.inputs)
            num = number_mathml(c, precision)
            if body and f"{abs(c):.{precision}g}" == "1":
                inner = body  # "1 sin θ" reads as "sin θ"
            else:
                inner = num + (_TIMES + body if body else "")
            terms.append(f"<math>{sign}{inner}</math>")
        if not terms:
            terms.append("<math><mn>0</mn></math>")
        label = html.escape(f"{out_name} equation")
        rows.append(f"<div class='eq' role='group' aria-label='{label}'><span class='lhs'><math>{lhs}<mo>=</mo></math>"
                    f"</span><span class='rhs'>{' '.join(terms)}</span></div>")
    return rows
