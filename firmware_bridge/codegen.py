"""C code generation: a policy or model as plain C for a microcontroller.

Two sources, one entry point. A :class:`~sindyrl.sparse.SparseModel` becomes
readable C: the factors of its active terms (:meth:`SparseModel.active_terms`)
are ``const`` locals computed once (``const float sin_th = sinf(th);``, powers
built from lower ones, higher harmonics of an input's base frequency by a
recurrence instead of more libm calls, products several outputs share), then
every output is its sum of terms written out, followed by the same finishing
steps as :meth:`SparseModel.evaluate` in the same order (``unit_pairs``
renormalisation with ``UNIT_EPS``, then ``output_bounds`` clipping). A neural MLP policy from stable-baselines3 (TD3/DDPG, SAC, PPO/A2C
with ReLU or tanh layers) runs on emlearn's ``eml_net`` inference engine,
wrapped in the observation normalisation and the action squash/rescale/clip
that SB3's ``predict`` applies.

Either way the board gets::

    int sindyrl_<name>_eval(const float *in, size_t n_in, float *out, size_t n_out);

returning ``SINDYRL_EVAL_OK`` (0) or a negative error code (``board/sindyrl_eval.h``, one
shared header copied next to the generated files), with ``static const``
weights, no heap, no stdio, no recursion, and a header that documents the input
and output order, bounds, the generator's version and the model's hash.
"""

from __future__ import annotations

import hashlib
import keyword
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sindyrl.sparse import UNIT_EPS, SparseModel, term_name

__all__ = [
    "CODEGEN_VERSION", "GeneratedC", "NeuralSpec", "generate_c", "generate_sparse_c",
    "generate_neural_c", "neural_spec_from_sb3", "emlearn_include_dir",
]

#: Bumped whenever the generated code changes meaning or layout.
CODEGEN_VERSION = "2"

_C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum",
    "extern", "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return",
    "short", "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
    "volatile", "while", "_Bool", "_Complex", "_Imaginary",
}
# names the generated function body uses itself
_RESERVED_LOCALS = {"in", "out", "n_in", "n_out", "y", "r", "i", "x", "a", "ok", "err"}


@dataclass(frozen=True)
class GeneratedC:
    """Files written by the generator and what a build needs to know about them."""

    name: str
    kind: str  # "sparse" or "neural"
    header: Path
    source: Path
    n_in: int
    n_out: int
    model_hash: str
    inputs: list[str]
    outputs: list[str]
    safe_action: np.ndarray
    include_dirs: list[Path] = field(default_factory=list)  # pass with -isystem
    extra_sources: list[Path] = field(default_factory=list)  # compiled and linked with ``source``
    n_arms: int = 0  # > 0: a policy set (firmware_bridge.policy_set) with a ``sindyrl_<name>_select``
    error_bound: np.ndarray | None = None  # fixed point: per-output bound of |C - SparseModel.evaluate| in the bounds
    input_low: np.ndarray | None = None  # the model's input_bounds (header macros _IN_LO/_IN_HI, domain guard)
    input_high: np.ndarray | None = None

    @property
    def symbol(self) -> str:
        return f"sindyrl_{self.name}_eval"

    @property
    def macro(self) -> str:
        return f"SINDYRL_{self.name.upper()}"


# --------------------------------------------------------------------- helpers
def _generator_line() -> str:
    try:
        from importlib.metadata import version

        pkg = version("sindyrl")
    except Exception:  # not installed (source checkout): still say what generated it
        pkg = "unknown"
    return f"firmware_bridge.codegen {CODEGEN_VERSION} (sindyrl {pkg})"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
        raise ValueError(
            f"generate_c: name {name!r} must be 1-32 characters of lowercase letters, digits and '_' "
            "starting with a letter (it becomes part of C identifiers)"
        )
    return name


def _f32(v: float) -> str:
    """The shortest C float literal that round-trips float32 exactly."""
    if not (np.isfinite(v) and abs(float(v)) <= float(np.finfo(np.float32).max)):
        raise ValueError(f"value {v!r} is not representable as a finite float32 (C code with real='float'); "
                         "rescale the model or generate with real='double'")
    s = np.format_float_scientific(np.float32(v), unique=True, trim="-")
    m, e = s.split("e")
    if -5 <= int(e) <= 6:  # plain positional notation reads better in this range
        s = np.format_float_positional(np.float32(v), unique=True, trim="-")
    if not any(ch in s for ch in ".en"):
        s += ".0"
    return s + "f"


def _comment_safe(s: str) -> str:
    return str(s).replace("*/", "* /").replace("\n", " ")


def _identifiers(names: Sequence[str]) -> list[str]:
    """C identifiers for input names: readable, unique, never a keyword or a local."""
    used: set[str] = set()
    out = []
    for k, n in enumerate(names):
        base = re.sub(r"[^A-Za-z0-9_]", "_", str(n)) or f"in{k}"
        if base[0].isdigit():
            base = "in_" + base
        ident = base
        if ident in _C_KEYWORDS or ident in _RESERVED_LOCALS or keyword.iskeyword(ident) or ident in used:
            ident = f"{base}_{k}"
        while ident in used:
            ident += "_"
        used.add(ident)
        out.append(ident)
    return out


def _bounds_lines(lo, hi, names: Sequence[str], what: str) -> list[str]:
    if lo is None:
        return [f" * {what}: unbounded"]
    return [f" *   {names[i]}: [{lo[i]:.9g}, {hi[i]:.9g}]" for i in range(len(names))]


#: The one header with the eval return codes; copied next to every generated header that includes it.
EVAL_HEADER = Path(__file__).resolve().parent / "board" / "sindyrl_eval.h"


def _copy_eval_header(out_dir: Path) -> Path:
    dst = out_dir / EVAL_HEADER.name
    text = EVAL_HEADER.read_text()
    if not dst.is_file() or dst.read_text() != text:
        dst.write_text(text)
    return dst


def _safe_action(lo, hi, n_out: int) -> np.ndarray:
    """Zero moved into the bounds: what the board sends when it must not act on its input."""
    a = np.zeros(n_out)
    if lo is not None:
        a = np.clip(a, lo, hi)
    return a.astype(np.float32)


def _input_bound_defs(gen: GeneratedC) -> list[str]:
    if gen.input_low is None:
        return []
    big = float(np.finfo(np.float32).max)

    def lit(v: float) -> str:
        return _f32(float(np.clip(v, -big, big)))

    return [
        "/* The inputs the model was fitted on (SparseModel.input_bounds; +-FLT_MAX for unbounded), used by the",
        " * board's opt-in domain guard (-DSINDYRL_DOMAIN_GUARD=margin). */",
        f"#define {gen.macro}_IN_LO {{ {', '.join(lit(v) for v in gen.input_low)} }}",
        f"#define {gen.macro}_IN_HI {{ {', '.join(lit(v) for v in gen.input_high)} }}",
    ]


def _write_header(path: Path, gen: GeneratedC, doc_lines: list[str], extra_defs: str = "") -> None:
    m = gen.macro
    safe = ", ".join(_f32(v) for v in gen.safe_action)
    text = "\n".join(
        [
            "/*",
            f" * Generated by {_generator_line()}. Do not edit.",
            *doc_lines,
            " */",
            f"#ifndef {m}_H",
            f"#define {m}_H",
            "",
            "#include <stddef.h>",
            "",
            '#include "sindyrl_eval.h"',
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            f"#define {m}_N_IN {gen.n_in}",
            f"#define {m}_N_OUT {gen.n_out}",
            f'#define {m}_NAME "{gen.name}"',
            f'#define {m}_HASH "{gen.model_hash}"',
            f"#define {m}_KIND {1 if gen.kind == 'sparse' else 2} /* 1 sparse, 2 neural */",
            "/* Action sent instead of a result when the input cannot be trusted (0 clipped into the bounds). */",
            f"#define {m}_SAFE_ACTION {{ {safe} }}",
            *_input_bound_defs(gen),
            extra_defs,
            "/* Evaluate the model: in[n_in] -> out[n_out] (caller owns both). Returns SINDYRL_EVAL_OK or",
            " * a negative SINDYRL_EVAL_ERR_*. No heap, no I/O, no recursion; not re-entrant for neural models",
            " * (emlearn keeps its activations in static buffers). */",
            f"int {gen.symbol}(const float *in, size_t n_in, float *out, size_t n_out);",
            "",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            f"#endif /* {m}_H */",
            "",
        ]
    )
    path.write_text(text)
    _copy_eval_header(path.parent)


# ---------------------------------------------------------------- sparse models
class _Names:
    """Unique C identifiers for the locals of one generated function (inputs, factors, terms)."""

    def __init__(self, taken):
        self.used = set(taken) | _C_KEYWORDS | _RESERVED_LOCALS

    def new(self, base: str) -> str:
        name = base
        while name in self.used:
            name += "_"
        self.used.add(name)
        return name


#: Highest multiple of an input's base frequency built by the recurrence instead of a libm call.
MAX_HARMONIC = 8


@dataclass
class Harmonics:
    """sin/cos of ``n * base * x`` for n = 1..max, built from ``sin(base x)`` and ``cos(base x)`` by the
    Chebyshev recurrence ``s_n = 2 c_1 s_(n-1) - s_(n-2)`` (the same for ``c_n``, with s_0 = 0, c_0 = 1):
    two multiplications and a subtraction per harmonic instead of a libm call (~50-100 instructions on a
    Cortex-M4F), at an absolute error of a few float32 ulps of 1 for n <= MAX_HARMONIC."""

    base: float
    sin_max: int  # 0: no sine of this input is used
    cos_max: int


@dataclass
class SharedFactors:
    """Each factor the active terms of a model use, computed once: the plan every sparse C backend follows.

    ``pows[i]`` lists the exponents >= 2 of input ``i`` in the order they are built, each as
    ``(e, a, b)`` meaning ``x^e = x^a * x^b`` (both already built, or 1 = the input itself);
    ``trig`` lists the sin/cos factors computed by a libm call, in first-use order; ``harmonics[i]``
    the sines and cosines of input ``i`` built from its base frequency (when that saves calls);
    ``terms`` are the active term indices (:meth:`SparseModel.active_terms`) and ``shared_terms``
    those with two or more factors that two or more outputs use (their product is computed once too).
    """

    terms: list[int]
    pows: dict[int, list[tuple[int, int, int]]]
    trig: list[tuple]
    harmonics: dict[int, Harmonics]
    shared_terms: list[int]
    used_inputs: set[int]

    @classmethod
    def of(cls, model: SparseModel, harmonics: bool = True) -> SharedFactors:
        terms = [int(k) for k in model.active_terms()]
        want: dict[int, set[int]] = {}
        trig: list[tuple] = []
        used: set[int] = set()
        for k in terms:
            for f in model.terms[k]:
                used.add(f[0])
                if f[1] == "pow":
                    if int(f[2]) >= 2:
                        want.setdefault(f[0], set()).add(int(f[2]))
                elif f not in trig:
                    trig.append(f)
        pows = {i: _power_chain(sorted(es)) for i, es in sorted(want.items())}
        n_out_using = np.count_nonzero(model.coef != 0, axis=0)
        shared = [k for k in terms if len(model.terms[k]) >= 2 and n_out_using[k] >= 2]
        harm = _harmonics(trig) if harmonics else {}
        trig = [f for f in trig if f[0] not in harm]
        return cls(terms=terms, pows=pows, trig=trig, harmonics=harm, shared_terms=shared, used_inputs=used)

    def harmonic_of(self, f) -> tuple[str, int] | None:
        """(kind, n) when factor ``f`` is the n-th harmonic of its input's base frequency."""
        h = self.harmonics.get(f[0])
        if h is None or f[1] == "pow":
            return None
        return f[1], int(round(f[2] / h.base))


def _harmonics(trig: list[tuple]) -> dict[int, Harmonics]:
    """Inputs whose sines/cosines are cheaper as harmonics of one base frequency than as libm calls."""
    out = {}
    for i in sorted({f[0] for f in trig}):
        fs = [f for f in trig if f[0] == i]
        base = min(f[2] for f in fs)
        if base <= 0:
            continue
        ns = [f[2] / base for f in fs]
        if not all(abs(n - round(n)) < 1e-9 and round(n) <= MAX_HARMONIC for n in ns):
            continue
        sin_max = max((round(n) for f, n in zip(fs, ns) if f[1] == "sin"), default=0)
        cos_max = max((round(n) for f, n in zip(fs, ns) if f[1] == "cos"), default=0)
        calls = 1 + (sin_max > 0)  # cos(base x) always, sin(base x) when a sine is used
        if calls < len(fs):
            out[i] = Harmonics(base=float(base), sin_max=int(sin_max), cos_max=int(cos_max))
    return out


def _power_chain(exponents: list[int]) -> list[tuple[int, int, int]]:
    """Steps ``(e, a, b)`` building every exponent in ``exponents`` from smaller ones (``x^e = x^a * x^b``)."""
    have = {1}
    steps: list[tuple[int, int, int]] = []

    def build(e: int) -> None:
        if e in have:
            return
        a = max(h for h in have if h < e)
        if e - a not in have:
            build(e - a)
            a = max(h for h in have if h < e)
        steps.append((e, a, e - a))
        have.add(e)

    for e in exponents:
        build(e)
    return steps


def _fmt_freq(p: float) -> str:
    """A frequency as part of an identifier: 2 -> "2", 0.5 -> "0p5", -1 -> "m1"."""
    t = str(int(p)) if float(p).is_integer() else repr(float(p))
    return re.sub(r"[^0-9a-z]", "_", t.replace("-", "m").replace(".", "p"))


def _sparse_locals(model: SparseModel, plan: SharedFactors, idents: Sequence[str], real: str,
                   names: _Names) -> tuple[list[str], dict, dict]:
    """Declarations of the shared factors and terms as ``const`` locals, with the C expression of each factor
    (keyed by factor) and of each shared term (keyed by term index)."""
    lines: list[str] = []
    fac: dict = {}
    for i, steps in plan.pows.items():
        pw = {1: idents[i]}
        for e, a, b in steps:
            pw[e] = names.new(f"{idents[i]}_pow{e}")
            lines.append(f"const {real} {pw[e]} = {pw[a]} * {pw[b]};")
        for e, v in pw.items():
            fac[(i, "pow", float(e))] = v
    for i in plan.used_inputs:
        fac[(i, "pow", 1.0)] = idents[i]
    fn = {"sin": "sinf", "cos": "cosf"} if real == "float" else {"sin": "sin", "cos": "cos"}
    for f in plan.trig:
        i, kind, p = f
        x = idents[i]
        v = names.new(f"{kind}{'' if p == 1 else _fmt_freq(p)}_{x}")
        arg = x if p == 1 else f"{_lit(p, real)} * {x}"
        lines.append(f"const {real} {v} = {fn[kind]}({arg}); /* {_comment_safe(term_name((f,), model.inputs))} */")
        fac[f] = v
    one, two = _lit(1.0, real), _lit(2.0, real)
    for i, h in plan.harmonics.items():
        x = idents[i]
        arg = x if h.base == 1 else f"{_lit(h.base, real)} * {x}"
        hv: dict[tuple[str, int], str] = {}
        for kind, top in (("cos", max(h.cos_max, 1)), ("sin", h.sin_max)):
            for n in range(1, top + 1):
                f = (i, kind, round(n * h.base, 12))
                v = hv[kind, n] = names.new(f"{kind}{'' if f[2] == 1 else _fmt_freq(f[2])}_{x}")
                what = _comment_safe(term_name((f,), model.inputs))
                if n == 1:
                    lines.append(f"const {real} {v} = {fn[kind]}({arg}); /* {what} */")
                else:
                    c1 = hv["cos", 1]
                    prev2 = hv.get((kind, n - 2), one if kind == "cos" else None)
                    tail = f" - {prev2}" if prev2 is not None else ""
                    lines.append(f"const {real} {v} = {two} * {c1} * {hv[kind, n - 1]}{tail}; /* {what} */")
        for k in plan.terms:  # the model's own factors (their frequency need not be exactly n * base)
            for f in model.terms[k]:
                if f[0] == i and plan.harmonic_of(f) is not None:
                    fac[f] = hv[plan.harmonic_of(f)]
    term: dict = {}
    for k in plan.shared_terms:
        v = names.new(f"term{k}")
        lines.append(f"const {real} {v} = {' * '.join(fac[f] for f in model.terms[k])}; "
                     f"/* {_comment_safe(term_name(model.terms[k], model.inputs))} */")
        term[k] = v
    return lines, fac, term


def _lit(v: float, real: str) -> str:
    if real == "float":
        return _f32(v)
    s = repr(float(v))
    return s if any(ch in s for ch in ".en") else s + ".0"


def _sparse_generated(model: SparseModel, name: str, out_dir: str | Path) -> GeneratedC:
    """The files and facts of a sparse model's C, whatever its arithmetic (the float and fixed-point backends)."""
    name = _check_name(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lo, hi = model.output_bounds if model.output_bounds is not None else (None, None)
    return GeneratedC(
        name=name, kind="sparse", header=out_dir / f"{name}.h", source=out_dir / f"{name}.c",
        n_in=model.n_inputs, n_out=model.n_outputs, model_hash=model.content_hash(),
        inputs=list(model.inputs), outputs=list(model.outputs), safe_action=_safe_action(lo, hi, model.n_outputs),
        input_low=None if model.input_bounds is None else np.asarray(model.input_bounds[0], dtype=np.float64),
        input_high=None if model.input_bounds is None else np.asarray(model.input_bounds[1], dtype=np.float64),
    )


def generate_sparse_c(model: SparseModel, name: str, out_dir, real: str = "float") -> GeneratedC:
    """Write ``<name>.h`` and ``<name>.c`` for a SparseModel.

    Parameters
    ----------
    model : SparseModel
        Any sparse map (policy, dynamics, reward).
    name : str
        C name: the function is ``sindyrl_<name>_eval``.
    out_dir : path
        Directory for the two files (created).
    real : {"float", "double", "fixed"}, default "float"
        Arithmetic inside the function. The interface is float either way;
        ``"double"`` matches the numpy reference more closely but is emulated
        in software on a Cortex-M4F; ``"fixed"`` is integer Q-format
        arithmetic for cores without an FPU, with an error bound in the header
        (:func:`firmware_bridge.fixed_point.generate_fixed_c`).
    """
    if not isinstance(model, SparseModel):
        raise TypeError(f"generate_sparse_c: expected a SparseModel, got {type(model).__name__}")
    if real == "fixed":
        from .fixed_point import generate_fixed_c

        return generate_fixed_c(model, name, out_dir)
    if real not in ("float", "double"):
        raise ValueError(f"generate_sparse_c: real must be 'float', 'double' or 'fixed', got {real!r}")
    gen = _sparse_generated(model, name, out_dir)
    name, out_dir = gen.name, gen.header.parent
    lo, hi = model.output_bounds if model.output_bounds is not None else (None, None)
    idents = _identifiers(model.inputs)
    fl = real == "float"
    sqrt_fn = "sqrtf" if fl else "sqrt"

    doc = [
        f" * Sparse model '{_comment_safe(model.name)}' as C: sum of monomials, then unit-circle",
        " * renormalisation of unit pairs, then output clipping (the order of SparseModel.evaluate).",
        f" * Model hash (SparseModel.content_hash): {gen.model_hash}; {model.nnz} nonzero coefficients.",
        f" * Arithmetic: {real}.",
        " * Inputs, in order (in[i]):",
        *[f" *   in[{i}] {_comment_safe(n)}" for i, n in enumerate(model.inputs)],
        " * Outputs, in order (out[i]):",
        *[f" *   out[{i}] {_comment_safe(n)}" for i, n in enumerate(model.outputs)],
        " * Output bounds (clipped last):",
        *_bounds_lines(lo, hi, [_comment_safe(n) for n in model.outputs], "Output bounds"),
    ]
    if model.input_bounds is not None:
        doc += [" * Fitted on inputs within:"]
        doc += _bounds_lines(*model.input_bounds, [_comment_safe(n) for n in model.inputs], "Input bounds")
    if model.unit_pairs:
        doc += [" * Unit pairs (cos, sin) renormalised onto the unit circle:"]
        doc += [f" *   ({model.outputs[c]}, {model.outputs[s]})" for c, s in model.unit_pairs]
    doc += [" * Equations:"] + [f" *   {_comment_safe(e)}" for e in model.equations(precision=6)]
    _write_header(gen.header, gen, doc)

    body: list[str] = []
    body.append(f'/* Generated by {_generator_line()}. Do not edit. Model hash {gen.model_hash}. */')
    body.append(f'#include "{name}.h"')
    body.append("")
    body.append("#include <math.h>")
    body.append("")
    m = gen.macro
    body.append(f"int {gen.symbol}(const float *in, size_t n_in, float *out, size_t n_out)")
    body.append("{")
    body.append(f"    {real} y[{m}_N_OUT];")
    body.append("    size_t i;")
    body.append(f"    if (in == NULL || out == NULL || n_in != {m}_N_IN || n_out != {m}_N_OUT) {{")
    body.append("        return SINDYRL_EVAL_ERR_ARG;")
    body.append("    }")
    body.append("    for (i = 0; i < n_in; i++) {")
    body.append("        if (!isfinite(in[i])) {")
    body.append("            return SINDYRL_EVAL_ERR_NONFINITE;")
    body.append("        }")
    body.append("    }")
    body.append("    {")
    for i, ident in enumerate(idents):
        body.append(f"        const {real} {ident} = in[{i}]; /* {_comment_safe(model.inputs[i])} */")
    plan = SharedFactors.of(model)
    for i, ident in enumerate(idents):
        if i not in plan.used_inputs:
            body.append(f"        (void){ident};")
    decl, fac, shared = _sparse_locals(model, plan, idents, real, _Names(idents))
    if decl:
        body.append("        /* each factor (and each term several outputs use) computed once */")
        body += [f"        {ln}" for ln in decl]
    eqs = model.equations(precision=6)
    for o in range(model.n_outputs):
        body.append(f"        /* {_comment_safe(eqs[o])} */")
        ks = np.flatnonzero(model.coef[o])
        if ks.size == 0:
            body.append(f"        y[{o}] = {_lit(0.0, real)};")
            continue
        parts = []
        for k in ks:
            c = float(model.coef[o, k])
            facs = [shared[k]] if k in shared else [fac[f] for f in model.terms[k]]
            mag = _lit(abs(c), real)
            parts.append(("- " if c < 0 else "+ ") + " * ".join([mag, *facs]))
        first = parts[0][2:] if parts[0].startswith("+ ") else "-" + parts[0][2:]
        lines = [f"        y[{o}] = {first}"] + [f"               {p}" for p in parts[1:]]
        lines[-1] += ";"
        body += lines
    body.append("    }")
    for c, s in model.unit_pairs:
        body.append(f"    {{   /* ({_comment_safe(model.outputs[c])}, {_comment_safe(model.outputs[s])}) back onto "
                    "the unit circle */")
        body.append(f"        {real} r = {sqrt_fn}(y[{c}] * y[{c}] + y[{s}] * y[{s}]);")
        body.append(f"        if (r < {_lit(UNIT_EPS, real)}) {{")
        body.append(f"            r = {_lit(UNIT_EPS, real)};")
        body.append("        }")
        body.append(f"        y[{c}] = y[{c}] / r;")
        body.append(f"        y[{s}] = y[{s}] / r;")
        body.append("    }")
    if lo is not None:
        for o in range(model.n_outputs):
            if np.isfinite(lo[o]):
                body.append(f"    if (y[{o}] < {_lit(lo[o], real)}) {{ y[{o}] = {_lit(lo[o], real)}; }}")
            if np.isfinite(hi[o]):
                body.append(f"    if (y[{o}] > {_lit(hi[o], real)}) {{ y[{o}] = {_lit(hi[o], real)}; }}")
    body.append("    for (i = 0; i < n_out; i++) {")
    body.append("        out[i] = (float)y[i];")
    body.append("    }")
    body.append("    for (i = 0; i < n_out; i++) {")
    body.append("        if (!isfinite(out[i])) {")
    body.append("            return SINDYRL_EVAL_ERR_NONFINITE;")
    body.append("        }")
    body.append("    }")
    body.append("    return SINDYRL_EVAL_OK;")
    body.append("}")
    body.append("")
    gen.source.write_text("\n".join(body))
    return gen


# --------------------------------------------------------------- neural policies
@dataclass
class NeuralSpec:
    """An MLP policy with its pre- and post-processing, independent of SB3.

    ``weights[k]`` has shape (n_in, n_out) of layer k (emlearn's layout);
    ``activations[k]`` is one of "identity", "relu", "tanh". The action is
    ``a = net((clip((obs - obs_mean) * obs_scale, -obs_clip, obs_clip)))``,
    then, if ``squash``, ``a = low + 0.5 (a + 1) (high - low)``, then clipped
    to ``[low, high]``.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activations: list[str]
    action_low: np.ndarray
    action_high: np.ndarray
    squash: bool
    obs_mean: np.ndarray | None = None
    obs_scale: np.ndarray | None = None
    obs_clip: float | None = None
    inputs: list[str] | None = None
    outputs: list[str] | None = None
    source: str = "mlp"

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.biases) or len(self.weights) != len(self.activations):
            raise ValueError("NeuralSpec: weights, biases and activations must have one entry per layer")
        if len(self.weights) < 2:
            raise ValueError(
                f"NeuralSpec: emlearn needs at least 2 layers, got {len(self.weights)} "
                "(a policy without hidden layers is not supported)"
            )
        self.weights = [np.asarray(w, dtype=np.float32) for w in self.weights]
        self.biases = [np.asarray(b, dtype=np.float32).reshape(-1) for b in self.biases]
        for k, (w, b, a) in enumerate(zip(self.weights, self.biases, self.activations)):
            if w.ndim != 2 or b.shape != (w.shape[1],):
                raise ValueError(f"NeuralSpec: layer {k} weights {w.shape} / biases {b.shape} do not match")
            if k and w.shape[0] != self.weights[k - 1].shape[1]:
                raise ValueError(f"NeuralSpec: layer {k} takes {w.shape[0]} inputs, previous gives "
                                 f"{self.weights[k - 1].shape[1]}")
            if a not in ("identity", "relu", "tanh"):
                raise ValueError(f"NeuralSpec: layer {k} activation {a!r}; supported: identity, relu, tanh")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ValueError(f"NeuralSpec: layer {k} has NaN or inf weights")
        n_in, n_out = self.n_in, self.n_out
        self.action_low = np.asarray(self.action_low, dtype=np.float32).reshape(-1)
        self.action_high = np.asarray(self.action_high, dtype=np.float32).reshape(-1)
        if self.action_low.shape != (n_out,) or self.action_high.shape != (n_out,):
            raise ValueError(f"NeuralSpec: action bounds must have length {n_out}")
        if self.squash and not (np.all(np.isfinite(self.action_low)) and np.all(np.isfinite(self.action_high))):
            raise ValueError("NeuralSpec: a squashed (tanh) policy needs finite action bounds to rescale to")
        if (self.obs_mean is None) != (self.obs_scale is None):
            raise ValueError("NeuralSpec: give both obs_mean and obs_scale, or neither")
        if self.obs_mean is not None:
            self.obs_mean = np.asarray(self.obs_mean, dtype=np.float32).reshape(-1)
            self.obs_scale = np.asarray(self.obs_scale, dtype=np.float32).reshape(-1)
            if self.obs_mean.shape != (n_in,) or self.obs_scale.shape != (n_in,):
                raise ValueError(f"NeuralSpec: obs_mean / obs_scale must have length {n_in}")
        self.inputs = list(self.inputs) if self.inputs is not None else [f"obs{i}" for i in range(n_in)]
        self.outputs = list(self.outputs) if self.outputs is not None else [f"act{i}" for i in range(n_out)]
        if len(self.inputs) != n_in or len(self.outputs) != n_out:
            raise ValueError(f"NeuralSpec: need {n_in} input names and {n_out} output names")

    @property
    def n_in(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def n_out(self) -> int:
        return int(self.weights[-1].shape[1])

    @property
    def n_params(self) -> int:
        return int(sum(w.size + b.size for w, b in zip(self.weights, self.biases)))

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for a in [*self.weights, *self.biases, self.action_low, self.action_high]:
            h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
        h.update(repr((self.activations, self.squash, self.obs_clip)).encode())
        if self.obs_mean is not None:
            h.update(np.ascontiguousarray(self.obs_mean, dtype="<f4").tobytes())
            h.update(np.ascontiguousarray(self.obs_scale, dtype="<f4").tobytes())
        return h.hexdigest()[:16]

    def predict(self, obs) -> np.ndarray:
        """numpy float32 reference of exactly what the C code computes: (N, n_in) -> (N, n_out)."""
        x = np.atleast_2d(np.asarray(obs, dtype=np.float32))
        if self.obs_mean is not None:
            x = (x - self.obs_mean) * self.obs_scale
            if self.obs_clip is not None:
                x = np.clip(x, -self.obs_clip, self.obs_clip)
        for w, b, a in zip(self.weights, self.biases, self.activations):
            x = x @ w + b
            if a == "relu":
                x = np.maximum(x, 0)
            elif a == "tanh":
                x = np.tanh(x)
        if self.squash:
            x = self.action_low + 0.5 * (x + 1.0) * (self.action_high - self.action_low)
        return np.clip(x, self.action_low, self.action_high).astype(np.float32)


_ACT_NAMES = {"ReLU": "relu", "Tanh": "tanh"}


def _mlp_layers(modules, where: str) -> tuple[list, list, list]:
    """Linear/activation sequence -> per-layer (W (n_in, n_out), b, activation)."""
    import torch.nn as nn

    ws, bs, acts = [], [], []
    flat: list = []
    for mod in modules:  # SB3 nests Sequentials (e.g. SAC's mean layer with clip_mean)
        flat += list(mod) if isinstance(mod, nn.Sequential) else [mod]
    for mod in flat:
        if isinstance(mod, nn.Linear):
            ws.append(mod.weight.detach().cpu().numpy().T.copy())
            bs.append(
                mod.bias.detach().cpu().numpy().copy() if mod.bias is not None else np.zeros(mod.out_features)
            )
            acts.append("identity")
        elif isinstance(mod, nn.Identity):
            continue
        elif type(mod).__name__ in _ACT_NAMES:
            if not acts or acts[-1] != "identity":
                raise ValueError(f"{where}: activation {type(mod).__name__} does not follow a Linear layer")
            acts[-1] = _ACT_NAMES[type(mod).__name__]
        else:
            raise ValueError(
                f"{where}: unsupported layer {type(mod).__name__}; only MLPs of Linear layers with ReLU or Tanh "
                "activations can be generated as C"
            )
    return ws, bs, acts


def neural_spec_from_sb3(
    agent: Any,
    obs_normalizer: Any = None,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
) -> NeuralSpec:
    """Read the deterministic actor of an SB3 agent (or policy) into a :class:`NeuralSpec`.

    Supported: TD3/DDPG (``actor.mu``), SAC (``actor.latent_pi`` + ``actor.mu``
    + tanh squash; with gSDE too, unless ``clip_mean`` adds a Hardtanh) and
    on-policy ActorCriticPolicy (PPO/A2C: ``mlp_extractor.policy_net`` +
    ``action_net``; the deterministic action is the distribution's mean, also
    with gSDE, squashed by tanh when ``squash_output``, else clipped), each
    with a flatten feature extractor over a 1-D Box observation and a Box action
    space. ``obs_normalizer`` is an SB3 ``VecNormalize`` (its observation
    statistics are folded into the C code). Anything else raises ValueError.
    """
    import gymnasium as gym
    from stable_baselines3.common.torch_layers import FlattenExtractor

    policy = getattr(agent, "policy", agent)
    pname = type(policy).__name__
    where = f"neural_spec_from_sb3({pname})"
    obs_space = getattr(policy, "observation_space", None)
    act_space = getattr(policy, "action_space", None)
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"{where}: need a 1-D Box observation space, got {obs_space}")
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        raise ValueError(f"{where}: need a 1-D Box action space, got {act_space}")

    def check_fe(fe, what: str) -> None:
        if not isinstance(fe, FlattenExtractor):
            raise ValueError(f"{where}: {what} is {type(fe).__name__}; only FlattenExtractor is supported")

    actor = getattr(policy, "actor", None)
    if actor is not None and hasattr(actor, "mu") and hasattr(actor, "latent_pi"):  # SAC
        check_fe(actor.features_extractor, "the actor's features extractor")
        ws, bs, acts = _mlp_layers(list(actor.latent_pi) + [actor.mu], where)
        if acts[-1] != "identity":
            raise ValueError(f"{where}: unexpected activation after SAC's mean layer")
        acts[-1] = "tanh"  # SquashedDiagGaussian's deterministic action is tanh(mean)
        squash = True
    elif actor is not None and hasattr(actor, "mu"):  # TD3 / DDPG
        check_fe(actor.features_extractor, "the actor's features extractor")
        ws, bs, acts = _mlp_layers(list(actor.mu), where)
        squash = bool(policy.squash_output)
    elif hasattr(policy, "mlp_extractor") and hasattr(policy, "action_net"):  # PPO / A2C
        check_fe(policy.pi_features_extractor, "the policy's features extractor")
        ws, bs, acts = _mlp_layers(list(policy.mlp_extractor.policy_net) + [policy.action_net], where)
        squash = bool(policy.squash_output)  # only with gSDE: the mode is then tanh(mean)
        if squash:
            if acts[-1] != "identity":
                raise ValueError(f"{where}: unexpected activation after the action layer")
            acts[-1] = "tanh"
    else:
        raise ValueError(
            f"{where}: unsupported policy architecture; supported are TD3/DDPG, SAC and PPO/A2C MLP policies"
        )
    mean = scale = clip = None
    if obs_normalizer is not None:
        if not getattr(obs_normalizer, "norm_obs", False) or getattr(obs_normalizer, "obs_rms", None) is None:
            raise ValueError(f"{where}: obs_normalizer must be a VecNormalize with norm_obs=True")
        rms = obs_normalizer.obs_rms
        mean = np.asarray(rms.mean, dtype=np.float64)
        scale = 1.0 / np.sqrt(np.asarray(rms.var, dtype=np.float64) + float(obs_normalizer.epsilon))
        clip = float(obs_normalizer.clip_obs)
    return NeuralSpec(
        weights=ws, biases=bs, activations=acts, action_low=act_space.low, action_high=act_space.high,
        squash=squash, obs_mean=mean, obs_scale=scale, obs_clip=clip, inputs=inputs, outputs=outputs,
        source=f"stable-baselines3 {pname}",
    )


def _import_emlearn():
    """Import emlearn without its side effect: ``emlearn.bayes`` calls ``numpy.seterr(all='raise')`` at import,
    which would turn every later underflow in the process into an exception."""
    saved = np.geterr()
    try:
        import emlearn
        import emlearn.net  # noqa: F401
    finally:
        np.seterr(**saved)
    return emlearn


def emlearn_include_dir() -> Path:
    """Directory of emlearn's C headers (pass it with ``-isystem``: they trip ``-Wextra``)."""
    emlearn = _import_emlearn()

    return Path(emlearn.includedir)


def _array(name: str, values, per_line: int = 8) -> list[str]:
    vals = [_f32(v) for v in np.asarray(values, dtype=np.float32).reshape(-1)]
    lines = [f"static const float {name}[{len(vals)}] = {{"]
    for k in range(0, len(vals), per_line):
        lines.append("    " + ", ".join(vals[k:k + per_line]) + ",")
    lines.append("};")
    return lines


def generate_neural_c(spec: NeuralSpec, name: str, out_dir) -> GeneratedC:
    """Write ``<name>.h`` and ``<name>.c`` for an MLP policy on emlearn's ``eml_net``.

    The weights are written by this generator as float32 literals that
    round-trip exactly (emlearn 0.23's own generator prints 6 decimals, which
    costs up to 5e-7 per weight); the layer and network structures and the
    inference are emlearn's (``EmlNetLayer``, ``EmlNet``, ``eml_net_regress``).
    Compile with ``-isystem`` :func:`emlearn_include_dir`. ``eml_net.h`` defines
    non-static functions, so one firmware holds at most one neural model.
    """
    eml_net = _import_emlearn().net

    if not isinstance(spec, NeuralSpec):
        raise TypeError(f"generate_neural_c: expected a NeuralSpec, got {type(spec).__name__}")
    name = _check_name(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lo, hi = spec.action_low, spec.action_high
    gen = GeneratedC(
        name=name, kind="neural", header=out_dir / f"{name}.h", source=out_dir / f"{name}.c",
        n_in=spec.n_in, n_out=spec.n_out, model_hash=spec.content_hash(), inputs=list(spec.inputs),
        outputs=list(spec.outputs), safe_action=_safe_action(lo, hi, spec.n_out),
        include_dirs=[emlearn_include_dir()],
    )
    sizes = [spec.n_in] + [w.shape[1] for w in spec.weights]
    doc = [
        f" * Neural policy ({_comment_safe(spec.source)}): MLP {' -> '.join(map(str, sizes))}, "
        f"activations {', '.join(spec.activations)}; {spec.n_params} parameters; inference by emlearn eml_net.",
        f" * Network hash: {gen.model_hash}.",
        " * Steps: " + ("normalise observation (x - mean) * scale"
                        + (f", clip to +-{spec.obs_clip:g}" if spec.obs_clip is not None else "") + "; "
                        if spec.obs_mean is not None else "")
        + "MLP; " + ("rescale tanh output from [-1, 1] to the action bounds; " if spec.squash else "")
        + "clip to the action bounds (as stable-baselines3 predict(deterministic=True)).",
        " * Inputs, in order (in[i]):",
        *[f" *   in[{i}] {_comment_safe(n)}" for i, n in enumerate(spec.inputs)],
        " * Outputs, in order (out[i]):",
        *[f" *   out[{i}] {_comment_safe(n)}" for i, n in enumerate(spec.outputs)],
        " * Action bounds:",
        *_bounds_lines(lo, hi, [_comment_safe(n) for n in spec.outputs], "Action bounds"),
    ]
    _write_header(gen.header, gen, doc)

    net = f"sindyrl_{name}_net"
    buf = max(sizes)
    src = [
        f"/* Generated by {_generator_line()}. Do not edit. Network hash {gen.model_hash}. */",
        f'#include "{name}.h"',
        "",
        "#include <math.h>",
        "/* emlearn's inference engine; its eml_common.h includes <stdio.h>, but nothing here calls it */",
        "#include <eml_net.h>",
        "",
    ]
    layers = []
    for k, (w, b, a) in enumerate(zip(spec.weights, spec.biases, spec.activations)):
        src += _array(f"{net}_l{k}_weights", w.reshape(-1, order="C"))  # (n_in, n_out), row-major
        src += _array(f"{net}_l{k}_biases", b)
        layers.append(
            f"    {{ {w.shape[1]}, {w.shape[0]}, {net}_l{k}_weights, {net}_l{k}_biases, "
            f"{eml_net.c_activation_function(a)} }},"
        )
    src += [f"static const EmlNetLayer {net}_layers[{len(layers)}] = {{", *layers, "};"]
    src += [
        f"static float {net}_buf1[{buf}];",
        f"static float {net}_buf2[{buf}];",
        f"static EmlNet {net} = {{ {len(layers)}, {net}_layers, {net}_buf1, {net}_buf2, {buf} }};",
        "",
    ]
    if spec.obs_mean is not None:
        src += _array(f"{net}_obs_mean", spec.obs_mean)
        src += _array(f"{net}_obs_scale", spec.obs_scale)
    src += _array(f"{net}_act_low", lo)
    src += _array(f"{net}_act_high", hi)
    m = gen.macro
    src += [
        "",
        f"int {gen.symbol}(const float *in, size_t n_in, float *out, size_t n_out)",
        "{",
        f"    float x[{m}_N_IN];",
        "    size_t i;",
        f"    if (in == NULL || out == NULL || n_in != {m}_N_IN || n_out != {m}_N_OUT) {{",
        "        return SINDYRL_EVAL_ERR_ARG;",
        "    }",
        "    for (i = 0; i < n_in; i++) {",
        "        if (!isfinite(in[i])) {",
        "            return SINDYRL_EVAL_ERR_NONFINITE;",
        "        }",
    ]
    if spec.obs_mean is not None:
        src.append(f"        x[i] = (in[i] - {net}_obs_mean[i]) * {net}_obs_scale[i];")
        if spec.obs_clip is not None:
            c = _f32(spec.obs_clip)
            src += [f"        if (x[i] < -{c}) {{ x[i] = -{c}; }}", f"        if (x[i] > {c}) {{ x[i] = {c}; }}"]
    else:
        src.append("        x[i] = in[i];")
    src += [
        "    }",
        f"    if (eml_net_regress(&{net}, x, (int32_t){m}_N_IN, out, (int32_t){m}_N_OUT) != EmlOk) {{",
        "        return SINDYRL_EVAL_ERR_BACKEND;",
        "    }",
        "    for (i = 0; i < n_out; i++) {",
    ]
    if spec.squash:
        src.append(f"        out[i] = {net}_act_low[i] + 0.5f * (out[i] + 1.0f) * ({net}_act_high[i] - {net}_act_low[i]);")
    src += [
        f"        if (out[i] < {net}_act_low[i]) {{ out[i] = {net}_act_low[i]; }}",
        f"        if (out[i] > {net}_act_high[i]) {{ out[i] = {net}_act_high[i]; }}",
        "        if (!isfinite(out[i])) {",
        "            return SINDYRL_EVAL_ERR_NONFINITE;",
        "        }",
        "    }",
        "    return SINDYRL_EVAL_OK;",
        "}",
        "",
    ]
    gen.source.write_text("\n".join(src))
    return gen


def generate_c(model: Any, name: str, out_dir, **options) -> GeneratedC:
    """Generate C for a SparseModel, a :class:`NeuralSpec` or an SB3 agent/policy.

    ``options`` go to :func:`generate_sparse_c` (``real``) or to
    :func:`neural_spec_from_sb3` (``obs_normalizer``, ``inputs``, ``outputs``).
    """
    if isinstance(model, SparseModel):
        return generate_sparse_c(model, name, out_dir, **options)
    if isinstance(model, NeuralSpec):
        if options:
            raise TypeError(f"generate_c: unexpected options {sorted(options)} for a NeuralSpec")
        return generate_neural_c(model, name, out_dir)
    if hasattr(model, "policy") or hasattr(model, "actor") or hasattr(model, "mlp_extractor"):
        return generate_neural_c(neural_spec_from_sb3(model, **options), name, out_dir)
    raise TypeError(
        f"generate_c: cannot generate C for {type(model).__name__}; expected a SparseModel, a NeuralSpec "
        "or a stable-baselines3 agent"
    )

