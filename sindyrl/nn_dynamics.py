"""Neural-network ensemble dynamics: the "Dyna-NN" baseline of SINDy-RL (Zolman et al. 2024).

An ensemble of small MLPs (5 networks of 64x64 by default) predicts the state
increment x[k+1] - x[k] from (x[k], u[k]); the surrogate steps the mean (or
median) of the members. It follows :class:`sindyrl.dynamics.DynamicsModel`, as
:class:`sindyrl.dynamics.SINDyDynamics` does (with no sparse model and no
equations), and has the ensemble access of the surrogate's batched
``DynamicsPredictor``, so the Dyna loop runs on it unchanged
(``dynamics.model: nn``, options under ``dynamics.nn``).

All members are trained at once as one batched network (stacked weight
tensors), which is several times faster on a CPU than five separate models.
After fitting, prediction runs in plain numpy: the surrogate calls it with
small batches at every step, where torch's per-call overhead would dominate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from .data import TransitionBuffer
from .dynamics import prediction_errors, rollout
from .sparse import UNIT_EPS

__all__ = ["NNEnsembleDynamics", "NN_DEFAULTS"]

log = logging.getLogger("sindyrl")

#: options of ``dynamics.nn`` and their defaults
NN_DEFAULTS: dict = {
    "n_models": 5,
    "hidden": [64, 64],
    "activation": "silu",
    "epochs": 300,
    "lr": 1e-3,
    "batch_size": 256,
    "weight_decay": 1e-5,
    "patience": 20,
    "bootstrap": True,
    "aggregate": "mean",
}

_ACTIVATIONS = ("silu", "relu", "tanh")


def _act_np(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    with np.errstate(over="ignore"):
        return z / (1.0 + np.exp(-z))


class NNEnsembleDynamics:
    """Ensemble of MLPs predicting the state increment; the paper's Dyna-NN baseline.

    Parameters
    ----------
    obs_names, action_names : list of str
        Names of the state and control inputs.
    n_models : int, default 5
        Ensemble members (independently initialised; bootstrap resampled when ``bootstrap``).
    hidden : list of int, default [64, 64]
        Hidden layer widths.
    activation : {"silu", "relu", "tanh"}, default "silu"
    epochs : int, default 300
        Maximum passes over the training data.
    lr : float, default 1e-3
        Adam learning rate.
    batch_size : int, default 256
    weight_decay : float, default 1e-5
        Adam (L2) weight decay.
    patience : int, default 20
        Early stopping: epochs without improvement of a member's held-out loss
        before training stops; each member keeps its best weights.
    bootstrap : bool, default True
        Train each member on a bootstrap resample of the training transitions.
    aggregate : {"mean", "median"}, default "mean"
        How member predictions are combined when no mode is given (the paper: mean).
    unit_pairs : list of (int, int)
        State index pairs (cos, sin) renormalised onto the unit circle after every prediction.
    rollout_steps : int, default 20
        Length of the open-loop rollouts of the rollout error.
    seed : int
        Seed of initialisation, resampling and batch order.
    """

    def __init__(
        self,
        obs_names: Sequence[str],
        action_names: Sequence[str],
        n_models: int = 5,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        epochs: int = 300,
        lr: float = 1e-3,
        batch_size: int = 256,
        weight_decay: float = 1e-5,
        patience: int = 20,
        bootstrap: bool = True,
        aggregate: str = "mean",
        unit_pairs: Sequence[tuple[int, int]] = (),
        rollout_steps: int = 20,
        seed: int = 0,
    ):
        self.obs_names = list(obs_names)
        self.action_names = list(action_names)
        self.n_models = n_models
        self.hidden = list(hidden)
        self.activation = activation
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.patience = patience
        self.bootstrap = bootstrap
        self.aggregate = aggregate
        self.unit_pairs = [tuple(p) for p in unit_pairs]
        self.rollout_steps = rollout_steps
        self.seed = seed

    @classmethod
    def from_config(cls, cfg, obs_names, action_names, unit_pairs, seed: int) -> NNEnsembleDynamics:
        """Build from a ``DynamicsConfig`` (options in ``cfg.nn``; ``cfg.rollout_steps`` as for E-SINDy)."""
        opts = dict(cfg.nn or {})
        unknown = sorted(set(opts) - set(NN_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown key dynamics.nn.{unknown[0]} (known keys: {', '.join(sorted(NN_DEFAULTS))})")
        merged = {**NN_DEFAULTS, **opts}
        return cls(obs_names, action_names, unit_pairs=unit_pairs, rollout_steps=cfg.rollout_steps, seed=seed,
                   **merged)

    # ------------------------------------------------------------ checks
    def _check_params(self) -> None:
        def bad(key, msg):
            raise ValueError(f"dynamics.nn.{key}: {msg}")

        if not isinstance(self.n_models, int) or self.n_models < 1:
            bad("n_models", f"must be an integer >= 1, got {self.n_models!r}")
        if not self.hidden or not all(isinstance(h, int) and h >= 1 for h in self.hidden):
            bad("hidden", f"must be a non-empty list of positive integers, got {self.hidden!r}")
        if self.activation not in _ACTIVATIONS:
            bad("activation", f"{self.activation!r} is not one of {list(_ACTIVATIONS)}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            bad("epochs", f"must be an integer >= 1, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            bad("batch_size", f"must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.patience, int) or self.patience < 1:
            bad("patience", f"must be an integer >= 1, got {self.patience!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            bad("lr", f"must be a number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            bad("weight_decay", f"must be a number >= 0, got {self.weight_decay!r}")
        if self.aggregate not in ("mean", "median"):
            bad("aggregate", f"{self.aggregate!r} is not one of ['mean', 'median']")

    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_"):
            raise RuntimeError("NNEnsembleDynamics is not fitted yet: call fit() first")

    # ---------------------------------------------------------------- fit
    def fit(self, buffer: TransitionBuffer, val_mask: np.ndarray | None = None) -> NNEnsembleDynamics:
        """Train on the transitions of ``buffer`` not in ``val_mask``; early-stop on the rest.

        Without a validation mask a random tenth of the training transitions is held out for early stopping.
        """
        import torch

        self._check_params()
        if len(buffer) < 2:
            raise ValueError(f"dynamics fit: need at least 2 transitions, got {len(buffer)}")
        if (buffer.n_obs, buffer.n_act) != (len(self.obs_names), len(self.action_names)):
            raise ValueError(
                f"dynamics fit: data has {buffer.n_obs} observations and {buffer.n_act} actions, "
                f"model expects {len(self.obs_names)} and {len(self.action_names)}"
            )
        for what, arr in (("observations", buffer.obs), ("actions", buffer.actions), ("next observations",
                                                                                     buffer.next_obs)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"dynamics fit: {what} contain NaN or inf")
        rng = np.random.default_rng(self.seed)
        n = len(buffer)
        val_mask = np.zeros(n, dtype=bool) if val_mask is None else np.asarray(val_mask, dtype=bool)
        if val_mask.shape != (n,):
            raise ValueError(f"dynamics fit: val_mask has shape {val_mask.shape}, expected ({n},)")
        train_idx = np.flatnonzero(~val_mask)
        stop_idx = np.flatnonzero(val_mask)
        if len(train_idx) < 2:
            raise ValueError("dynamics fit: no training transitions left after the hold-out split")
        if len(stop_idx) == 0:
            perm = rng.permutation(train_idx)
            n_stop = max(1, len(perm) // 10) if len(perm) > 10 else 0
            stop_idx, train_idx = perm[:n_stop], perm[n_stop:]
            if n_stop == 0:
                stop_idx = train_idx

        X = np.concatenate([buffer.obs, buffer.actions], axis=1)
        D = buffer.next_obs - buffer.obs
        # standardise inputs and targets on the training part: states of very different scales
        # (angles vs velocities) would otherwise dominate the squared loss
        self.x_mean_ = X[train_idx].mean(0)
        self.x_std_ = np.maximum(X[train_idx].std(0), 1e-6)
        self.y_mean_ = D[train_idx].mean(0)
        self.y_std_ = np.maximum(D[train_idx].std(0), 1e-6)
        Xn = torch.as_tensor((X - self.x_mean_) / self.x_std_, dtype=torch.float32)
        Yn = torch.as_tensor((D - self.y_mean_) / self.y_std_, dtype=torch.float32)

        M, n_in, n_out = self.n_models, X.shape[1], D.shape[1]
        gen = torch.Generator().manual_seed(int(self.seed) % (2**63))
        sizes = [n_in, *self.hidden, n_out]
        params = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            # the default init of torch.nn.Linear (uniform, bound 1/sqrt(fan_in)), drawn from our generator
            bound = 1.0 / math.sqrt(a)
            W = (torch.rand(M, a, b, generator=gen) * 2 - 1) * bound
            bias = (torch.rand(M, 1, b, generator=gen) * 2 - 1) * bound
            params += [W.requires_grad_(), bias.requires_grad_()]
        act = {"silu": torch.nn.functional.silu, "relu": torch.relu, "tanh": torch.tanh}[self.activation]

        def forward(x: torch.Tensor) -> torch.Tensor:  # x: (M, B, n_in)
            h = x
            for k in range(0, len(params), 2):
                h = torch.baddbmm(params[k + 1], h, params[k])
                if k + 2 < len(params):
                    h = act(h)
            return h

        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        n_tr = len(train_idx)
        # each member sees its own bootstrap resample (or the training set itself), reshuffled every epoch
        member_rows = np.stack([rng.choice(train_idx, n_tr, replace=True) if self.bootstrap else train_idx
                                for _ in range(M)])
        Xs, Ys = Xn[stop_idx], Yn[stop_idx]
        best = torch.full((M,), float("inf"))
        best_params = [p.detach().clone() for p in params]
        since = 0
        bs = min(self.batch_size, n_tr)
        epochs_run = 0
        for _epoch in range(self.epochs):
            epochs_run += 1
            order = np.stack([rng.permutation(n_tr) for _ in range(M)])
            rows = np.take_along_axis(member_rows, order, axis=1)
            for start in range(0, n_tr, bs):
                idx = torch.as_tensor(rows[:, start:start + bs])
                pred = forward(Xn[idx])
                # sum over members: each member's gradient is its own mean loss
                loss = ((pred - Yn[idx]) ** 2).mean(dim=(1, 2)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                val = ((forward(Xs.expand(M, -1, -1)) - Ys) ** 2).mean(dim=(1, 2))
            # a relative margin, so that noise-level improvements do not keep training alive forever
            better = torch.isinf(best) | (val < best * (1 - 1e-4))
            if bool(better.any()):
                best = torch.where(better, val, best)
                for bp, p in zip(best_params, params):
                    bp[better] = p.detach()[better]
                since = 0
            else:
                since += 1
                if since >= self.patience:
                    break
        # keep float64 numpy copies: prediction is numpy-only
        self.weights_ = [p.numpy().astype(np.float64) for p in best_params]
        self.epochs_run_ = epochs_run
        self.member_val_loss_ = best.numpy().astype(np.float64)
        mask = val_mask if val_mask.any() else ~val_mask
        self.scores_ = self.score(buffer, mask)
        log.info("nn dynamics: %d members, %d epochs, held-out loss (standardised) %s", M, epochs_run,
                 np.round(self.member_val_loss_, 4).tolist())
        return self

    # ----------------------------------------------------------- predict
    def _finish(self, Y: np.ndarray) -> np.ndarray:
        for c, s in self.unit_pairs:
            r = np.maximum(np.sqrt(Y[..., c] ** 2 + Y[..., s] ** 2), UNIT_EPS)
            Y[..., c] = Y[..., c] / r
            Y[..., s] = Y[..., s] / r
        return Y

    def _members(self, obs: np.ndarray, actions: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """Raw next states of members ``which`` (default all) on the same batch: (len(which), N, n_obs)."""
        self._check_fitted()
        obs = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        actions = np.atleast_2d(np.asarray(actions, dtype=np.float64))
        if obs.shape[1] != len(self.obs_names) or actions.shape[1] != len(self.action_names) \
                or obs.shape[0] != actions.shape[0]:
            raise ValueError(f"dynamics predict: got obs {obs.shape} and actions {actions.shape}, expected "
                             f"(N, {len(self.obs_names)}) and (N, {len(self.action_names)})")
        h = (np.concatenate([obs, actions], axis=1) - self.x_mean_) / self.x_std_
        W = self.weights_
        sel = slice(None) if which is None else which
        h = np.broadcast_to(h, (self.n_models if which is None else len(which), *h.shape))
        for k in range(0, len(W), 2):
            h = h @ W[k][sel] + W[k + 1][sel]
            if k + 2 < len(W):
                h = _act_np(self.activation, h)
        return obs + h * self.y_std_ + self.y_mean_

    def predict(self, obs: np.ndarray, actions: np.ndarray, mode: str | None = None) -> np.ndarray:
        """(N, n_obs), (N, n_act) -> (N, n_obs) with the members' ``mean`` or ``median`` (default: ``aggregate``)."""
        mode = mode or self.aggregate
        if mode not in ("mean", "median"):
            raise ValueError(f"dynamics predict: mode must be mean or median, got {mode!r}")
        Y = self._members(obs, actions)
        return self._finish(Y.mean(0) if mode == "mean" else np.median(Y, axis=0))

    def predict_members(self, obs: np.ndarray, actions: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Row i predicted by member ``members[i]``."""
        members = np.asarray(members, dtype=np.int64)
        obs = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        actions = np.atleast_2d(np.asarray(actions, dtype=np.float64))
        if members.shape != (obs.shape[0],) or members.min(initial=0) < 0 or members.max(initial=0) >= self.n_models:
            raise ValueError(f"dynamics predict_members: members must be {obs.shape[0]} indices in "
                             f"[0, {self.n_models}), got {members}")
        out = np.empty((obs.shape[0], len(self.obs_names)))
        for m in np.unique(members):
            rows = members == m
            out[rows] = self._members(obs[rows], actions[rows], np.array([m]))[0]
        return self._finish(out)

    def predict_ensemble(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """All members: (n_models, N, n_obs)."""
        return self._finish(self._members(obs, actions).copy())

    def rollout(self, x0: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Open-loop rollout of the aggregate: x0 (B, n_obs), actions (B, T, n_act) -> (B, T + 1, n_obs)."""
        self._check_fitted()
        return rollout(self, x0, actions)

    def score(self, buffer: TransitionBuffer, mask: np.ndarray | None = None) -> dict[str, float]:
        """One-step and k-step rollout error (RMS, in units of each state's std), as ``SINDyDynamics.score``."""
        self._check_fitted()
        return prediction_errors(self, buffer, mask, self.rollout_steps, self.seed)

    def equations(self, precision: int = 3) -> list[str]:
        """A neural network has no readable equations: always empty."""
        return []

    @property
    def sparse_model(self) -> None:
        """A neural network has no sparse form: always None."""
        return None

    @property
    def n_params(self) -> int:
        """Trainable parameters of the whole ensemble."""
        self._check_fitted()
        return int(sum(w.size for w in self.weights_))
