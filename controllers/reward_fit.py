"""A sparse reward model fitted to a known numpy reward, so that MPC can optimise it as its cost.

A ``"module:function"`` reward is plain numpy: CasADi cannot differentiate it. The
reward's values on the run's stored real transitions are exact targets, so a
:class:`sindyrl.reward.SINDyReward` ``r(x[k], u[k])`` is fitted to them on some
episodes and checked against the function on the others. The model is used as
the MPC cost only when it is accurate there (:data:`MAX_HELDOUT_ERROR`); a reward
that depends on the next state is fitted as a function of the state and action
that lead to it, as the MPC evaluates it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sindyrl.config import LibraryConfig
from sindyrl.data import TransitionBuffer
from sindyrl.sparse import SparseModel

__all__ = ["RewardFit", "fit_known_reward", "data_digest", "MAX_HELDOUT_ERROR", "HOLDOUT"]

#: accuracy rule: the held-out RMSE over the standard deviation of the reward on all the data
MAX_HELDOUT_ERROR = 0.1
#: share of the episodes held out (the last 20 % of the transitions when there is one episode)
HOLDOUT = 0.2


@dataclass
class RewardFit:
    """A reward model fitted to a known reward and its check on held-out data."""

    model: SparseModel
    #: RMSE on the held-out transitions / std of the reward on all transitions
    heldout_error: float
    max_error: float
    n_train: int
    n_heldout: int

    @property
    def accurate(self) -> bool:
        return bool(self.heldout_error <= self.max_error)

    def describe(self) -> str:
        verdict = "accurate" if self.accurate else "not accurate"
        return (f"sparse reward model ({self.model.nnz} terms) fitted to the known reward: normalised held-out "
                f"RMSE {self.heldout_error:.3g} on {self.n_heldout} transitions ({verdict}: rule <= {self.max_error:g})")


def data_digest(buffer: TransitionBuffer) -> str:
    """A short hash of the stored transitions, to tell whether a saved fit belongs to the same data."""
    h = hashlib.sha256()
    for a in (buffer.obs, buffer.actions, buffer.next_obs, buffer.episode):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _holdout_mask(buffer: TransitionBuffer, holdout: float, seed: int) -> np.ndarray:
    if buffer.n_episodes > 1:
        return buffer.split_episodes(holdout, seed)[1]
    mask = np.zeros(len(buffer), dtype=bool)
    mask[int(np.ceil(len(buffer) * (1.0 - holdout))):] = True
    return mask


def fit_known_reward(
    reward: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    buffer: TransitionBuffer,
    obs_names: Sequence[str],
    action_names: Sequence[str],
    library: LibraryConfig | None = None,
    threshold: float = 1e-3,
    alpha: float = 1e-5,
    n_models: int = 1,
    seed: int = 0,
    holdout: float = HOLDOUT,
    max_error: float = MAX_HELDOUT_ERROR,
) -> RewardFit:
    """Fit a sparse reward ``r(x, u)`` to ``reward(obs, action, next_obs)`` on ``buffer``; check it on held-out data.

    Parameters
    ----------
    reward : callable
        Batched numpy reward ``(obs, action, next_obs) -> (N,)``.
    buffer : TransitionBuffer
        Real transitions (at least 10); the targets are ``reward`` on them, not the stored rewards.
    obs_names, action_names : list of str
        The model's input names.
    library : LibraryConfig, optional
        Candidate terms (default: polynomials of degree 2 over states and actions).
    threshold, alpha, n_models, seed
        :class:`sindyrl.reward.SINDyReward` options; the targets are exact, so one STLSQ fit
        (``n_models=1``) is the default: bagging is for noisy targets.
    holdout : float, default 0.2
        Share of the episodes held out from the fit and used for the check.
    max_error : float, default 0.1
        Largest normalised held-out RMSE for the model to count as accurate.

    Returns
    -------
    RewardFit
        The model carries ``heldout_error``, ``max_error``, ``accurate`` and ``data_digest`` in its metadata.
    """
    from sindyrl.reward import SINDyReward

    if len(buffer) < 10:
        raise ValueError(f"reward fit: need at least 10 real transitions, the run has {len(buffer)}")
    target = np.asarray(reward(buffer.obs, buffer.actions, buffer.next_obs), dtype=np.float64).reshape(-1)
    if target.shape != (len(buffer),):
        raise ValueError(f"reward fit: the known reward returned shape {target.shape} for {len(buffer)} transitions")
    if not np.all(np.isfinite(target)):
        raise ValueError("reward fit: the known reward is NaN or inf on some stored transitions")
    data = TransitionBuffer(buffer.n_obs, buffer.n_act)
    data.add(buffer.obs, buffer.actions, target, buffer.next_obs, buffer.terminated, buffer.truncated,
             buffer.episode)
    val = _holdout_mask(data, holdout, seed)
    fit = SINDyReward(obs_names, action_names, library, threshold, alpha, n_models, seed=seed).fit(data, val)
    pred = fit(data.obs[val], data.actions[val])
    scale = float(target.std())
    rmse = float(np.sqrt(np.mean((pred - target[val]) ** 2)))
    # a constant reward is fitted exactly by the bias term, or not at all
    err = rmse / scale if scale > 1e-12 else (0.0 if rmse <= 1e-9 else float("inf"))
    model = dataclasses.replace(fit.model_, name="reward_fit").with_metadata(
        reward_error=err, heldout_error=err, max_error=float(max_error), accurate=bool(err <= max_error),
        data_digest=data_digest(buffer), n_train=int((~val).sum()), n_heldout=int(val.sum()),
    )
    return RewardFit(model, err, float(max_error), int((~val).sum()), int(val.sum()))
