"""Fixed-point C for a sparse policy: integer arithmetic only, for microcontrollers without an FPU.

The same :class:`~sindyrl.sparse.SparseModel` as the float C of
:mod:`firmware_bridge.codegen`, with the same entry point
(``int sindyrl_<name>_eval(const float *in, size_t n_in, float *out, size_t n_out)``),
computed in Q format:

* every quantity ``v`` that enters a multiplication (an input, a power, a
  sin/cos, a product of factors, a coefficient) is an integer ``m`` with
  ``v ~ m * 2**-e`` and ``|m| <= 32767``; its exponent ``e`` is chosen at
  generation time from the bound of ``|v|`` over the policy's
  ``input_bounds`` (so the Q format uses the full 16-bit range), and a
  product of two is one 16 x 16 -> 32-bit multiplication (one ``MULS`` on a
  Cortex-M0) and a rounding shift back to 16 bits;
* inputs are converted from float by integer operations on their IEEE bits
  (no software floating point) and clamped to the input bounds, so every
  bound used to pick an exponent holds;
* sin/cos come from a 257-entry quarter-wave table with linear interpolation
  on a 16-bit phase (one turn = 65536);
* each output is accumulated in 32 bits at an exponent chosen so that the sum
  of ``|coefficient| * bound(term)`` is at most 2**30 (overflow cannot happen
  for clamped inputs; the adds saturate anyway), clipped to the output
  bounds and converted back to float once.

A worst-case absolute error bound of every output against
:meth:`SparseModel.evaluate` (in float64, for inputs within ``input_bounds``)
is propagated through these steps at generation time (input and coefficient
rounding, each rounding shift, the sine table's error measured over all 65536
phases, the final conversion) and written into the header as
``SINDYRL_<NAME>_ERROR_BOUND``. Outside the bounds the inputs are clamped: the
result is the policy at the nearest point of the box.

Not supported (``ValueError``): models without ``input_bounds``, and
``unit_pairs`` (renormalising onto the unit circle has no finite error bound
near the origin; policies do not use it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from sindyrl.sparse import SparseModel, term_name

from .codegen import (
    GeneratedC,
    SharedFactors,
    _bounds_lines,
    _comment_safe,
    _f32,
    _fmt_freq,
    _generator_line,
    _identifiers,
    _Names,
    _sparse_generated,
    _write_header,
)

__all__ = ["generate_fixed_c", "sin_q15", "Q_MAX", "SIN_TABLE", "SIN_TABLE_ERROR"]

#: Largest magnitude of a 16-bit Q value.
Q_MAX = 32767
#: Accumulators hold at most this magnitude for inputs within the bounds (one bit of headroom in int32).
ACC_MAX = 2.0**30
#: Saturation limit of the float -> Q conversion before clamping to the bounds.
CONV_LIMIT = 2**30

_TABLE_BITS = 8  # 256 intervals per quarter turn
_FRAC_BITS = 14 - _TABLE_BITS
#: Q15 sin(pi/2 * k / 256), k = 0..256 (1.0 saturates at 32767).
SIN_TABLE = np.minimum(np.round(np.sin(np.pi / 2 * np.arange(2**_TABLE_BITS + 1) / 2**_TABLE_BITS) * 32768), Q_MAX
                       ).astype(np.int64)


def _exponent(bound: float, limit: float = Q_MAX) -> int:
    """Largest e with bound * 2**e <= limit (bound 0: any; 15 is a Q15 number)."""
    if bound <= 0 or not math.isfinite(bound):
        return 15
    return int(math.floor(math.log2(limit / bound)))


def _round_shift(v: np.ndarray, sh: int) -> np.ndarray:
    """What the C does: ``(v + (1 << (sh-1))) >> sh`` with an arithmetic shift (``v << -sh`` for sh < 0)."""
    v = np.asarray(v, dtype=np.int64)
    if sh <= 0:
        return v << (-sh)
    return (v + (1 << (sh - 1))) >> sh


def sin_q15(phase: np.ndarray) -> np.ndarray:
    """The generated C's sine of a 16-bit phase (one turn = 65536), as numpy: Q15."""
    p = np.asarray(phase, dtype=np.int64) & 0xFFFF
    quad = p >> 14
    r = p & 0x3FFF
    r = np.where(quad & 1, 0x4000 - r, r)
    idx = r >> _FRAC_BITS
    frac = r & ((1 << _FRAC_BITS) - 1)
    lo = SIN_TABLE[np.minimum(idx, 2**_TABLE_BITS)]
    hi = SIN_TABLE[np.minimum(idx + 1, 2**_TABLE_BITS)]
    v = lo + (((hi - lo) * frac) >> _FRAC_BITS)
    return np.where(quad >= 2, -v, v)


def _sin_table_error() -> float:
    """Max |sin_q15(p) / 32768 - sin(2 pi p / 65536)| over every phase (the table's whole error)."""
    p = np.arange(65536)
    return float(np.max(np.abs(sin_q15(p) / 32768.0 - np.sin(2 * np.pi * p / 65536))))


SIN_TABLE_ERROR = _sin_table_error()


@dataclass
class _Q:
    """One fixed-point quantity: C expression, exponent, bound of the true value, bound of the error."""

    c: str
    e: int
    bound: float
    err: float


def _product(a: _Q, b: _Q, name: str, lines: list[str], comment: str) -> _Q:
    bound = a.bound * b.bound
    e = _exponent(bound)
    sh = a.e + b.e - e
    assert sh >= 1, (a, b)
    lines.append(f"const int32_t {name} = ({a.c} * {b.c} + {1 << (sh - 1)}) >> {sh}; /* {comment}, Q{e} */")
    err = a.bound * b.err + b.bound * a.err + a.err * b.err + 2.0 ** -(e + 1)
    return _Q(name, e, bound, err)


def generate_fixed_c(model: SparseModel, name: str, out_dir) -> GeneratedC:
    """Write ``<name>.h`` and ``<name>.c``: the model in 16-bit Q-format integer arithmetic.

    Parameters
    ----------
    model : SparseModel
        A policy (or any map) with ``input_bounds`` and no ``unit_pairs``.
    name : str
        C name: the function is ``sindyrl_<name>_eval``.
    out_dir : path
        Directory for the files (created).
    """
    if not isinstance(model, SparseModel):
        raise TypeError(f"generate_fixed_c: expected a SparseModel, got {type(model).__name__}")
    if model.input_bounds is None:
        raise ValueError(f"generate_fixed_c: model '{model.name}' has no input_bounds; fixed point needs them to "
                         "choose its scaling (SparseModel.input_bounds, set when a policy is distilled)")
    if model.unit_pairs:
        raise ValueError(f"generate_fixed_c: model '{model.name}' has unit_pairs; renormalising onto the unit circle "
                         "has no error bound in fixed point: generate it with real='float'")
    lo_in, hi_in = (np.asarray(v, dtype=np.float64) for v in model.input_bounds)
    if not (np.all(np.isfinite(lo_in)) and np.all(np.isfinite(hi_in))):
        raise ValueError(f"generate_fixed_c: model '{model.name}' has infinite input_bounds; fixed point needs finite ones")
    gen = _sparse_generated(model, name, out_dir)
    name = gen.name
    lo_out, hi_out = model.output_bounds if model.output_bounds is not None else (None, None)
    idents = _identifiers(model.inputs)
    names = _Names(idents)
    plan = SharedFactors.of(model, harmonics=False)  # the table makes every harmonic as cheap as the first
    decl: list[str] = []
    q: dict = {}  # factor -> _Q
    in_exp = []
    clamp: list[str] = []
    for i, ident in enumerate(idents):
        b = float(max(abs(lo_in[i]), abs(hi_in[i])))
        e = _exponent(b)
        in_exp.append(e)
        lo_q, hi_q = int(round(lo_in[i] * 2.0**e)), int(round(hi_in[i] * 2.0**e))
        clamp.append(f"    {ident} = clamp_(q_from_float_bits_(bits_(in[{i}]), {e}, &bad), {lo_q}, {hi_q}); "
                     f"/* {_comment_safe(model.inputs[i])} in [{lo_in[i]:.9g}, {hi_in[i]:.9g}], Q{e} */")
        q[(i, "pow", 1.0)] = _Q(ident, e, b, 2.0 ** -(e + 1))
    for i, steps in plan.pows.items():
        for ex, a, bb in steps:
            v = names.new(f"{idents[i]}_pow{ex}")
            q[(i, "pow", float(ex))] = _product(q[(i, "pow", float(a))], q[(i, "pow", float(bb))], v, decl,
                                                f"{model.inputs[i]}^{ex}")
    uses_sin = bool(plan.trig)
    for f in plan.trig:
        i, kind, p = f
        x = q[(i, "pow", 1.0)]
        # phase in turns * 65536 = x_q * kappa, kappa = p / (2 pi) * 2**(16 - e); as K * 2**-s with |K| <= 32767
        kappa = p / (2 * math.pi) * 2.0 ** (16 - x.e)
        s = min(_exponent(abs(kappa)), 30)
        if s < 1:
            raise ValueError(f"generate_fixed_c: {term_name((f,), model.inputs)} over the input bound "
                             f"{x.bound:g} spans too many turns for a 16-bit phase")
        k_int = int(round(kappa * 2.0**s))
        xq_max = x.bound * 2.0**x.e + 0.5
        phase_err = 0.5 + xq_max * abs(k_int * 2.0**-s - kappa)
        v = names.new(f"{kind}{'' if p == 1 else _fmt_freq(p)}_{idents[i]}")
        offset = " + 16384" if kind == "cos" else ""
        ph = f"({x.c} * {k_int} + {1 << (s - 1)}) >> {s}"
        decl.append(f"const int32_t {v} = sin_q15_((uint16_t)(({ph}){offset})); "
                    f"/* {_comment_safe(term_name((f,), model.inputs))}, Q15 */")
        err = SIN_TABLE_ERROR + 2 * math.pi / 65536 * phase_err + abs(p) * x.err
        q[f] = _Q(v, 15, 1.0, err)
    # terms: products of their factors (a shared one once), left to right
    term_q: dict[int, _Q] = {}
    body: list[str] = []

    def term(k: int) -> _Q:
        if k in term_q:
            return term_q[k]
        facs = [q[f] for f in model.terms[k]]
        if not facs:
            t = _Q("1", 0, 1.0, 0.0)
        else:
            t = facs[0]
            for j, fq in enumerate(facs[1:], start=1):
                last = j == len(facs) - 1
                nm = names.new(f"term{k}" if last else f"term{k}_{j}")
                t = _product(t, fq, nm, decl, _comment_safe(term_name(model.terms[k][: j + 1], model.inputs)))
        term_q[k] = t
        return t

    for k in plan.terms:
        term(k)
    out_exp, err_bound = [], []
    eqs = model.equations(precision=6)
    for o in range(model.n_outputs):
        ks = [int(k) for k in np.flatnonzero(model.coef[o])]
        S = sum(abs(model.coef[o, k]) * term_q[k].bound for k in ks)
        if lo_out is not None:  # the accumulator also holds the clip bounds
            S = max([S, *(abs(float(v)) for v in (lo_out[o], hi_out[o]) if np.isfinite(v))])
        ey = _exponent(S, ACC_MAX) if S > 0 else 15
        ey = min(ey, 30)
        out_exp.append(ey)
        body.append(f"    /* {_comment_safe(eqs[o])} */")
        body.append(f"    acc = 0; /* Q{ey} */")
        err = 0.0
        for k in ks:
            c = float(model.coef[o, k])
            t = term_q[k]
            if not model.terms[k]:  # constant: added directly at the output's exponent
                cq = int(round(c * 2.0**ey))
                body.append(f"    acc = sat_add_(acc, {cq});")
                err += abs(cq * 2.0**-ey - c)
                continue
            ec = _exponent(abs(c))
            cq = int(round(c * 2.0**ec))
            ec_err = abs(cq * 2.0**-ec - c)
            sh = ec + t.e - ey
            prod = f"{cq} * {t.c}"
            contrib = f"({prod} + {1 << (sh - 1)}) >> {sh}" if sh > 0 else (f"{prod} * {1 << -sh}" if sh < 0 else prod)
            body.append(f"    acc = sat_add_(acc, {contrib}); /* {c:.6g} {_comment_safe(term_name(model.terms[k], model.inputs))} */")
            err += abs(c) * t.err + t.bound * ec_err + ec_err * t.err + (2.0 ** -(ey + 1) if sh > 0 else 0.0)
        if lo_out is not None:
            if np.isfinite(lo_out[o]):
                body.append(f"    acc = acc < {int(math.ceil(lo_out[o] * 2.0**ey))} ? "
                            f"{int(math.ceil(lo_out[o] * 2.0**ey))} : acc;")
                err += 2.0**-ey
            if np.isfinite(hi_out[o]):
                body.append(f"    acc = acc > {int(math.floor(hi_out[o] * 2.0**ey))} ? "
                            f"{int(math.floor(hi_out[o] * 2.0**ey))} : acc;")
                err += 2.0**-ey
        body.append(f"    out[{o}] = float_from_q_(acc, {ey});")
        err += S * 2.0**-24  # int -> float rounding (24-bit significand)
        err_bound.append(err * (1 + 1e-6) + 1e-12)  # the bound's own float64 arithmetic
    err_bound = np.array(err_bound)

    m = gen.macro
    doc = [
        f" * Sparse model '{_comment_safe(model.name)}' in fixed point (16-bit Q formats, 32-bit accumulators,",
        " * integer arithmetic only: for a Cortex-M0 or any core without an FPU). Inputs are clamped to the",
        " * input bounds; outputs are clipped to the output bounds (the order of SparseModel.evaluate).",
        f" * Model hash (SparseModel.content_hash): {gen.model_hash}; {model.nnz} nonzero coefficients.",
        " * Inputs, in order (in[i]), their bounds and Q formats (value = integer * 2^-e):",
        *[f" *   in[{i}] {_comment_safe(n)}: [{lo_in[i]:.9g}, {hi_in[i]:.9g}], Q{in_exp[i]}"
          for i, n in enumerate(model.inputs)],
        " * Outputs, in order (out[i]), accumulator Q formats and error bounds:",
        *[f" *   out[{i}] {_comment_safe(n)}: Q{out_exp[i]}, |out - SparseModel.evaluate(in)| <= {err_bound[i]:.3g}"
          for i, n in enumerate(model.outputs)],
        " * Output bounds (clipped last):",
        *_bounds_lines(lo_out, hi_out, [_comment_safe(n) for n in model.outputs], "Output bounds"),
        " * Error bound: worst case for inputs within the input bounds, propagated at generation time",
        " * (input and coefficient rounding, every rounding shift, the sine table measured on all 65536",
        " * phases, the conversion to float).",
        " * Equations:",
        *[f" *   {_comment_safe(e)}" for e in eqs],
    ]
    extra = "\n".join([
        "/* Largest |out[i] - SparseModel.evaluate(in)[i]| over outputs, for inputs within the input bounds. */",
        f"#define {m}_ERROR_BOUND {_f32(float(np.max(err_bound)) if err_bound.size else 0.0)}",
        f"#define {m}_FIXED_POINT 1",
        "",
    ])
    _write_header(gen.header, gen, doc, extra_defs=extra)

    src = [
        f"/* Generated by {_generator_line()} (fixed point). Do not edit. Model hash {gen.model_hash}. */",
        f'#include "{name}.h"',
        "",
        "#include <stdint.h>",
        "#include <string.h>",
        "",
        "/* Right shifts of negative int32_t values are arithmetic (GCC, Clang and every ARM compiler define",
        " * them so; C99 leaves it to the implementation). */",
        "",
        "/* round(x * 2^e) from the IEEE bits, saturated to +-2^30; *bad = 1 for NaN/inf (no float arithmetic) */",
        "static int32_t q_from_float_bits_(uint32_t b, int e, int *bad)",
        "{",
        "    int32_t ex = (int32_t)((b >> 23) & 0xFFu);",
        "    uint32_t mant = (b & 0x7FFFFFu) | 0x800000u;",
        "    int32_t sh;",
        "    uint32_t mag;",
        "    if (ex == 0xFF) {",
        "        *bad = 1;",
        "        return 0;",
        "    }",
        "    if (ex == 0) {",
        "        return 0; /* zero or subnormal: below any Q step used here */",
        "    }",
        "    sh = ex - 150 + e; /* value = mant * 2^(ex - 150) */",
        "    if (sh >= 7) {",
        f"        mag = {CONV_LIMIT}u;",
        "    } else if (sh >= 0) {",
        "        mag = mant << sh;",
        f"        mag = mag > {CONV_LIMIT}u ? {CONV_LIMIT}u : mag;",
        "    } else if (sh >= -24) {",
        "        mag = (mant + (1u << (-sh - 1))) >> -sh;",
        "    } else {",
        "        mag = 0u;",
        "    }",
        "    return (b >> 31) ? -(int32_t)mag : (int32_t)mag;",
        "}",
        "",
        "static int32_t clamp_(int32_t v, int32_t lo, int32_t hi)",
        "{",
        "    return v < lo ? lo : (v > hi ? hi : v);",
        "}",
        "",
        "static int32_t sat_add_(int32_t a, int32_t b)",
        "{",
        "    if (b > 0 && a > INT32_MAX - b) {",
        "        return INT32_MAX;",
        "    }",
        "    if (b < 0 && a < INT32_MIN - b) {",
        "        return INT32_MIN;",
        "    }",
        "    return a + b;",
        "}",
        "",
        "/* acc * 2^-e as float: one int -> float conversion, then the exponent adjusted on the bits (exact) */",
        "static float float_from_q_(int32_t acc, int e)",
        "{",
        "    float f = (float)acc;",
        "    uint32_t b;",
        "    if (acc == 0) {",
        "        return 0.0f;",
        "    }",
        "    memcpy(&b, &f, sizeof b);",
        "    b -= (uint32_t)e << 23; /* |acc| >= 1 and e <= 30: the exponent stays normal */",
        "    memcpy(&f, &b, sizeof f);",
        "    return f;",
        "}",
        "",
    ]
    if uses_sin:
        vals = [str(int(v)) for v in SIN_TABLE]
        src += [f"/* Q15 sin(pi/2 * k / {2**_TABLE_BITS}), k = 0..{2**_TABLE_BITS} */",
                f"static const int16_t sin_table_[{len(vals)}] = {{"]
        src += ["    " + ", ".join(vals[j:j + 12]) + "," for j in range(0, len(vals), 12)]
        src += [
            "};",
            "",
            "/* sin(2 pi phase / 65536) in Q15: quarter-wave table, linear interpolation */",
            "static int32_t sin_q15_(uint16_t phase)",
            "{",
            "    uint32_t quad = (uint32_t)phase >> 14;",
            "    uint32_t r = (uint32_t)phase & 0x3FFFu;",
            "    uint32_t idx;",
            "    int32_t lo, v;",
            "    if (quad & 1u) {",
            "        r = 0x4000u - r;",
            "    }",
            f"    idx = r >> {_FRAC_BITS};",
            "    lo = sin_table_[idx];",
            f"    v = idx < {2**_TABLE_BITS}u ? lo + (((sin_table_[idx + 1u] - lo) * (int32_t)(r & {(1 << _FRAC_BITS) - 1}u)) "
            f">> {_FRAC_BITS}) : lo;",
            "    return quad >= 2u ? -v : v;",
            "}",
            "",
        ]
    src += [
        f"int {gen.symbol}(const float *in, size_t n_in, float *out, size_t n_out)",
        "{",
        "    int bad = 0;",
        "    int32_t acc;",
        "    size_t i;",
        *[f"    int32_t {ident};" for ident in idents],
        f"    if (in == NULL || out == NULL || n_in != {m}_N_IN || n_out != {m}_N_OUT) {{",
        "        return SINDYRL_EVAL_ERR_ARG;",
        "    }",
        "    for (i = 0; i < n_in; i++) {",
        "        uint32_t b;",
        "        memcpy(&b, &in[i], sizeof b);",
        "        if (((b >> 23) & 0xFFu) == 0xFFu) {",
        "            return SINDYRL_EVAL_ERR_NONFINITE;",
        "        }",
        "    }",
        *clamp,  # inputs: float bits -> Q, clamped to the bounds
        "    (void)bad; /* non-finite inputs were rejected above */",
    ]
    unused = [idents[i] for i in range(model.n_inputs) if i not in plan.used_inputs]
    src += [f"    (void){u};" for u in unused]
    src += ["    {"]
    src += [f"        {ln}" for ln in decl]
    src += ["        " + ln[4:] if ln.startswith("    ") else ln for ln in body]
    src += ["    }", "    return SINDYRL_EVAL_OK;", "}", ""]
    # bits_(): the float's representation (memcpy: no aliasing questions)
    helper = [
        "static uint32_t bits_(float x)",
        "{",
        "    uint32_t b;",
        "    memcpy(&b, &x, sizeof b);",
        "    return b;",
        "}",
        "",
    ]
    at = src.index("static int32_t clamp_(int32_t v, int32_t lo, int32_t hi)")
    src[at:at] = helper
    if not any("sat_add_(acc" in ln for ln in body):  # no output has a term: leave the helper out (-Wunused)
        at = src.index("static int32_t sat_add_(int32_t a, int32_t b)")
        del src[at:src.index("}", at) + 2]
    gen.source.write_text("\n".join(src))
    return dataclasses.replace(gen, error_bound=err_bound)
