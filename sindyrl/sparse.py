"""The one representation of a learned sparse map, shared by every backend.

A :class:`SparseModel` is ``y = clip(renorm(coef @ theta(x)))`` where ``theta``
is a list of library terms. Each term is a product of factors; a factor is
``(input index, kind, parameter)`` with kind ``"pow"`` (integer exponent >= 1),
``"sin"`` or ``"cos"`` (frequency). The empty product is the constant 1.

After the linear combination, every ``unit_pairs`` output pair ``(c, s)`` (the
cosine and sine of one angle) is renormalised onto the unit circle, and then,
if ``output_bounds`` is set, outputs are clipped. Every backend (numpy here,
CasADi in ``controllers``, ONNX in ``export``, C in ``firmware_bridge``) applies
exactly these steps in this order.

A model is immutable: the dataclass is frozen and its arrays are read-only, so
``model.coef += d`` or ``model.coef[0, 1] = 0`` raises instead of silently
changing a model another object (a surrogate, an MPC) already holds.
:meth:`SparseModel.with_coef`, :meth:`~SparseModel.with_ensemble` and
:meth:`~SparseModel.with_metadata` return changed copies.

This module imports nothing of sindyrl but :mod:`sindyrl.atomic` (standard
library only), and nothing heavier than numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .atomic import atomic_write

__all__ = ["SparseModel", "Factor", "Term", "KINDS", "UNIT_EPS", "term_name"]

Factor = tuple[int, str, float]
Term = tuple[Factor, ...]

#: Factor kinds understood by every backend.
KINDS = ("pow", "sin", "cos")

#: Floor on the radius used when renormalising a unit pair, so that (0, 0)
#: maps to (0, 0) instead of NaN. Backends use the same constant.
UNIT_EPS = 1e-12

FORMAT_VERSION = 1


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def term_name(term: Term, inputs: Sequence[str]) -> str:
    """Human-readable name of one term, e.g. ``"th_dot^2 u0"`` or ``"sin(2 th)"``."""
    if not term:
        return "1"
    parts = []
    for idx, kind, p in term:
        n = inputs[idx]
        if kind == "pow":
            parts.append(n if int(p) == 1 else f"{n}^{int(p)}")
        else:
            parts.append(f"{kind}({_fmt_num(p)} {n})" if p != 1 else f"{kind}({n})")
    return " ".join(parts)


def _normalise_term(term: Any, n_inputs: int, where: str) -> Term:
    """Validate one term and return it in canonical form (sorted, merged powers)."""
    if not isinstance(term, (list, tuple)):
        raise ValueError(f"{where}: a term must be a list of factors, got {term!r}")
    pows: dict[int, int] = {}
    trig: list[Factor] = []
    for f in term:
        if not isinstance(f, (list, tuple)) or len(f) != 3:
            raise ValueError(f"{where}: a factor must be (input index, kind, parameter), got {f!r}")
        idx, kind, p = f
        if not isinstance(idx, (int, np.integer)) or not 0 <= int(idx) < n_inputs:
            raise ValueError(f"{where}: input index {idx!r} out of range 0..{n_inputs - 1}")
        if kind not in KINDS:
            raise ValueError(f"{where}: unknown factor kind {kind!r}; expected one of {KINDS}")
        p = float(p)
        if not math.isfinite(p):
            raise ValueError(f"{where}: factor parameter must be finite, got {p}")
        if kind == "pow":
            if not p.is_integer() or p < 1:
                raise ValueError(f"{where}: pow exponent must be an integer >= 1, got {p}")
            pows[int(idx)] = pows.get(int(idx), 0) + int(p)
        else:
            trig.append((int(idx), kind, p))
    out: list[Factor] = [(i, "pow", float(e)) for i, e in sorted(pows.items())]
    out += sorted(trig)
    return tuple(out)


class _ReadOnlyDict(dict):
    """A dict whose items cannot change: a model's metadata (``with_metadata`` returns a changed copy)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("SparseModel.metadata is read-only; use model.with_metadata(...) for a changed copy")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):  # pickle and copy rebuild it from a plain dict, not item by item
        return (type(self), (dict(self),))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class SparseModel:
    """A sparse linear combination of library terms: ``y = coef @ theta(x)``.

    Parameters
    ----------
    inputs : list of str
        Input names, in column order of ``X``.
    outputs : list of str
        Output names, in column order of the result.
    terms : list of Term
        Library terms; ``()`` is the constant 1.
    coef : array, shape (n_outputs, n_terms)
        Aggregate coefficients (median of the ensemble by default).
    ensemble : array, shape (n_models, n_outputs, n_terms), optional
        Coefficients of every ensemble member, for uncertainty.
    unit_pairs : list of (int, int)
        Output index pairs ``(cos, sin)`` renormalised onto the unit circle.
    output_bounds : (low, high), optional
        Per-output clip applied last (e.g. a policy's action bounds).
    input_bounds : (low, high), optional
        The region the model was fitted on (data bounds). Informational: used
        to sample parity checks and by the surrogate's termination test.
    name : str
        A short identifier (``dynamics``, ``reward``, ``policy``...).
    metadata : dict
        Free-form JSON-serialisable facts (fit settings, scores); read-only.

    The model is immutable (frozen; ``coef``, ``ensemble`` and the bounds are
    read-only arrays, copied from what is passed in): derive changed models
    with :meth:`with_coef`, :meth:`with_ensemble` and :meth:`with_metadata`.
    """

    inputs: list[str]
    outputs: list[str]
    terms: list[Term]
    coef: np.ndarray
    ensemble: np.ndarray | None = None
    unit_pairs: list[tuple[int, int]] = field(default_factory=list)
    output_bounds: tuple[np.ndarray, np.ndarray] | None = None
    input_bounds: tuple[np.ndarray, np.ndarray] | None = None
    name: str = "model"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # frozen: the constructor normalises its fields with object.__setattr__, nothing else may
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        set_("inputs", [str(s) for s in self.inputs])
        set_("outputs", [str(s) for s in self.outputs])
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"SparseModel inputs must be unique, got {self.inputs}")
        n_in = len(self.inputs)
        set_("terms", [_normalise_term(t, n_in, f"SparseModel.terms[{k}]") for k, t in enumerate(self.terms)])
        coef = np.array(self.coef, dtype=np.float64, copy=True)
        if coef.ndim == 1 and len(self.outputs) == 1:
            coef = coef[None, :]
        want = (len(self.outputs), len(self.terms))
        if coef.shape != want:
            raise ValueError(f"SparseModel.coef has shape {coef.shape}, expected {want} (outputs × terms)")
        if not np.all(np.isfinite(coef)):
            raise ValueError("SparseModel.coef contains NaN or inf")
        set_("coef", _read_only(coef))
        if self.ensemble is not None:
            ens = np.array(self.ensemble, dtype=np.float64, copy=True)
            if ens.ndim != 3 or ens.shape[1:] != want:
                raise ValueError(
                    f"SparseModel.ensemble has shape {ens.shape}, expected (n_models, {want[0]}, {want[1]})"
                )
            if not np.all(np.isfinite(ens)):
                raise ValueError("SparseModel.ensemble contains NaN or inf")
            set_("ensemble", _read_only(ens))
        pairs = []
        for p in self.unit_pairs:
            c, s = (int(v) for v in p)
            if not (0 <= c < want[0] and 0 <= s < want[0]) or c == s:
                raise ValueError(f"SparseModel.unit_pairs entry {p!r} is not a pair of distinct output indices")
            pairs.append((c, s))
        set_("unit_pairs", pairs)
        set_("output_bounds", self._check_bounds(self.output_bounds, want[0], "output_bounds"))
        set_("input_bounds", self._check_bounds(self.input_bounds, n_in, "input_bounds"))
        if not isinstance(self.metadata, Mapping):
            raise ValueError(f"SparseModel.metadata must be a mapping, got {type(self.metadata).__name__}")
        set_("metadata", _ReadOnlyDict(self.metadata))

    @staticmethod
    def _check_bounds(b, n: int, key: str):
        if b is None:
            return None
        lo, hi = (np.array(v, dtype=np.float64).reshape(-1) for v in b)
        if lo.shape != (n,) or hi.shape != (n,):
            raise ValueError(f"SparseModel.{key} must be two arrays of length {n}, got {lo.shape} and {hi.shape}")
        if np.any(np.isnan(lo)) or np.any(np.isnan(hi)) or np.any(lo > hi):
            raise ValueError(f"SparseModel.{key}: need low <= high and no NaN")
        return _read_only(lo), _read_only(hi)

    # ------------------------------------------------------------------ sizes
    @property
    def n_inputs(self) -> int:
        return len(self.inputs)

    @property
    def n_outputs(self) -> int:
        return len(self.outputs)

    @property
    def n_terms(self) -> int:
        return len(self.terms)

    @property
    def n_models(self) -> int:
        return 0 if self.ensemble is None else int(self.ensemble.shape[0])

    @property
    def nnz(self) -> int:
        """Number of nonzero aggregate coefficients."""
        return int(np.count_nonzero(self.coef))

    def active_terms(self, include_ensemble: bool = False, coef: np.ndarray | None = None) -> np.ndarray:
        """Indices of the terms some output uses, in term order: every backend computes only these.

        A term is active when it has a nonzero coefficient in ``coef`` (default: the aggregate ``coef``), and,
        with ``include_ensemble``, in any ensemble member.
        """
        C = self.coef if coef is None else np.asarray(coef, dtype=np.float64)
        mask = np.any(C != 0, axis=0)
        if include_ensemble and self.ensemble is not None:
            mask |= np.any(self.ensemble != 0, axis=(0, 1))
        return np.flatnonzero(mask)

    # ------------------------------------------------------------- evaluation
    def _check_X(self, X) -> tuple[np.ndarray, bool]:
        X = np.asarray(X, dtype=np.float64)
        single = X.ndim == 1
        if single:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(
                f"{self.name}: input has shape {np.shape(X)}, expected (N, {self.n_inputs}) "
                f"with columns {self.inputs}"
            )
        return X, single

    def features(self, X, terms: Sequence[int] | None = None) -> np.ndarray:
        """Library matrix ``theta(X)``, shape (N, n_terms) (or only ``terms``)."""
        X, _ = self._check_X(X)
        idx = range(self.n_terms) if terms is None else terms
        out = np.empty((X.shape[0], len(idx)))
        cache: dict[Factor, np.ndarray] = {}
        for col, k in enumerate(idx):
            v = np.ones(X.shape[0])
            for f in self.terms[k]:
                if f not in cache:
                    i, kind, p = f
                    if kind == "pow":
                        cache[f] = X[:, i] ** int(p)
                    elif kind == "sin":
                        cache[f] = np.sin(p * X[:, i])
                    else:
                        cache[f] = np.cos(p * X[:, i])
                v = v * cache[f]
            out[:, col] = v
        return out

    def _finish(self, Y: np.ndarray) -> np.ndarray:
        for c, s in self.unit_pairs:
            r = np.maximum(np.sqrt(Y[..., c] ** 2 + Y[..., s] ** 2), UNIT_EPS)
            Y[..., c] = Y[..., c] / r
            Y[..., s] = Y[..., s] / r
        if self.output_bounds is not None:
            Y = np.clip(Y, self.output_bounds[0], self.output_bounds[1])
        return Y

    def evaluate(self, X, coef: np.ndarray | None = None) -> np.ndarray:
        """Evaluate on a batch: (N, n_inputs) -> (N, n_outputs); 1-D in, 1-D out."""
        X, single = self._check_X(X)
        C = self.coef if coef is None else np.asarray(coef, dtype=np.float64)
        active = self.active_terms(coef=C)
        Y = self.features(X, active) @ C[:, active].T
        Y = self._finish(Y)
        return Y[0] if single else Y

    def evaluate_ensemble(self, X) -> np.ndarray:
        """Every member on a batch: (n_models, N, n_outputs)."""
        if self.ensemble is None:
            raise ValueError(f"{self.name}: this model has no ensemble coefficients")
        X, single = self._check_X(X)
        active = self.active_terms(include_ensemble=True)
        F = self.features(X, active)
        Y = np.einsum("nt,mot->mno", F, self.ensemble[:, :, active])
        Y = self._finish(Y)
        return Y[:, 0] if single else Y

    def with_coef(self, coef: np.ndarray, **changes) -> SparseModel:
        """A new model with other aggregate coefficients (same terms), and any other field in ``changes``."""
        return replace(self, coef=coef, **changes)

    def with_ensemble(self, ensemble: np.ndarray | None, **changes) -> SparseModel:
        """A new model with other ensemble members (the aggregate ``coef`` is kept unless in ``changes``)."""
        return replace(self, ensemble=ensemble, **changes)

    def with_metadata(self, **facts: Any) -> SparseModel:
        """A new model whose metadata is this one's updated with ``facts``."""
        return replace(self, metadata={**self.metadata, **facts})

    def pruned(self) -> SparseModel:
        """A new model keeping only terms that some coefficient (aggregate or member) uses."""
        keep = self.active_terms(include_ensemble=True)
        return replace(
            self, terms=[self.terms[k] for k in keep], coef=self.coef[:, keep],
            ensemble=None if self.ensemble is None else self.ensemble[:, :, keep],
        )

    # ---------------------------------------------------------------- reading
    def term_names(self) -> list[str]:
        return [term_name(t, self.inputs) for t in self.terms]

    def equations(self, precision: int = 3, lhs: Sequence[str] | None = None) -> list[str]:
        """One readable line per output, e.g. ``"th_dot' = 0.998 th_dot + 0.15 u0"``."""
        lhs = list(lhs) if lhs is not None else self.outputs
        names = self.term_names()
        lines = []
        for o in range(self.n_outputs):
            parts = []
            for k in np.flatnonzero(self.coef[o]):
                c = self.coef[o, k]
                mag = f"{abs(c):.{precision}g}"
                body = mag if names[k] == "1" else f"{mag} {names[k]}"
                parts.append(("- " if c < 0 else "+ ") + body)
            rhs = " ".join(parts) if parts else "0"
            rhs = rhs[2:] if rhs.startswith("+ ") else ("-" + rhs[2:] if rhs.startswith("- ") else rhs)
            lines.append(f"{lhs[o]} = {rhs}")
        return lines

    def content_hash(self) -> str:
        """sha256 of the canonical JSON (first 16 hex digits): identifies the model everywhere."""
        d = self.to_dict()
        d.pop("metadata", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # -------------------------------------------------------------- JSON I/O
    def to_dict(self) -> dict:
        def arr(a):
            return None if a is None else np.asarray(a).tolist()

        return {
            "format": "sindyrl.SparseModel",
            "version": FORMAT_VERSION,
            "name": self.name,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "terms": [[[i, k, p] for i, k, p in t] for t in self.terms],
            "coef": arr(self.coef),
            "ensemble": arr(self.ensemble),
            "unit_pairs": [list(p) for p in self.unit_pairs],
            "output_bounds": None if self.output_bounds is None else [arr(v) for v in self.output_bounds],
            "input_bounds": None if self.input_bounds is None else [arr(v) for v in self.input_bounds],
            "metadata": _json_safe(self.metadata),
        }

    def to_json(self, path=None, indent: int | None = 1) -> str:
        """Plain JSON (never pickle). Writes atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            atomic_write(path, text)
        return text

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> SparseModel:
        if not isinstance(d, dict) or d.get("format") != "sindyrl.SparseModel":
            raise ValueError(f"{source}: not a sindyrl SparseModel JSON document")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"{source}: unsupported SparseModel format version {d.get('version')!r}")
        try:
            ob = d.get("output_bounds")
            ib = d.get("input_bounds")
            return cls(
                inputs=d["inputs"], outputs=d["outputs"],
                terms=[tuple(tuple(f) for f in t) for t in d["terms"]],
                coef=np.array(d["coef"], dtype=np.float64).reshape(len(d["outputs"]), len(d["terms"])),
                ensemble=None if d.get("ensemble") is None else np.array(d["ensemble"], dtype=np.float64),
                unit_pairs=[tuple(p) for p in d.get("unit_pairs", [])],
                output_bounds=None if ob is None else tuple(ob),
                input_bounds=None if ib is None else tuple(ib),
                name=d.get("name", "model"), metadata=d.get("metadata", {}),
            )
        except KeyError as e:
            raise ValueError(f"{source}: missing key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, text_or_path) -> SparseModel:
        """Load from a JSON string or a path to a ``.json`` file."""
        from pathlib import Path

        s = str(text_or_path)
        if not s.lstrip().startswith("{"):
            p = Path(s)
            if not p.is_file():
                raise FileNotFoundError(f"SparseModel JSON file not found: {p}")
            try:
                d = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}: invalid JSON ({e})") from None
            return cls.from_dict(d, source=str(p))
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid SparseModel JSON ({e})") from None
        return cls.from_dict(d)

    # --------------------------------------------------------------- pysindy
    @classmethod
    def from_pysindy(
        cls,
        fitted: Any,
        inputs: Sequence[str] | None = None,
        outputs: Sequence[str] | None = None,
        name: str = "model",
        check: bool = True,
        **kwargs,
    ) -> SparseModel:
        """Convert a fitted pysindy model (``SINDy`` or ``DiscreteSINDy``).

        Terms are read from the library's feature names (polynomial, Fourier,
        and their concatenations/tensor products) and checked numerically
        against ``feature_library.transform`` on random inputs, so an
        unsupported library fails loudly instead of giving a wrong model.
        Ensemble members are taken from an ``EnsembleOptimizer``'s
        ``coef_list``.
        """
        coef = np.asarray(fitted.coefficients(), dtype=np.float64)
        n_x = coef.shape[0]
        n_u = int(getattr(fitted, "n_control_features_", 0))
        fit_names = getattr(fitted, "feature_names", None)
        if fit_names is None:
            fit_names = [f"x{i}" for i in range(n_x)] + [f"u{i}" for i in range(n_u)]
        fit_names = [str(n) for n in fit_names]
        if inputs is not None and len(inputs) != len(fit_names):
            raise ValueError(f"from_pysindy: {len(inputs)} input names given, the model has {len(fit_names)} inputs")
        opt = getattr(fitted, "optimizer", None)
        cl = getattr(opt, "coef_list", None)
        # the library's feature names are spelt with the names pysindy was fitted with
        terms = _library_terms(fitted.feature_library, fit_names, check)
        return cls(
            inputs=list(inputs) if inputs is not None else fit_names,
            outputs=list(outputs) if outputs is not None else fit_names[:n_x], terms=terms, coef=coef,
            ensemble=np.asarray(cl, dtype=np.float64) if cl else None, name=name, **kwargs,
        )

    @classmethod
    def from_library(
        cls,
        library: Any,
        inputs: Sequence[str],
        coef: np.ndarray,
        outputs: Sequence[str],
        ensemble: np.ndarray | None = None,
        check: bool = True,
        **kwargs,
    ) -> SparseModel:
        """Build from a fitted pysindy feature library and coefficients over its features.

        Terms are parsed from ``library.get_feature_names(inputs)`` and, with
        ``check``, compared with ``library.transform`` on random inputs.
        """
        inputs = [str(n) for n in inputs]
        terms = _library_terms(library, inputs, check)
        return cls(inputs=inputs, outputs=list(outputs), terms=terms, coef=coef, ensemble=ensemble, **kwargs)


def _library_terms(library: Any, inputs: list[str], check: bool) -> list[Term]:
    """Terms of a fitted pysindy library, parsed from its feature names over ``inputs``.

    With ``check``, the parsed terms are compared with ``library.transform`` on random inputs, so a library
    that cannot be represented fails loudly instead of giving a wrong model.
    """
    terms = [_parse_feature_name(s, inputs) for s in library.get_feature_names(inputs)]
    if check:
        rng = np.random.default_rng(0)
        Z = rng.uniform(-1.5, 1.5, size=(7, len(inputs)))
        ours = SparseModel(inputs, ["y"], terms, np.zeros((1, len(terms)))).features(Z)
        theirs = np.asarray(library.transform([Z])[0])
        if theirs.shape != ours.shape or not np.allclose(ours, theirs, rtol=1e-9, atol=1e-9):
            raise ValueError(
                f"from_pysindy: cannot represent library {type(library).__name__} exactly "
                "(its features differ from the parsed terms)"
            )
    return terms


def _json_safe(v: Any) -> Any:
    """Metadata as plain JSON: numpy scalars to Python, non-finite floats to None."""
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.ndarray):
        return _json_safe(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


_TRIG = re.compile(r"^(sin|cos)\(([-+0-9.eE]+) (.+)\)$")


def _parse_feature_name(s: str, names: Sequence[str]) -> Term:
    """Parse a pysindy feature name (``"x0^2 u0"``, ``"sin(1 x1)"``, ``"1"``)."""
    index = {n: i for i, n in enumerate(names)}
    s = s.strip()
    if s == "1":
        return ()
    # trig tokens contain a space: pull them out first
    factors: list[Factor] = []
    rest = []
    tokens = re.findall(r"(?:sin|cos)\([^)]*\)|\S+", s)
    for tok in tokens:
        m = _TRIG.match(tok)
        if m:
            if m.group(3) not in index:
                raise ValueError(f"from_pysindy: unknown input {m.group(3)!r} in feature {s!r}")
            factors.append((index[m.group(3)], m.group(1), float(m.group(2))))
        else:
            rest.append(tok)
    for tok in rest:
        if tok == "1":
            continue
        base, _, exp = tok.partition("^")
        if base not in index:
            raise ValueError(f"from_pysindy: cannot parse feature {s!r} (unknown factor {tok!r})")
        factors.append((index[base], "pow", float(exp) if exp else 1.0))
    return tuple(factors)
