"""E-SINDy dynamics with control: x[k+1] = Theta(x[k], u[k]) Xi, fitted with pysindy.

The regression itself is :func:`sindyrl.regression.fit_sparse_regression`.
Ensemble members whose rollouts on held-out episodes diverge are dropped
before the aggregate is taken.

:class:`DynamicsModel` is the protocol every learned dynamics model follows
(this E-SINDy model, and the neural-network ensemble of
:mod:`sindyrl.nn_dynamics`), so the Dyna loop and the surrogate need not know
which one they hold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Protocol

import numpy as np

from .config import LibraryConfig
from .data import TransitionBuffer
from .regression import fit_sparse_regression
from .selection import (
    ABSOLUTE_TOLERANCE,
    Selection,
    angle_like_states,
    candidate_libraries,
    choice_keys,
    impulsive_states,
    resolve,
    select_library,
    window_error,
)
from .sparse import SparseModel

__all__ = ["DynamicsModel", "SINDyDynamics", "rollout", "rollout_horizon", "prediction_errors"]

log = logging.getLogger("sindyrl")


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

    k is ``rollout_steps``, or less when the episodes are shorter (see :func:`rollout_horizon`);
    ``model_rollout_steps`` says which k was used. The k-step error is inf when rollouts diverge, NaN only
    when ``mask`` holds no transition.
    """
    step = _step_fn(model)
    mask = np.ones(len(buffer), dtype=bool) if mask is None else mask
    scale = np.maximum(buffer.next_obs.std(0), 1e-8)
    pred = step(buffer.obs[mask], buffer.actions[mask])
    one = float(np.sqrt(np.mean(((pred - buffer.next_obs[mask]) / scale) ** 2)))
    rollout_steps = rollout_horizon(buffer, mask, rollout_steps)
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


def rollout_horizon(buf: TransitionBuffer, mask: np.ndarray, rollout_steps: int) -> int:
    """The rollout length that held-out episodes allow: ``rollout_steps``, or the median length of the
    episodes inside ``mask`` when that is shorter (InvertedPendulum with random actions: ~6-step episodes),
    so at least half of them give a window (0 when ``mask`` is empty)."""
    lengths = [int(mask[e].sum()) for e in buf.episodes()]
    lengths = [n for n in lengths if n > 0]
    if not lengths:
        return 0
    return int(max(1, min(rollout_steps, np.median(lengths) // 1)))


def _windows(buf: TransitionBuffer, mask: np.ndarray, length: int, max_windows: int, seed: int):
    """Start indices of contiguous windows of ``length`` transitions inside masked episodes."""
    starts = []
    for ep in buf.episodes():
        ep = ep[mask[ep]]
        # contiguous runs only: a held-out segment of an episode (TransitionBuffer.split_episodes) ends
        # where training transitions begin
        for e in np.split(ep, np.flatnonzero(np.diff(ep) > 1) + 1):
            if len(e) >= length:
                starts.extend(e[: len(e) - length + 1 : max(1, length // 2)])
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) > max_windows:
        starts = np.random.default_rng(seed).choice(starts, max_windows, replace=False)
    return starts


class DynamicsModel(Protocol):
    """A learned model of discrete-time controlled dynamics x[k+1] = f(x[k], u[k]), fitted on real transitions.

    :class:`SINDyDynamics` (E-SINDy) and :class:`sindyrl.nn_dynamics.NNEnsembleDynamics` (Dyna-NN) follow it.
    scikit-learn style: the constructor only stores settings, ``fit`` returns the model, fitted state ends in
    ``_``, and everything but the names and ``n_models`` needs a fitted model.
    """

    @property
    def obs_names(self) -> list[str]:
        """Names of the states (observations), in column order."""

    @property
    def action_names(self) -> list[str]:
        """Names of the controls (actions), in column order."""

    @property
    def n_models(self) -> int:
        """Ensemble size asked for (a constructor argument); E-SINDy may keep fewer (``sparse_model.n_models``)."""

    @property
    def scores_(self) -> dict[str, float]:
        """Scores of the last fit on its held-out transitions (``model_one_step_error``, ``model_rollout_error``...)."""

    @property
    def sparse_model(self) -> SparseModel | None:
        """The fitted model as a :class:`SparseModel` (inputs: states then actions), or None if it has none."""

    def fit(self, buffer: TransitionBuffer, val_mask: np.ndarray | None = None) -> DynamicsModel:
        """Fit on the transitions of ``buffer`` outside ``val_mask`` (validated on those inside); returns self."""

    def predict(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Next states of a batch with the ensemble's aggregate: (N, n_obs), (N, n_act) -> (N, n_obs)."""

    def score(self, buffer: TransitionBuffer, mask: np.ndarray | None = None) -> dict[str, float]:
        """One-step and k-step rollout error on ``mask`` (RMS, in units of each state's std)."""

    def equations(self, precision: int = 3) -> list[str]:
        """One readable line per state (``x0' = 0.9 x0 + 0.1 u``); empty for a model with no equations."""


class SINDyDynamics:
    """Ensemble SINDy (E-SINDy) model of discrete-time controlled dynamics.

    Parameters
    ----------
    obs_names, action_names : list of str
        Names of the state and control inputs.
    library : LibraryConfig or "auto"
        Candidate terms; ``"auto"``: chosen by held-out rollout error (:mod:`sindyrl.selection`), the
        choice in ``library_``, what was tried in ``selection_``.
    threshold : float or "auto", default 1e-3
        STLSQ threshold (on raw coefficients unless ``normalize_columns``); ``"auto"``, or None with an
        ``"auto"`` library: chosen on a grid with the library (``threshold_``).
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
    selection_tolerance : float, default 0.15
        Parsimony rule of ``auto``: the simplest candidate within this fraction of the best error wins.
    seed : int
        Seed of the ensemble's random draws.
    """

    def __init__(
        self,
        obs_names: Sequence[str],
        action_names: Sequence[str],
        library: LibraryConfig | str | None = None,
        threshold: float | str | None = 1e-3,
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
        selection_tolerance: float = 0.15,
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
        self.selection_tolerance = selection_tolerance
        self.seed = seed

    @classmethod
    def from_config(cls, cfg, obs_names, action_names, unit_pairs, seed: int) -> SINDyDynamics:
        return cls(
            obs_names, action_names, library=cfg.library, threshold=cfg.threshold, alpha=cfg.alpha,
            n_models=cfg.n_models, bagging=cfg.bagging, library_ensemble=cfg.library_ensemble,
            n_candidates_to_drop=cfg.n_candidates_to_drop, aggregate=cfg.aggregate, residual=cfg.residual,
            normalize_columns=cfg.normalize_columns, unit_pairs=unit_pairs, rollout_steps=cfg.rollout_steps,
            member_error_factor=cfg.member_error_factor, selection_tolerance=cfg.selection_tolerance, seed=seed,
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
        self.library_, self.threshold_, self.selection_ = self._select(buffer, val_mask, X, U, target)
        fitted, _ = fit_sparse_regression(
            X, U, target, self.library_, names, self.obs_names, self.threshold_, self.alpha, self.n_models,
            self.seed, self.bagging, self.library_ensemble, self.n_candidates_to_drop, self.normalize_columns,
            name="dynamics", discrete_time=True,
        )
        # the plain STLSQ fit on the full library and all training data: the yardstick for members, and the
        # fallback when every member is worse (library ensembling on a small library drops needed terms)
        ref, _ = fit_sparse_regression(
            X, U, target, self.library_, names, self.obs_names, self.threshold_, self.alpha, 1, self.seed,
            normalize_columns=self.normalize_columns, name="dynamics", discrete_time=True,
        )
        ens = fitted.ensemble.copy()
        ref_coef = ref.coef.copy()
        if self.residual:
            lin = {t: k for k, t in enumerate(fitted.terms) if len(t) == 1 and t[0][1] == "pow" and t[0][2] == 1}
            for i in range(len(self.obs_names)):
                k = lin.get(((i, "pow", 1.0),))
                if k is None:
                    raise ValueError("dynamics: residual=True needs the linear state terms in the library")
                ens[:, i, k] += 1.0
                ref_coef[i, k] += 1.0
        lo, hi = buffer.state_bounds()
        in_lo = np.concatenate([lo, buffer.actions.min(0)])
        in_hi = np.concatenate([hi, buffer.actions.max(0)])
        members = SparseModel(
            inputs=names, outputs=self.obs_names, terms=fitted.terms, coef=np.median(ens, axis=0), ensemble=ens,
            unit_pairs=self.unit_pairs, input_bounds=(in_lo, in_hi), name="dynamics",
        )
        check = val_mask if val_mask.any() else train
        kept, self.member_errors_ = self._validate_members(members, ref_coef, buffer, check)
        agg = np.median(kept, axis=0) if self.aggregate == "median" else np.mean(kept, axis=0)
        self.model_ = members.with_coef(agg, ensemble=kept)
        self.scores_ = self.score(buffer, check)
        if self.selection_ is not None:
            self._prefer_reference_if_better(members, ref_coef, buffer, check)
        sel = self.selection_
        self.choice_ = sel.flat("dynamics") if sel is not None else \
            choice_keys("dynamics", self.library_, self.threshold_)
        self.model_ = self.model_.with_metadata(
            library=asdict(self.library_), threshold=self.threshold_, alpha=self.alpha, residual=self.residual,
            n_train=int(train.sum()), members_kept=int(self.model_.n_models), **self.scores_,
            **({"selection": sel.to_dict()} if sel is not None else {}),
        )
        return self

    def _prefer_reference_if_better(self, members: SparseModel, ref_coef: np.ndarray, buffer: TransitionBuffer,
                                    check: np.ndarray) -> None:
        """``auto`` promises the model that predicts the held-out episodes best: when the ensemble's aggregate
        is worse than the single fit that won the selection (beyond the selection's tolerance), keep that fit.

        Library ensembling on a small library drops needed terms (a linear system's 4-term library loses its
        control term in a quarter of the members), and the median of such members can lose the term.
        """
        ref = members.with_coef(ref_coef, ensemble=ref_coef[None])
        ref_scores = prediction_errors(ref, buffer, check, self.rollout_steps, self.seed)
        key = "model_rollout_error" if np.isfinite(ref_scores["model_rollout_error"]) else "model_one_step_error"
        agg_err, ref_err = self.scores_[key], ref_scores[key]
        if agg_err <= max((1 + self.selection_tolerance) * ref_err, ref_err + ABSOLUTE_TOLERANCE):
            return
        log.info("dynamics: the ensemble's aggregate predicts the held-out episodes worse than the single fit "
                 "(%.3g vs %.3g); using the single fit", agg_err, ref_err)
        self.model_, self.scores_ = ref, ref_scores

    def _select(self, buffer: TransitionBuffer, val_mask: np.ndarray, X: np.ndarray, U: np.ndarray,
                target: np.ndarray) -> tuple[LibraryConfig, float, Selection | None]:
        """The library and threshold to fit: as given, or chosen (``auto``) by held-out rollout error."""
        lib_auto, thr_auto = resolve(self.library, self.threshold)
        if not (lib_auto or thr_auto):
            return self.library, 1e-3 if self.threshold is None else float(self.threshold), None
        held = val_mask
        if not held.any():
            # no held-out episodes given: hold some of the training episodes out for the ranking alone
            fit_on, held = buffer.split_episodes(0.2, self.seed)
            if not held.any():
                log.warning("dynamics selection: one episode only, so candidates are ranked on their training "
                            "data (this favours large libraries); collect more episodes")
                held = np.ones(len(buffer), dtype=bool)
            else:
                X, U = buffer.obs[fit_on], buffer.actions[fit_on]
                target = buffer.next_obs[fit_on] - X if self.residual else buffer.next_obs[fit_on]
        T = rollout_horizon(buffer, held, self.rollout_steps)
        starts = _windows(buffer, held, T, 128, self.seed)
        if len(starts) == 0:
            starts, T = np.flatnonzero(held)[:128], 1
        idx = starts[:, None] + np.arange(T)[None, :]
        x0, acts, truth = buffer.obs[starts], buffer.actions[idx], buffer.next_obs[idx]
        scale = np.maximum(buffer.next_obs.std(0), 1e-8)

        def rollout_error(model: SparseModel) -> float:
            return window_error(rollout(model, x0, acts)[:, 1:], truth, scale)

        def add_identity(coef: np.ndarray, terms: list) -> np.ndarray:
            if not self.residual:
                return coef
            coef = coef.copy()
            for i in range(len(self.obs_names)):
                coef[i, terms.index(((i, "pow", 1.0),))] += 1.0
            return coef

        names = self.obs_names + self.action_names
        if lib_auto:
            angles = angle_like_states(self.obs_names, buffer.obs, buffer.next_obs, self.unit_pairs)
            libraries = candidate_libraries(len(self.action_names), [self.obs_names[i] for i in angles],
                                            impulsive=impulsive_states(self.obs_names, buffer.obs))
        else:
            libraries = [self.library]
        thresholds = None if thr_auto else [1e-3 if self.threshold is None else float(self.threshold)]
        sel = select_library(
            "dynamics", X, U, target, names, self.obs_names, rollout_error,
            f"{T}-step held-out rollout error" + (f" (episodes allow {T} of {self.rollout_steps})"
                                                  if T < self.rollout_steps else ""),
            libraries, thresholds, self.alpha, self.selection_tolerance, finish=add_identity,
            unit_pairs=self.unit_pairs, name="dynamics",
        )
        log.info("%s", sel.describe())
        return sel.choice.library, sel.choice.threshold, sel

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("SINDyDynamics is not fitted yet: call fit() first")

    def _validate_members(self, model: SparseModel, ref_coef: np.ndarray | None, buffer: TransitionBuffer,
                          mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Roll each member of ``model.ensemble`` out on held-out windows of ``mask``.

        Returns the members to keep (n_kept, n_outputs, n_terms) and every member's rollout error. Divergent
        members are dropped; when every member is over ``member_error_factor`` times worse than the reference
        fit ``ref_coef`` (the single full-library fit), the reference alone is kept.
        """
        T = rollout_horizon(buffer, mask, self.rollout_steps)
        starts = _windows(buffer, mask, T, 64, self.seed)
        if len(starts) == 0:
            starts = np.flatnonzero(mask)[:64]
            T = 1
        idx = starts[:, None] + np.arange(T)[None, :]
        acts = buffer.actions[idx]
        truth = buffer.next_obs[idx]
        scale = np.maximum(buffer.next_obs.std(0), 1e-8)

        def rollout_error(coef: np.ndarray) -> float:
            traj = rollout(model.with_coef(coef), buffer.obs[starts], acts)[:, 1:]
            with np.errstate(all="ignore"):
                err = float(np.sqrt(np.mean(((traj - truth) / scale) ** 2)))
            return err if np.isfinite(err) else np.inf

        errors = np.array([rollout_error(c) for c in model.ensemble])
        ref_err = np.inf if ref_coef is None else rollout_error(ref_coef)
        finite = errors[np.isfinite(errors)]
        if np.isfinite(ref_err) and (len(finite) == 0 or ref_err * self.member_error_factor < np.min(finite)):
            log.info("dynamics: every ensemble member is over %.0fx worse than the full-library fit over %d steps "
                     "(%.3g vs %.3g); using the full-library fit", self.member_error_factor, T,
                     np.min(finite) if len(finite) else np.inf, ref_err)
            return np.asarray(ref_coef)[None], errors
        if len(finite) == 0:
            # keep going: the surrogate cuts episodes at the domain's edge, and more data usually fixes it
            log.warning("dynamics: every ensemble member diverges within %d steps on held-out data (%d transitions);"
                        " keeping all members. Try more data, a lower library degree or a larger threshold.",
                        T, len(buffer))
            return model.ensemble, errors
        # relative test against the geometric mean of the best and the median member: when library ensembling
        # drops a needed term from half the members, the median is one of the bad ones and would keep them all
        # (their compensating coefficients then bias the aggregate); with a floor, so near-perfect members are
        # never dropped for being 5x of ~0
        typical = float(np.sqrt(np.min(finite) * np.median(finite)))
        keep = errors <= max(self.member_error_factor * typical, 1e-3)
        if keep.sum() < model.n_models:
            log.info("dynamics: dropped %d of %d ensemble members whose %d-step rollouts diverged (errors %s)",
                     int((~keep).sum()), model.n_models, T, np.round(errors[~keep], 3).tolist())
        return model.ensemble[keep], errors

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
        """One readable line per state, e.g. ``"x0' = 0.9 x0 + 0.1 x1"``."""
        self._check_fitted()
        return self.model_.equations(precision, lhs=[f"{n}'" for n in self.obs_names])

    @property
    def sparse_model(self) -> SparseModel:
        """The fitted E-SINDy model (aggregate coefficients and the members kept)."""
        self._check_fitted()
        return self.model_
