"""Model selection for ``library: auto``: the library and STLSQ threshold of a sparse model, by held-out error.

The candidates are polynomial libraries of degree 1 to 3, with the controls in
the full polynomial or control-affine (``poly(x, d) + poly(x, d - 1) * u``),
each with and without one Fourier frequency over the angle-like states
(:func:`angle_like_states`), times a grid of STLSQ thresholds relative to the
scale of the regression targets (:func:`threshold_grid`). Candidates with the
same terms are fitted once.

Each candidate is ranked by a single STLSQ fit (no ensemble), solved on the
library's Gram matrix, which is computed once per library and shared by the
thresholds, and scored on the held-out episodes: a dynamics model by its
open-loop rollout error (batched over windows of the held-out episodes, each
window's error capped: :func:`window_error`), a reward by its one-step error.
States that sit on one value on most samples and jump on the others (contact
and constraint forces: :func:`impulsive_states`) are tried both in the
polynomial and as linear terms only. The choice is the parsimony rule of
:func:`choose`: the simplest candidate (fewest nonzero terms, then lowest
degree, then the smaller library) whose error is within ``tolerance``
(relative, default 15%) of the best, or within 1e-4 (absolute, in units of the
targets' std) of it, so models that are all near-exact count as ties. The
caller then fits its full E-SINDy ensemble once, on the winner.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .config import LibraryConfig
from .sparse import SparseModel

__all__ = ["Candidate", "Selection", "angle_like_states", "impulsive_states", "candidate_libraries",
           "threshold_grid", "choose", "select_library", "library_label", "choice_keys", "resolve", "stlsq_path",
           "window_error", "RELATIVE_THRESHOLDS", "ABSOLUTE_TOLERANCE", "WINDOW_ERROR_CAP"]

#: STLSQ thresholds of the grid, relative to the targets' scale (see :func:`threshold_grid`)
RELATIVE_THRESHOLDS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: errors closer than this to the best (in units of the targets' std) count as ties
ABSOLUTE_TOLERANCE = 1e-4
#: cap on one held-out window's rollout error (RMS in units of each state's std) in :func:`window_error`: a
#: window predicted this badly is useless, however much worse it gets
WINDOW_ERROR_CAP = 1.0

_ANGLE_NAME = re.compile(r"^(th|theta|phi|psi|q|angle|yaw|pitch|roll)[_]?\d*$|angle", re.IGNORECASE)


def angle_like_states(names: Sequence[str], X: np.ndarray, X_next: np.ndarray | None = None,
                      unit_pairs: Sequence[tuple[int, int]] = ()) -> list[int]:
    """Indices of the states that are raw angles, for Fourier candidates.

    A state is angle-like when its name says so (``th``, ``theta``, ``phi``, ``psi``, ``q``, ``yaw``,
    ``pitch``, ``roll``, optionally numbered as in ``th0``/``q_1``, or any name containing ``angle``),
    or when its data wraps: it stays within [-pi, pi] and jumps by more than pi in one step. States of a
    (cos, sin) unit pair are never angle-like: they already are the Fourier terms of their angle, and a
    polynomial in them holds its harmonics.
    """
    paired = {i for p in unit_pairs for i in p}
    out = []
    for i, n in enumerate(names):
        if i in paired:
            continue
        col = X[:, i]
        wraps = False
        if X_next is not None and len(col):
            inside = np.all(np.abs(col) <= np.pi + 1e-6) and np.all(np.abs(X_next[:, i]) <= np.pi + 1e-6)
            wraps = bool(inside and np.any(np.abs(X_next[:, i] - col) > np.pi))
        if _ANGLE_NAME.search(str(n)) or wraps:
            out.append(i)
    return out


def impulsive_states(names: Sequence[str], X: np.ndarray, share: float = 0.8) -> list[str]:
    """Names of the states that sit on one exact value (their mode) on at least ``share`` of the samples and
    leave it on the others: contact and constraint forces (InvertedDoublePendulum's rail force is 0 on 99%
    of the steps and +-10 at the rail). A polynomial that multiplies such a state by the others turns each
    jump into a large, spurious term; candidates with these states entering linearly only are tried too."""
    out = []
    for i, n in enumerate(names):
        col = np.asarray(X[:, i])
        if len(col) < 10:
            continue
        _, counts = np.unique(col, return_counts=True)
        if len(counts) > 1 and counts.max() >= share * len(col):
            out.append(str(n))
    return out


def library_label(lib: LibraryConfig, state_names: Sequence[str] = ()) -> str:
    """Short readable name of a library: ``poly3 full``, ``poly2 affine(1) + fourier1[th0]``."""
    s = f"poly{lib.degree} " + ("full" if lib.control == "full" else f"affine({lib.control_degree})")
    if not lib.include_interaction:
        s += " no-cross"
    if lib.fourier:
        on = lib.fourier_states if lib.fourier_states is not None else list(state_names) or ["all"]
        s += f" + fourier{lib.fourier}[{','.join(on)}]"
    if lib.linear_states:
        s += f" + linear[{','.join(lib.linear_states)}]"
    return s


def candidate_libraries(n_u: int, angle_names: Sequence[str] = (), degrees: Sequence[int] = (1, 2, 3),
                        impulsive: Sequence[str] = ()) -> list[LibraryConfig]:
    """The candidate libraries: degree x control (full, affine) x (no Fourier, Fourier over the angles)
    x (the ``impulsive`` states in the polynomial, or entering linearly only)."""
    out = []
    for d in degrees:
        for control in ("full", "affine") if n_u else ("full",):
            for fourier in (0, 1) if angle_names else (0,):
                for linear in ([None, list(impulsive)] if impulsive else [None]):
                    out.append(LibraryConfig(degree=d, control=control, control_degree=d - 1, fourier=fourier,
                                             fourier_states=list(angle_names) if fourier else None,
                                             linear_states=linear))
    return out


def threshold_grid(Y: np.ndarray) -> list[float]:
    """STLSQ thresholds ``RELATIVE_THRESHOLDS`` times the targets' scale, the median over outputs of their std.

    The threshold cuts raw coefficients, which scale with the targets (inputs are taken to be of order one):
    a residual dynamics model's increments are of the order of the time step, a reward of its own units.
    """
    s = float(np.median(np.std(Y, axis=0)))
    s = s if np.isfinite(s) and s > 0 else 1.0
    return [float(f"{r * s:.3g}") for r in RELATIVE_THRESHOLDS]


@dataclass(frozen=True)
class Candidate:
    """One (library, threshold) candidate and its held-out error."""

    label: str
    library: LibraryConfig
    threshold: float
    error: float
    nnz: int
    n_terms: int

    def to_dict(self) -> dict:
        return {"label": self.label, "library": asdict(self.library), "threshold": self.threshold,
                "error": self.error if math.isfinite(self.error) else None, "nnz": self.nnz,
                "n_terms": self.n_terms}


@dataclass(frozen=True)
class Selection:
    """What ``library: auto`` tried and chose: ``candidates[chosen]`` is the choice, ``candidates[best]`` the
    lowest error. ``metric`` says what ``error`` is; ``seconds`` what the ranking cost."""

    what: str
    metric: str
    candidates: tuple[Candidate, ...]
    chosen: int
    best: int
    tolerance: float
    seconds: float

    @property
    def choice(self) -> Candidate:
        return self.candidates[self.chosen]

    def to_dict(self) -> dict:
        """Plain JSON (non-finite errors are None), for a model's metadata."""
        return {"what": self.what, "metric": self.metric, "tolerance": self.tolerance,
                "absolute_tolerance": ABSOLUTE_TOLERANCE, "seconds": round(self.seconds, 3),
                "chosen": self.chosen, "best": self.best, "candidates": [c.to_dict() for c in self.candidates]}

    def describe(self, max_rows: int = 12) -> str:
        """Readable table: per library its best threshold (every candidate is in :meth:`to_dict`)."""
        best_of: dict[str, int] = {}
        for i, c in enumerate(self.candidates):
            j = best_of.get(c.label)
            if j is None or _key_err(c) < _key_err(self.candidates[j]):
                best_of[c.label] = i
        rows = sorted(set(best_of.values()) | {self.chosen, self.best}, key=lambda i: _key_err(self.candidates[i]))
        rows = rows[:max_rows] + [i for i in (self.chosen, self.best) if i not in rows[:max_rows]]
        width = max(len(self.candidates[i].label) for i in rows)
        c = self.choice
        lines = [f"{self.what} selection: {len(self.candidates)} candidates ({len(best_of)} libraries) by "
                 f"{self.metric} in {self.seconds:.1f}s; chose {c.label}, threshold {c.threshold:g} "
                 f"({c.nnz} terms, error {c.error:.4g}; the simplest within {100 * self.tolerance:.0f}% of the "
                 f"best {self.candidates[self.best].error:.4g})"]
        for i in rows:
            k = self.candidates[i]
            mark = "*" if i == self.chosen else ("b" if i == self.best else " ")
            lines.append(f"  {mark} {k.label:<{width}}  threshold {k.threshold:<8.3g} nnz {k.nnz:>4}/{k.n_terms:<4} "
                         f"error {k.error:.4g}")
        return "\n".join(lines)

    def flat(self, prefix: str) -> dict:
        """Flat summary keys: ``<prefix>_library``, ``_degree``, ``_threshold``, ``_selection_*``."""
        c = self.choice
        return {**choice_keys(prefix, c.library, c.threshold, c.label),
                f"{prefix}_selection_error": c.error, f"{prefix}_selection_best_error": self.candidates[self.best].error,
                f"{prefix}_selection_candidates": len(self.candidates),
                f"{prefix}_selection_seconds": round(self.seconds, 3),
                f"{prefix}_selection": self.describe()}


def choice_keys(prefix: str, lib: LibraryConfig, threshold: float, label: str | None = None) -> dict:
    """Flat keys naming a model's library and threshold (``dynamics_library``, ``dynamics_degree``, ...)."""
    return {f"{prefix}_library": label or library_label(lib), f"{prefix}_degree": lib.degree,
            f"{prefix}_control": lib.control, f"{prefix}_fourier": lib.fourier, f"{prefix}_threshold": threshold}


def _key_err(c: Candidate) -> float:
    return c.error if math.isfinite(c.error) else math.inf


def choose(candidates: Sequence[Candidate], tolerance: float) -> tuple[int, int]:
    """(chosen, best): the parsimony rule. ``best`` has the lowest error; ``chosen`` is the simplest candidate
    (fewest nonzero terms, then lowest degree, then smaller library, then larger threshold) whose error is
    at most ``max((1 + tolerance) * best, best + ABSOLUTE_TOLERANCE)``."""
    errs = np.array([_key_err(c) for c in candidates])
    if not np.isfinite(errs).any():
        raise ValueError("model selection: every candidate diverges on the held-out episodes")
    best = int(np.argmin(errs))
    limit = max((1 + tolerance) * errs[best], errs[best] + ABSOLUTE_TOLERANCE)
    ok = [i for i in range(len(candidates)) if errs[i] <= limit]
    chosen = min(ok, key=lambda i: (candidates[i].nnz, candidates[i].library.degree, candidates[i].n_terms,
                                    -candidates[i].threshold, i))
    return chosen, best


def window_error(traj: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> float:
    """Held-out rollout error of a candidate: the mean over windows (B, T, n) of each window's RMS error in
    units of ``scale``, capped at ``WINDOW_ERROR_CAP`` (inf only when every window diverges).

    On an unstable or chaotic system a few open-loop windows diverge for every candidate, and a plain RMS
    would rank by those alone; the cap makes them count alike. A median would not see a candidate that
    diverges on a third of the windows (InvertedDoublePendulum: chosen by its median, a model blew up on
    the held-out episodes at 1e59).
    """
    with np.errstate(all="ignore"):
        per_window = np.sqrt(np.mean(((traj - truth) / scale) ** 2, axis=tuple(range(1, traj.ndim))))
    finite = np.isfinite(per_window)
    if not finite.any():
        return float("inf")
    return float(np.mean(np.where(finite, np.minimum(per_window, WINDOW_ERROR_CAP), WINDOW_ERROR_CAP)))


def ridge_on(G: np.ndarray, b: np.ndarray, active: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge weights on the ``active`` terms, from the Gram matrix ``G = theta.T theta`` and ``b = theta.T y``."""
    A = G[np.ix_(active, active)] + alpha * np.eye(active.size)
    try:
        return np.linalg.solve(A, b[active])
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A, b[active], rcond=None)[0]


def stlsq_path(theta: np.ndarray, Y: np.ndarray, thresholds: Sequence[float], alpha: float,
               max_iter: int = 20) -> list[np.ndarray]:
    """Sequentially thresholded ridge least squares for each threshold: (n_outputs, n_terms) each.

    The same iteration as ``pysindy.STLSQ`` (ridge fit on the active terms, drop those under the threshold,
    repeat until the active set is stable), on the Gram matrix ``theta.T theta``, computed once and shared
    by every threshold: ranking a library's threshold grid costs one pass over the data.
    """
    G = theta.T @ theta
    B = theta.T @ Y
    n_t = G.shape[0]

    def ridge(active: np.ndarray, j: int) -> np.ndarray:
        return ridge_on(G, B[:, j], active, alpha)

    out = []
    for thr in thresholds:
        coef = np.zeros((Y.shape[1], n_t))
        for j in range(Y.shape[1]):
            active = np.arange(n_t)
            w = ridge(active, j)
            for _ in range(max_iter):
                keep = np.abs(w) >= thr
                if keep.all() or not keep.any():
                    if not keep.any():
                        active, w = active[:0], w[:0]
                    break
                active, w = active[keep], ridge(active[keep], j)
            coef[j, active] = w
        out.append(coef)
    return out


def select_library(
    what: str,
    X: np.ndarray,
    U: np.ndarray,
    Y: np.ndarray,
    input_names: Sequence[str],
    output_names: Sequence[str],
    score: Callable[[SparseModel], float],
    metric: str,
    libraries: Sequence[LibraryConfig],
    thresholds: Sequence[float] | None,
    alpha: float,
    tolerance: float,
    finish: Callable[[np.ndarray, list], np.ndarray] | None = None,
    **model_kwargs,
) -> Selection:
    """Rank every (library, threshold) by ``score`` of its single STLSQ fit of ``Y`` on ``Theta([X, U])``.

    ``thresholds`` None: :func:`threshold_grid` of ``Y``. ``finish(coef, terms)`` turns a fit's coefficients
    into the model's (the dynamics adds the identity back to a residual fit); ``model_kwargs`` go to the
    :class:`SparseModel` that ``score`` gets (``unit_pairs``...).
    """
    from .regression import build_library  # pysindy: imported only when a model is selected

    t0 = time.perf_counter()
    n_x, n_u = X.shape[1], U.shape[1]
    Z = np.concatenate([X, U], axis=1)
    grid = threshold_grid(Y) if thresholds is None else list(thresholds)
    state_names = list(input_names)[:n_x]
    seen: set = set()
    cands: list[Candidate] = []
    for lib in libraries:
        pl = build_library(lib, n_x, n_u, state_names)
        pl.fit([Z])
        shell = SparseModel.from_library(pl, input_names, np.zeros((len(output_names), pl.n_output_features_)),
                                         output_names, **model_kwargs)
        key = frozenset(shell.terms)
        if key in seen:  # e.g. poly1 affine(0) is poly1 full
            continue
        seen.add(key)
        if len(shell.terms) > max(len(Z) // 2, 1):  # more terms than the data can pin down
            continue
        theta = shell.features(Z)
        label = library_label(lib, state_names)
        for thr, coef in zip(grid, stlsq_path(theta, Y, grid, alpha)):
            model_coef = finish(coef, shell.terms) if finish is not None else coef
            err = float(score(shell.with_coef(model_coef)))
            cands.append(Candidate(label, lib, thr, err if math.isfinite(err) else math.inf,
                                   int(np.count_nonzero(model_coef)), len(shell.terms)))
    if not cands:
        raise ValueError(f"{what} selection: no candidate library fits {len(Z)} transitions")
    chosen, best = choose(cands, tolerance)
    return Selection(what, metric, tuple(cands), chosen, best, tolerance, time.perf_counter() - t0)


def resolve(library, threshold) -> tuple[bool, bool]:
    """(select the library, select the threshold) for config values: ``auto``, or a None threshold, which
    follows the library (``auto`` with it, else the fixed default 1e-3)."""
    lib_auto = library == "auto"
    return lib_auto, threshold == "auto" or (threshold is None and lib_auto)
