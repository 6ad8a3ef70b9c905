"""E-SINDy dynamics with control: x[k+1] = Theta(x[k], u[k]) Xi, fitted with pysindy.

A fresh ``pysindy.EnsembleOptimizer`` is built for every fit (its ``coef_list``
is never cleared between fits, and its ``n_subset`` is fixed at the first
fit). Ensemble members whose rollouts on held-out episodes diverge are dropped
before the aggregate is taken.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pysindy as ps

from .config import LibraryConfig
from .data import TransitionBuffer
from .sparse import SparseModel

__all__ = ["SINDyDynamics", "build_library", "rollout", "prediction_errors", "fit_sparse_regression"]

log = logging.getLogger("sindyrl")


def build_library(cfg: LibraryConfig, n_x: int, n_u: int) -> ps.feature_library.base.BaseFeatureLibrary:
    """pysindy library over inputs ``[x (n_x), u (n_u)]`` as the config describes."""
    x_idx = list(range(n_x))
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
    if cfg.fourier > 0:
        libs.append(ps.GeneralizedLibrary([ps.FourierLibrary(n_frequencies=cfg.fourier)], inputs_per_library=[x_idx]))
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
) -> tuple[SparseModel, object]:
    """Ensemble STLSQ of ``Y`` on ``Theta([X, U])`` with pysindy; returns a SparseModel and the fit.

    The aggregate ``coef`` is the median of members; callers re-aggregate after
    member validation.
    """
    n_x = X.shape[1]
    n_u = 0 if U is None else U.shape[1]
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"sparse regression: targets have shape {Y.shape}, expected ({X.shape[0]}, n_outputs)")
    for what, arr in (("inputs", X), ("controls", U), ("targets", Y)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"sparse regression: {what} contain NaN or inf")
    lib = build_library(library, n_x, n_u)
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
            if Y.shape[1] == n_x:
                # the dynamics case: pysindy's own discrete-time model
                fitted = ps.DiscreteSINDy(optimizer=opt, feature_library=lib)
                fitted.fit(X, t=1, x_next=Y, u=U, feature_names=list(input_names))
                model = SparseModel.from_pysindy(fitted, inputs=input_names, outputs=output_names, name=name)
            else:
                # targets of another width (reward, policy): same library and optimizer, direct regression
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
        model.ensemble = model.coef[None].copy()
    return model, fitted


def _step_fn(model):
    if isinstance(model, SparseModel):
        return lambda x, u: model.evaluate(np.concatenate([x, u], axis=1))
    if callable(getattr(model, "predict", None)):
        return model.predict
    raise TypeError(f"rollout: expected a SparseModel or an object with predict(obs, actions), got {type(model)}")


def rollout(model, x0: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Batched open-loop rollout: x0 (B, n_x), actions (B, T, n_u) -> states (B, T + 1, n_x).

    ``model`` is a dynamics SparseModel (inputs: states then actions) or any
    object with a batched ``predict(obs, actions)``.
    """
    step = _step_fn(model)
    x0 = np.atleast_2d(np.asarray(x0, dtype=np.float64))
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim == 2:
        actions = actions[None]
    B, T, _ = actions.shape
    out = np.empty((B, T + 1, x0.shape[1]))
    out[:, 0] = x0
    with np.errstate(all="ignore"):
        for t in range(T):
            out[:, t + 1] = step(out[:, t], actions[:, t])
    return out


def prediction_errors(model, buffer: TransitionBuffer, mask: np.ndarray | None, rollout_steps: int,
                      seed: int = 0) -> dict[str, float]:
    """One-step and k-step open-loop rollout error on ``mask`` (RMS, in units of each state's std).

    The k-step error is inf when rollouts diverge, NaN when no episode is long enough.
    """
    step = _step_fn(model)
    mask = np.ones(len(buffer), dtype=bool) if mask is None else mask
    scale = np.maximum(buffer.next_obs.std(0), 1e-8)
    pred = step(buffer.obs[mask], buffer.actions[mask])
    one = float(np.sqrt(np.mean(((pred - buffer.next_obs[mask]) / scale) ** 2)))
    starts = _windows(buffer, mask, rollout_steps, 256, seed)
    k = float("nan")
    if len(starts):
        idx = starts[:, None] + np.arange(rollout_steps)[None, :]
        traj = rollout(model, buffer.obs[starts], buffer.actions[idx])[:, 1:]
        with np.errstate(all="ignore"):
            k = float(np.sqrt(np.mean(((traj - buffer.next_obs[idx]) / scale) ** 2)))
        if not np.isfinite(k):
            k = float("inf")
    return {"model_one_step_error": one, "model_rollout_error": k, "model_rollout_steps": rollout_steps}


def _windows(buf: TransitionBuffer, mask: np.ndarray, length: int, max_windows: int, seed: int):
    """Start indices of contiguous windows of ``length`` transitions inside masked episodes."""
    starts = []
    for e in buf.episodes():
        e = e[mask[e]]
        if len(e) >= length:
            starts.extend(e[: len(e) - length + 1 : max(1, length // 2)])
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) > max_windows:
        starts = np.random.default_rng(seed).choice(starts, max_windows, replace=False)
    return starts


class SINDyDynamics:
    """Ensemble SINDy (E-SINDy) model of discrete-time controlled dynamics.

    Parameters
    ----------
    obs_names, action_names : list of str
        Names of the state and control inputs.
    library : LibraryConfig
        Candidate terms.
    threshold : float, default 1e-3
        STLSQ threshold (on raw coefficients unless ``normalize_columns``).
    alpha : float, default 1e-5
        STLSQ ridge penalty.
    n_models : int, default 20
        Ensemble members (bagging and/or library ensembling).
    aggregate : {"median", "mean"}
        How member coefficients are combined.
    residual : bool, default True
        Regress the increment x[k+1] - x[k] (sparser, better conditioned), then
        add the identity back, so the model still maps x[k] to x[k+1].
    unit_pairs : list of (int, int)
        State index pairs (cos, sin) kept on the unit circle.
    seed : int
        Seed of the ensemble's random draws.
    """

    def __init__(
        self,
        obs_names: Sequence[str],
        action_names: Sequence[str],
        library: LibraryConfig | None = None,
        threshold: float = 1e-3,
        alpha: float = 1e-5,
        n_models: int = 20,
        bagging: bool = True,
        library_ensemble: bool = True,
        n_candidates_to_drop: int = 1,
        aggregate: str = "median",
        residual: bool = True,
        normalize_columns: bool = False,
        unit_pairs: Sequence[tuple[int, int]] = (),
        rollout_steps: int = 20,
        member_error_factor: float = 5.0,
        seed: int = 0,
    ):
        self.obs_names = list(obs_names)
        self.action_names = list(action_names)
        self.library = library or LibraryConfig()
        self.threshold = threshold
        self.alpha = alpha
        self.n_models = n_models
        self.bagging = bagging
        self.library_ensemble = library_ensemble
        self.n_candidates_to_drop = n_candidates_to_drop
        self.aggregate = aggregate
        self.residual = residual
        self.normalize_columns = normalize_columns
        self.unit_pairs = [tuple(p) for p in unit_pairs]
        self.rollout_steps = rollout_steps
        self.member_error_factor = member_error_factor
        self.seed = seed

    @classmethod
    def from_config(cls, cfg, obs_names, action_names, unit_pairs, seed: int) -> SINDyDynamics:
        return cls(
            obs_names, action_names, library=cfg.library, threshold=cfg.threshold, alpha=cfg.alpha,
            n_models=cfg.n_models, bagging=cfg.bagging, library_ensemble=cfg.library_ensemble,
            n_candidates_to_drop=cfg.n_candidates_to_drop, aggregate=cfg.aggregate, residual=cfg.residual,
            normalize_columns=cfg.normalize_columns, unit_pairs=unit_pairs, rollout_steps=cfg.rollout_steps,
            member_error_factor=cfg.member_error_factor, seed=seed,
        )

    # ------------------------------------------------------------------ fit
    def fit(self, buffer: TransitionBuffer, val_mask: np.ndarray | None = None) -> SINDyDynamics:
        """Fit on the transitions of ``buffer`` not in ``val_mask``; validate members on the rest."""
        if len(buffer) < 2:
            raise ValueError(f"dynamics fit: need at least 2 transitions, got {len(buffer)}")
        if (buffer.n_obs, buffer.n_act) != (len(self.obs_names), len(self.action_names)):
            raise ValueError(
                f"dynamics fit: data has {buffer.n_obs} observations and {buffer.n_act} actions, "
                f"model expects {len(self.obs_names)} and {len(self.action_names)}"
            )
        if val_mask is None:
            val_mask = np.zeros(len(buffer), dtype=bool)
        train = ~val_mask
        if train.sum() < 2:
            raise ValueError("dynamics fit: no training transitions left after the hold-out split")
        X, U, Xn = buffer.obs[train], buffer.actions[train], buffer.next_obs[train]
        target = Xn - X if self.residual else Xn
        names = self.obs_names + self.action_names
        model, _ = fit_sparse_regression(
            X, U, target, self.library, names, self.obs_names, self.threshold, self.alpha, self.n_models,
            self.seed, self.bagging, self.library_ensemble, self.n_candidates_to_drop, self.normalize_columns,
            name="dynamics",
        )
        ens = model.ensemble
        # the plain STLSQ fit on the full library and all training data: the yardstick for members, and the
        # fallback when every member is worse (library ensembling on a small library drops needed terms)
        ref, _ = fit_sparse_regression(
            X, U, target, self.library, names, self.obs_names, self.threshold, self.alpha, 1, self.seed,
            normalize_columns=self.normalize_columns, name="dynamics",
        )
        ref_coef = ref.coef.copy()
        if self.residual:
            lin = {t: k for k, t in enumerate(model.terms) if len(t) == 1 and t[0][1] == "pow" and t[0][2] == 1}
            for i in range(len(self.obs_names)):
                k = lin.get(((i, "pow", 1.0),))
                if k is None:
                    raise ValueError("dynamics: residual=True needs the linear state terms in the library")
                ens[:, i, k] += 1.0
                ref_coef[i, k] += 1.0
        self._ref_coef = ref_coef
        lo, hi = buffer.state_bounds()
        in_lo = np.concatenate([lo, buffer.actions.min(0)])
        in_hi = np.concatenate([hi, buffer.actions.max(0)])
        self.model_ = SparseModel(
            inputs=names, outputs=self.obs_names, terms=model.terms, coef=np.median(ens, axis=0), ensemble=ens,
            unit_pairs=self.unit_pairs, input_bounds=(in_lo, in_hi), name="dynamics",
        )
        self.member_errors_ = self._validate_members(buffer, val_mask if val_mask.any() else train)
        self.model_.metadata.update(self.scores_ if hasattr(self, "scores_") else {})
        self.scores_ = self.score(buffer, val_mask if val_mask.any() else train)
        self.model_.metadata.update(
            {"threshold": self.threshold, "alpha": self.alpha, "residual": self.residual,
             "n_train": int(train.sum()), "members_kept": int(self.model_.n_models), **self.scores_}
        )
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("SINDyDynamics is not fitted yet: call fit() first")

    def _validate_members(self, buffer: TransitionBuffer, mask: np.ndarray) -> np.ndarray:
        """Roll each member out on held-out windows; drop divergent members; re-aggregate."""
        m = self.model_
        starts = _windows(buffer, mask, self.rollout_steps, 64, self.seed)
        if len(starts) == 0:
            starts = np.flatnonzero(mask)[:64]
            T = 1
        else:
            T = self.rollout_steps
        idx = starts[:, None] + np.arange(T)[None, :]
        acts = buffer.actions[idx]
        truth = buffer.next_obs[idx]
        scale = np.maximum(buffer.next_obs.std(0), 1e-8)
        errors = np.empty(m.n_models)
        for j in range(m.n_models):
            member = m.with_coef(m.ensemble[j])
            traj = rollout(member, buffer.obs[starts], acts)[:, 1:]
            with np.errstate(all="ignore"):
                err = np.sqrt(np.mean(((traj - truth) / scale) ** 2))
            errors[j] = err if np.isfinite(err) else np.inf
        ref_err = np.inf
        if getattr(self, "_ref_coef", None) is not None:
            traj = rollout(m.with_coef(self._ref_coef), buffer.obs[starts], acts)[:, 1:]
            with np.errstate(all="ignore"):
                ref_err = float(np.sqrt(np.mean(((traj - truth) / scale) ** 2)))
            ref_err = ref_err if np.isfinite(ref_err) else np.inf
        finite = errors[np.isfinite(errors)]
        if np.isfinite(ref_err) and (len(finite) == 0 or ref_err * self.member_error_factor < np.min(finite)):
            log.info("dynamics: every ensemble member is over %.0fx worse than the full-library fit over %d steps "
                     "(%.3g vs %.3g); using the full-library fit", self.member_error_factor, T,
                     np.min(finite) if len(finite) else np.inf, ref_err)
            self.model_ = m.with_coef(self._ref_coef, ensemble=self._ref_coef[None])
            return errors
        if len(finite) == 0:
            # keep going: the surrogate cuts episodes at the domain's edge, and more data usually fixes it
            log.warning("dynamics: every ensemble member diverges within %d steps on held-out data (%d transitions);"
                        " keeping all members. Try more data, a lower library degree or a larger threshold.",
                        T, len(buffer))
            return errors
        # relative test, with a floor so near-perfect members are never dropped for being 5x of ~0
        keep = errors <= max(self.member_error_factor * np.median(finite), 1e-3)
        if keep.sum() < m.n_models:
            log.info("dynamics: dropped %d of %d ensemble members whose %d-step rollouts diverged (errors %s)",
                     int((~keep).sum()), m.n_models, T, np.round(errors[~keep], 3).tolist())
        ens = m.ensemble[keep]
        agg = np.median(ens, axis=0) if self.aggregate == "median" else np.mean(ens, axis=0)
        self.model_ = m.with_coef(agg, ensemble=ens)
        return errors

    # -------------------------------------------------------------- predict
    def predict(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Next states from batched states and actions (aggregate coefficients)."""
        self._check_fitted()
        obs = np.atleast_2d(obs)
        actions = np.atleast_2d(actions)
        return self.model_.evaluate(np.concatenate([obs, actions], axis=1))

    def score(self, buffer: TransitionBuffer, mask: np.ndarray | None = None) -> dict[str, float]:
        """One-step and k-step rollout error (RMS, in units of each state's std) on ``mask``."""
        self._check_fitted()
        return prediction_errors(self.model_, buffer, mask, self.rollout_steps, self.seed)

    def equations(self, precision: int = 3) -> list[str]:
        self._check_fitted()
        return self.model_.equations(precision, lhs=[f"{n}'" for n in self.obs_names])
