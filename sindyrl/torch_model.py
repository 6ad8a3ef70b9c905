"""A differentiable torch twin of :meth:`SparseModel.evaluate`, for gradients through learned models.

:class:`TorchSparseModel` builds the same term features from the same factors with torch ops, applies the
same unit-pair renormalisation and (for policies) the output clip, in the same order as every other backend
(see :mod:`sindyrl.sparse`). It is differentiable in its inputs and, when asked, in its coefficients: the
analytic policy gradient of :mod:`sindyrl.policy_gradient` backpropagates a surrogate return through the
dynamics, the reward and the policy, all three of them twins of SparseModels.

The result of any optimisation is written back into a :class:`SparseModel` (:meth:`TorchSparseModel.to_model`),
so numpy, CasADi, ONNX and C keep being the backends that deploy it; torch is only used while learning.

The clip has three gradients: ``"hard"`` is exactly ``torch.clamp`` (no gradient where an output is
saturated), ``"straight_through"`` passes the gradient through a saturated output as if it were not clipped
(a saturated policy still learns which way to move), and ``"none"`` does not clip. The forward value is the
same clipped one in the first two.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .sparse import UNIT_EPS, SparseModel

__all__ = ["TorchSparseModel", "torch_features", "clip_outputs", "relative_scale", "CLIP_MODES"]

CLIP_MODES = ("hard", "straight_through", "none")


def torch_features(model: SparseModel, X: torch.Tensor, terms: Sequence[int] | None = None) -> torch.Tensor:
    """Library matrix ``theta(X)`` of ``model`` in torch, (N, n_terms) (or only ``terms``); as ``model.features``."""
    idx = range(model.n_terms) if terms is None else terms
    cache: dict = {}
    cols = []
    for k in idx:
        v = torch.ones_like(X[:, 0])
        for f in model.terms[k]:
            if f not in cache:
                i, kind, p = f
                if kind == "pow":
                    cache[f] = X[:, i] ** int(p)
                elif kind == "sin":
                    cache[f] = torch.sin(p * X[:, i])
                else:
                    cache[f] = torch.cos(p * X[:, i])
            v = v * cache[f]
        cols.append(v)
    if not cols:
        return X.new_zeros((X.shape[0], 0))
    return torch.stack(cols, dim=1)


def relative_scale(model: SparseModel, X: np.ndarray) -> np.ndarray:
    """(n_outputs, n_terms): the RMS of each feature on ``X`` over its output's scale, for ``TorchSparseModel``'s
    ``scale``: a weight ``coef * scale`` is then the term's relative contribution to its output.

    An output's scale is the RMS of the model's values on ``X``; where the model is (nearly) zero there, the
    half-width of its ``output_bounds`` (1 where they are infinite), so a zero policy can still be optimised.
    """
    X = np.asarray(X, dtype=np.float64)
    out_rms = np.sqrt(np.mean(model.evaluate(X) ** 2, axis=0))
    if model.output_bounds is not None:
        low, high = (np.asarray(b, dtype=np.float64) for b in model.output_bounds)
        half = np.where(np.isfinite(high - low), 0.5 * (high - low), 1.0)
        out_rms = np.where(out_rms > 1e-3 * half, out_rms, half)
    feature_rms = np.sqrt(np.mean(model.features(X) ** 2, axis=0))
    return feature_rms[None, :] / np.maximum(out_rms, 1e-12)[:, None]


class _StraightThroughClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, low, high):
        return torch.maximum(torch.minimum(y, high), low)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def clip_outputs(Y: torch.Tensor, low: torch.Tensor, high: torch.Tensor, mode: str = "hard") -> torch.Tensor:
    """Clip ``Y`` to ``[low, high]`` with the gradient ``mode`` says (one of :data:`CLIP_MODES`)."""
    if mode == "hard":
        return torch.maximum(torch.minimum(Y, high), low)
    if mode == "straight_through":
        return _StraightThroughClamp.apply(Y, low, high)
    if mode == "none":
        return Y
    raise ValueError(f"clip mode must be one of {CLIP_MODES}, got {mode!r}")


class TorchSparseModel(torch.nn.Module):
    """``model.evaluate`` in torch, on the model's active terms (or all its terms, for coefficients that move).

    Parameters
    ----------
    model : SparseModel
        The model to mirror.
    trainable : bool, default False
        Make the coefficients a parameter. Only the entries of the support move (:meth:`set_support`
        narrows it).
    support : bool array (n_outputs, n_terms), optional
        Entries that may be nonzero (default: those nonzero in the coefficients); e.g. all of them to
        optimise a policy from zero.
    clip : {"hard", "straight_through", "none"}, default "hard"
        Gradient of the output clip when the model has ``output_bounds`` (the forward value is the clipped
        one unless ``"none"``).
    coef : array (n_outputs, n_terms) or (n_models, n_outputs, n_terms), optional
        Coefficients to use instead of ``model.coef``; with three dimensions, ``forward(X, members=...)``
        evaluates row i with member ``members[i]`` (the surrogate's ``sample`` mode).
    scale : array (n_terms,) or (n_outputs, n_terms), optional
        Each coefficient is stored as ``coef * scale`` (e.g. the RMS of its feature on the states it is used
        on over its output's scale), so one optimiser step moves every term's contribution by a similar
        relative amount, and ``|weight|`` is each coefficient's relative contribution.
    dtype : torch dtype, default float64
    """

    def __init__(self, model: SparseModel, trainable: bool = False, clip: str = "hard",
                 coef: np.ndarray | None = None, scale: np.ndarray | None = None,
                 support: np.ndarray | None = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        if clip not in CLIP_MODES:
            raise ValueError(f"clip mode must be one of {CLIP_MODES}, got {clip!r}")
        self.model = model
        self.clip = clip
        self.dtype = dtype
        C = np.asarray(model.coef if coef is None else coef, dtype=np.float64)
        if C.shape[-2:] != model.coef.shape:
            raise ValueError(f"{model.name}: coefficients of shape {C.shape}, expected (..., {model.coef.shape})")
        mask = C != 0 if C.ndim == 2 else np.any(C != 0, axis=0)
        if support is not None:
            support = np.asarray(support, dtype=bool)
            if support.shape != model.coef.shape:
                raise ValueError(f"{model.name}: support of shape {support.shape}, expected {model.coef.shape}")
            mask = support
        self.active = np.flatnonzero(np.any(mask, axis=0))
        s = np.ones(model.coef.shape) if scale is None else np.broadcast_to(
            np.maximum(np.asarray(scale, dtype=np.float64), 1e-12), model.coef.shape)
        s = s[:, self.active]
        self.register_buffer("_scale", torch.as_tensor(s, dtype=dtype))
        self.register_buffer("_mask", torch.as_tensor(mask[:, self.active], dtype=dtype))
        w = torch.as_tensor(C[..., self.active] * s, dtype=dtype)
        if trainable:
            if C.ndim != 2:
                raise ValueError("a trainable TorchSparseModel needs one coefficient matrix, not an ensemble")
            self.weight = torch.nn.Parameter(w.clone())
        else:
            self.register_buffer("weight", w)
        if model.output_bounds is not None:
            self.register_buffer("_low", torch.tensor(np.array(model.output_bounds[0]), dtype=dtype))
            self.register_buffer("_high", torch.tensor(np.array(model.output_bounds[1]), dtype=dtype))
        else:
            self._low = self._high = None

    # ---------------------------------------------------------------- coefficients
    def coefficients(self) -> torch.Tensor:
        """The coefficients over the active terms, (n_outputs, n_active) (or members × ...), support applied."""
        w = self.weight * self._mask if self.weight.dim() == 2 else self.weight
        return w / self._scale

    def set_support(self, mask: np.ndarray) -> None:
        """Keep only the entries where ``mask`` (n_outputs, n_terms of the model) is true; the others become 0."""
        m = torch.as_tensor(np.asarray(mask, dtype=bool)[:, self.active], dtype=self.dtype)
        self._mask.copy_(self._mask * m)
        with torch.no_grad():
            if self.weight.dim() == 2:
                self.weight.mul_(self._mask)

    def coef_numpy(self) -> np.ndarray:
        """The current coefficients as a full (n_outputs, n_terms) numpy array (zeros outside the support)."""
        C = np.zeros(self.model.coef.shape)
        C[:, self.active] = self.coefficients().detach().cpu().numpy()
        return C

    def to_model(self, **changes) -> SparseModel:
        """The model with the current coefficients (same terms, bounds, pairs; ensemble dropped if it moved)."""
        C = self.coef_numpy()
        ens = self.model.ensemble
        if ens is not None and not np.array_equal(C, self.model.coef):
            changes.setdefault("ensemble", None)
        return self.model.with_coef(C, **changes)

    # --------------------------------------------------------------------- forward
    def forward(self, X: torch.Tensor, members: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """(N, n_inputs) -> (N, n_outputs), as ``SparseModel.evaluate`` (renormalised, then clipped)."""
        if X.dim() != 2 or X.shape[1] != self.model.n_inputs:
            raise ValueError(f"{self.model.name}: input has shape {tuple(X.shape)}, expected "
                             f"(N, {self.model.n_inputs}) with columns {self.model.inputs}")
        F = torch_features(self.model, X.to(self.dtype), self.active)
        C = self.coefficients()
        if C.dim() == 3:
            if members is None:
                raise ValueError(f"{self.model.name}: an ensemble twin needs members= (one per row)")
            idx = torch.as_tensor(np.asarray(members), dtype=torch.long)
            Y = torch.einsum("nt,not->no", F, C[idx])
        else:
            Y = F @ C.T
        if self.model.unit_pairs:
            cols = list(Y.unbind(dim=1))
            for c, s in self.model.unit_pairs:
                r = torch.clamp(torch.sqrt(cols[c] ** 2 + cols[s] ** 2), min=UNIT_EPS)
                cols[c], cols[s] = cols[c] / r, cols[s] / r
            Y = torch.stack(cols, dim=1)
        if self._low is not None:
            Y = clip_outputs(Y, self._low, self._high, self.clip)
        return Y
