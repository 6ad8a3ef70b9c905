"""The one sparse regression of sindyrl: a pysindy library and (ensemble) STLSQ, for dynamics, reward and policy.

:func:`build_library` turns a :class:`~sindyrl.config.LibraryConfig` into a
pysindy feature library over ``[x, u]``; :func:`fit_sparse_regression` fits
``Y ~ Theta([X, U]) Xi`` and returns the result as a :class:`SparseModel`.
The caller says which problem it is: ``discrete_time=True`` is a dynamics map
x[k+1] = f(x[k], u[k]) fitted with pysindy's ``DiscreteSINDy``; otherwise the
targets (a reward, a policy's actions) are regressed directly on the library.
The target width never decides it: a policy with as many actions as
observations is still a plain regression.

A fresh ``pysindy.EnsembleOptimizer`` is built for every fit (its ``coef_list``
is never cleared between fits, and its ``n_subset`` is fixed at the first fit).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pysindy as ps

from .config import LibraryConfig
from .sparse import SparseModel

__all__ = ["build_library", "fit_sparse_regression"]


def build_library(cfg: LibraryConfig, n_x: int, n_u: int,
                  state_names: Sequence[str] | None = None) -> ps.feature_library.base.BaseFeatureLibrary:
    """pysindy library over inputs ``[x (n_x), u (n_u)]`` as the config describes.

    ``state_names`` (the names of x's columns) are needed only when ``cfg.fourier_states`` or
    ``cfg.linear_states`` names some. A linear-only state is left out of the polynomial (and of the
    control-affine products and the Fourier terms) and enters as its own degree-1 term.
    """
    names = list(state_names or [])
    lin_idx: list[int] = []
    if cfg.linear_states:
        unknown = [n for n in cfg.linear_states if n not in names]
        if unknown:
            raise ValueError(f"library.linear_states: {unknown} not among the states {names}")
        lin_idx = sorted(names.index(n) for n in cfg.linear_states)
    # the states in products and powers; the linear-only ones get their own degree-1 library below
    x_idx = [i for i in range(n_x) if i not in lin_idx]
    u_idx = list(range(n_x, n_x + n_u))
    libs = []
    if cfg.control == "full" or n_u == 0:
        libs.append(
            ps.GeneralizedLibrary(
                [ps.PolynomialLibrary(degree=cfg.degree, include_bias=cfg.include_bias,
                                      include_interaction=cfg.include_interaction)],
                inputs_per_library=[x_idx + u_idx],
            )
        )
    else:
        libs.append(
            ps.GeneralizedLibrary(
                [ps.PolynomialLibrary(degree=cfg.degree, include_bias=cfg.include_bias,
                                      include_interaction=cfg.include_interaction)],
                inputs_per_library=[x_idx],
            )
        )
        state_part = ps.PolynomialLibrary(degree=max(cfg.control_degree, 0), include_bias=True,
                                          include_interaction=cfg.include_interaction) \
            if cfg.control_degree > 0 else None
        lin_u = ps.PolynomialLibrary(degree=1, include_bias=False)
        if state_part is None:
            libs.append(ps.GeneralizedLibrary([lin_u], inputs_per_library=[u_idx]))
        else:
            libs.append(ps.TensoredLibrary([state_part, lin_u], inputs_per_library=[x_idx, u_idx]))
    if lin_idx:
        libs.append(ps.GeneralizedLibrary([ps.PolynomialLibrary(degree=1, include_bias=False)],
                                          inputs_per_library=[lin_idx]))
    if cfg.fourier > 0:
        f_idx = x_idx
        if cfg.fourier_states is not None:
            unknown = [n for n in cfg.fourier_states if n not in names]
            if unknown or not cfg.fourier_states:
                raise ValueError(f"library.fourier_states: {unknown or '[]'} not among the states {names}")
            f_idx = [names.index(n) for n in cfg.fourier_states]
        libs.append(ps.GeneralizedLibrary([ps.FourierLibrary(n_frequencies=cfg.fourier)], inputs_per_library=[f_idx]))
    return libs[0] if len(libs) == 1 else ps.ConcatLibrary(libs)


def fit_sparse_regression(
    X: np.ndarray,
    U: np.ndarray | None,
    Y: np.ndarray,
    library: LibraryConfig,
    input_names: Sequence[str],
    output_names: Sequence[str],
    threshold: float,
    alpha: float,
    n_models: int,
    seed: int,
    bagging: bool = True,
    library_ensemble: bool = True,
    n_candidates_to_drop: int = 1,
    normalize_columns: bool = False,
    name: str = "model",
    *,
    discrete_time: bool,
) -> tuple[SparseModel, object]:
    """Ensemble STLSQ of ``Y`` on ``Theta([X, U])`` with pysindy; returns a SparseModel and the fit.

    Parameters
    ----------
    X : array (N, n_x)
        States (or observations); the first ``n_x`` library inputs.
    U : array (N, n_u), optional
        Controls, the remaining library inputs.
    Y : array (N, n_outputs)
        Targets.
    library : LibraryConfig
        Candidate terms (see :func:`build_library`).
    input_names, output_names : list of str
        Names of ``[X, U]``'s columns and of ``Y``'s.
    threshold, alpha : float
        STLSQ threshold and ridge penalty.
    n_models : int
        Ensemble members (1: a single STLSQ fit).
    seed : int
        Seed of the ensemble's random draws (numpy's global RNG is restored afterwards).
    bagging, library_ensemble, n_candidates_to_drop
        ``pysindy.EnsembleOptimizer`` options, used when ``n_models > 1``.
    normalize_columns : bool, default False
        STLSQ on normalised library columns.
    name : str
        The model's name.
    discrete_time : bool
        True for a dynamics map (``Y`` is x[k+1] or its increment, same width
        as ``X``), fitted with ``pysindy.DiscreteSINDy``; False for any other
        map (reward, policy), fitted by regressing ``Y`` on the library directly.

    Returns
    -------
    (SparseModel, fit)
        The model (``coef`` as pysindy aggregates it; ``ensemble`` always set,
        one member when there is no ensemble) and the pysindy object fitted.
    """
    n_x = X.shape[1]
    n_u = 0 if U is None else U.shape[1]
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"sparse regression: targets have shape {Y.shape}, expected ({X.shape[0]}, n_outputs)")
    if discrete_time and Y.shape[1] != n_x:
        raise ValueError(f"sparse regression: a discrete-time map needs targets of the state's width {n_x}, "
                         f"got {Y.shape[1]}")
    for what, arr in (("inputs", X), ("controls", U), ("targets", Y)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"sparse regression: {what} contain NaN or inf")
    lib = build_library(library, n_x, n_u, list(input_names)[:n_x])
    base = ps.STLSQ(threshold=threshold, alpha=alpha, normalize_columns=normalize_columns)
    if n_models > 1 and (bagging or library_ensemble):
        opt = ps.EnsembleOptimizer(base, bagging=bagging, library_ensemble=library_ensemble, n_models=n_models,
                                   n_candidates_to_drop=n_candidates_to_drop)
    else:
        opt = base
    # pysindy's ensembling draws from numpy's global RNG: seed it, then restore it.
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if discrete_time:
                fitted = ps.DiscreteSINDy(optimizer=opt, feature_library=lib)
                fitted.fit(X, t=1, x_next=Y, u=U, feature_names=list(input_names))
                model = SparseModel.from_pysindy(fitted, inputs=input_names, outputs=output_names, name=name)
            else:
                Z = X if U is None else np.concatenate([X, U], axis=1)
                lib.fit([Z])
                theta = np.asarray(lib.transform([Z])[0])
                opt.fit(theta, Y)
                cl = getattr(opt, "coef_list", None)
                model = SparseModel.from_library(
                    lib, input_names, np.asarray(opt.coef_).reshape(Y.shape[1], -1), output_names,
                    ensemble=np.asarray(cl) if cl else None, name=name,
                )
                fitted = opt
    finally:
        np.random.set_state(state)
    if model.ensemble is None:
        model = model.with_ensemble(model.coef[None])
    return model, fitted
