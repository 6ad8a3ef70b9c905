"""RL with a sparse actor: PPO fine-tunes a policy that is linear in its library's features, in the surrogate.

Imitation (:func:`sindyrl.policy.distill`) gives a sparse polynomial policy close to the network in action
space; where the polynomial cannot follow the network (a swing-up's energy pumping and its catch), a small
action error can cost most of the return. :func:`finetune_sparse_actor` improves the sparse policy's *own*
return, model-free in the cheap surrogate, so it also works where the reward or the model has no gradient:

- the actor is the policy's :class:`~sindyrl.sparse.SparseModel` itself (its torch twin,
  :class:`~sindyrl.torch_model.TorchSparseModel`): the PPO mean action is ``coef @ theta(obs)``, the exploration
  a state-independent Gaussian; the critic is an MLP of its own;
- it starts from the imitation coefficients on the whole library (terms the imitation dropped may come back),
  each weight stored in units of its relative contribution (coefficient x RMS of its feature over the RMS of
  the action), so one learning rate suits every term;
- the critic is warmed up first with the actor frozen (it learns the value of the sparse policy, not of a
  random one), then actor and critic train together in ``rounds``; between rounds the weakest terms are
  dropped, STLSQ-style: those below ``threshold`` relative contribution, and beyond the ``max_terms``
  strongest;
- every round's policy within the size budget is a candidate; the caller chooses (by the surrogate return
  from stored real states, as the distillation passes are chosen). No real step is taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .sparse import SparseModel
from .torch_model import TorchSparseModel, relative_scale

__all__ = ["SparseActorResult", "finetune_sparse_actor"]


@dataclass
class SparseActorResult:
    """Candidates (SparseModels within the size budget, one per round) and what each round did."""

    candidates: list[SparseModel]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _policy_class(sparse_actor: TorchSparseModel):
    from stable_baselines3.common.policies import ActorCriticPolicy

    class SparseActorPolicy(ActorCriticPolicy):
        """SB3's actor-critic with the action mean replaced by a trainable sparse model of the observation."""

        def _build(self, lr_schedule) -> None:
            super()._build(lr_schedule)
            self.action_net = sparse_actor  # latent_pi is the observation itself (net_arch pi=[])
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    return SparseActorPolicy


def _teacher_ppo_settings(teacher) -> dict:
    keys = ("n_steps", "batch_size", "gamma", "gae_lambda", "n_epochs", "clip_range", "ent_coef", "vf_coef",
            "max_grad_norm")
    from stable_baselines3 import PPO

    if isinstance(teacher, PPO):
        out = {k: getattr(teacher, k) for k in keys}
        out["clip_range"] = float(teacher.clip_range(1.0)) if callable(teacher.clip_range) else teacher.clip_range
        return out
    return {"gamma": float(getattr(teacher, "gamma", 0.99))}


def finetune_sparse_actor(
    model: SparseModel,
    make_surrogate: Callable[[int], object],
    states: np.ndarray,
    teacher=None,
    max_terms: int | None = None,
    timesteps: int = 200_000,
    rounds: int = 4,
    threshold: float = 0.01,
    warmup_fraction: float = 0.2,
    n_envs: int = 16,
    learning_rate: float = 3e-4,
    log_std: float = -1.0,
    seed: int = 0,
    echo: Callable[..., None] = print,
) -> SparseActorResult:
    """PPO on a sparse actor in the surrogate; returns one candidate per round within ``max_terms``.

    Parameters
    ----------
    model : SparseModel
        The imitation policy (its library is the actor's; its coefficients the start).
    make_surrogate : callable
        ``make_surrogate(n_envs)`` -> the run's surrogate VecEnv.
    states : array (N, n_obs)
        States the policy acts on (for the weights' scale), e.g. the distillation's labelled states.
    teacher : SB3 model, optional
        A PPO teacher lends its hyperparameters (n_steps, batch size, gamma...) and its critic's architecture.
    max_terms : int, optional
        Size budget of a candidate (nonzero coefficients).
    timesteps : int
        Surrogate steps in all (critic warm-up included).
    rounds : int
        Training rounds after the warm-up, with a thresholding step between them.
    threshold : float
        Drop terms below this relative contribution between rounds.
    log_std : float
        Initial log standard deviation of the exploration noise, in units of the policy's action RMS on
        ``states`` (at least 5% of half the action range, at most half of it).
    """
    from stable_baselines3 import PPO

    from .runs import quiet_logger

    if model.output_bounds is None:
        raise ValueError("finetune_sparse_actor: the policy needs output_bounds (the action range)")
    if rounds < 1 or timesteps < 1:
        raise ValueError(f"finetune_sparse_actor: need rounds >= 1 and timesteps >= 1, got {rounds}, {timesteps}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    scale = relative_scale(model, states)
    full = np.ones(model.coef.shape, dtype=bool)
    actor = TorchSparseModel(model.with_coef(model.coef, output_bounds=None), trainable=True, clip="none",
                             scale=scale, support=full, dtype=torch.float32)
    venv = make_surrogate(n_envs)
    settings = _teacher_ppo_settings(teacher)
    # the teacher's rollout length, but short enough that the warm-up and every round get a few updates
    warm = int(warmup_fraction * timesteps)
    per_call = min(v for v in (warm, (timesteps - warm) // rounds) if v > 0)
    n_steps = 8 * max(1, min(int(settings.pop("n_steps", 256)), per_call // (4 * n_envs)) // 8)
    # minibatches near the teacher's size that split the rollout evenly (n_steps * n_envs is a multiple of 8)
    total = n_steps * n_envs
    k = 2 ** int(np.clip(np.round(np.log2(total / int(settings.pop("batch_size", 512)))), 0, 3))
    batch = total // k
    vf_arch = [64, 64]
    act_fn = torch.nn.Tanh
    if isinstance(teacher, PPO) and hasattr(teacher.policy, "net_arch"):
        na = teacher.policy.net_arch
        vf_arch = list(na.get("vf", vf_arch)) if isinstance(na, dict) else list(na)
        act_fn = teacher.policy.activation_fn
    # exploration on the scale of the policy's own actions (an action range can be far wider than its use)
    half = 0.5 * (np.asarray(model.output_bounds[1]) - np.asarray(model.output_bounds[0]))
    used = np.sqrt(np.mean(model.evaluate(np.asarray(states, dtype=np.float64)) ** 2, axis=0))
    act_scale = np.minimum(half, np.maximum(used, 0.05 * half))
    agent = PPO(
        _policy_class(actor), venv, n_steps=n_steps, batch_size=batch, learning_rate=learning_rate, seed=seed,
        device="cpu", verbose=0,
        policy_kwargs={"net_arch": {"pi": [], "vf": vf_arch}, "activation_fn": act_fn,
                       "log_std_init": float(log_std + np.log(float(np.mean(act_scale)))), "ortho_init": True},
        **settings,
    )
    quiet_logger(agent)
    pol = agent.policy
    history: list[dict] = []
    candidates: list[SparseModel] = []

    def snapshot() -> SparseModel:
        C = actor.coef_numpy()
        return model.with_coef(C, ensemble=None).with_metadata(refined="ppo")

    # critic warm-up: the actor and its noise frozen (Adam skips parameters without a gradient)
    frozen = [actor.weight, pol.log_std]
    if warm > 0:
        for p in frozen:
            p.requires_grad_(False)
        agent.learn(warm, reset_num_timesteps=True)
        for p in frozen:
            p.requires_grad_(True)
    per_round = max(n_steps * n_envs, (timesteps - warm) // rounds)

    def prune() -> None:
        w = np.abs(actor.weight.detach().numpy()) * actor._mask.numpy()  # relative contributions
        keep = w >= max(threshold, 1e-12)
        if max_terms is not None and keep.sum() > max_terms:
            cut = np.sort(w[keep])[::-1][max_terms - 1]
            keep &= w >= cut
        mask = np.zeros(model.coef.shape, dtype=bool)
        mask[:, actor.active] = keep
        actor.set_support(mask)

    def offer(r: int, what: str) -> None:
        m = snapshot()
        ok = max_terms is None or m.nnz <= max_terms
        history.append({"round": r, "what": what, "timesteps": int(agent.num_timesteps), "nnz": m.nnz,
                        "log_std": float(pol.log_std.detach().mean()), "candidate": ok})
        if ok:
            candidates.append(m)

    # round 1 on the whole library (terms the imitation dropped may come back), then on the pruned support
    for r in range(rounds):
        agent.learn(per_round, reset_num_timesteps=False)
        offer(r + 1, "trained")
        prune()
        echo(f"  [sparse actor round {r + 1}/{rounds}] {agent.num_timesteps} surrogate steps, "
             f"{history[-1]['nnz']} terms, {int(actor._mask.sum())} kept for the next round")
    offer(rounds, "pruned")
    venv.close()
    return SparseActorResult(candidates=candidates, history=history, seconds=time.perf_counter() - t0)
