"""Analytic policy gradients through the sparse surrogate: improve a sparse policy's own return.

Imitation (:func:`sindyrl.policy.distill`) fits the neural policy's actions; where the polynomial cannot
follow the network, a small imitation error can still cost a lot of return. :func:`refine_policy` starts from
the imitation policy and climbs its return in the surrogate directly:

1. roll the sparse policy out for ``horizon`` steps from a batch of stored real states (and states the policy
   itself visits), through the torch twins of the dynamics, the reward and the policy
   (:mod:`sindyrl.torch_model`, :mod:`sindyrl.torch_reward`), and add a bootstrap value at the horizon;
2. ascend that return in the policy's coefficients with Adam (each coefficient scaled by its feature's RMS
   over its output's scale, so one learning rate fits every term);
3. sparsify: drop the coefficients whose relative contribution is below ``threshold`` (STLSQ's hard
   threshold, on each coefficient's own scale) and optimise again on the support; a few rounds.

The surrogate's episode rules are kept: a row ends where the task terminates (no bootstrap) or where the
state leaves the model's domain or becomes non-finite (truncated: bootstrapped at the domain's edge, as SB3
does). Ensemble disagreement cuts are not applied to the gradient rollouts.

The bootstrap value (:func:`agent_value`) is the neural agent's critic: PPO's ``value_net`` (V of the neural
policy), or for SAC/TD3/DDPG/BEER the smallest of the twin ``Q(s, mu(s))`` with ``mu`` the neural actor's
deterministic action (the neural policy's value, as the targets of those algorithms are conservative). It is
the neural policy's value, not the sparse one's: after ``horizon`` steps the sparse policy is asked to reach
states from which the network does well. Without a critic the objective is the plain ``horizon``-step return.

Every candidate is a :class:`SparseModel` on the same terms, so every backend keeps working; the caller
decides which to keep (by its surrogate return on the assessment starts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .sparse import SparseModel
from .torch_model import TorchSparseModel, clip_outputs, relative_scale
from .torch_reward import TorchRewardFn, torch_reward

__all__ = ["RefineResult", "TorchSurrogate", "agent_value", "refine_policy"]

ValueFn = Callable[[torch.Tensor], torch.Tensor]


class TorchSurrogate:
    """The transition of a :class:`~sindyrl.surrogate.SurrogateVecEnv` in torch (its sparse dynamics model).

    ``reward`` is the torch reward (default: :func:`~sindyrl.torch_reward.torch_reward` of the surrogate's,
    fitted on its stored states when it has no torch form).
    """

    def __init__(self, venv, reward: TorchRewardFn | None = None, echo: Callable[..., None] = print):
        from .surrogate import SparseDynamics

        dyn = venv.dynamics
        if not isinstance(dyn, SparseDynamics):
            raise ValueError(f"policy gradients need sparse dynamics (a SparseModel); the surrogate steps a "
                             f"{type(dyn).__name__}")
        model = dyn.model
        self.n_obs = venv.observation_space.shape[0]
        self.mode = venv.ensemble_mode
        if self.mode == "sample" and model.ensemble is not None:
            self.dynamics = TorchSparseModel(model, coef=model.ensemble)
        elif self.mode == "mean" and model.ensemble is not None:
            self.dynamics = TorchSparseModel(model, coef=model.ensemble.mean(axis=0))
        else:
            self.dynamics = TorchSparseModel(model)
        self.n_models = model.n_models if self.mode == "sample" and model.ensemble is not None else 1
        if reward is None:
            S = venv.reset_states
            rng = np.random.default_rng(0)
            A = rng.uniform(venv._act_low, venv._act_high, size=(len(S), len(venv._act_low)))
            nxt = dyn.predict(S, A, "median" if self.mode == "sample" else self.mode)
            names = model.inputs
            reward = torch_reward(venv.reward_fn, names[:self.n_obs], names[self.n_obs:], data=(S, A, nxt), echo=echo)
        self.reward = reward
        self.termination = venv.termination_fn
        t = torch.float64
        self.low, self.high = torch.as_tensor(venv.state_low, dtype=t), torch.as_tensor(venv.state_high, dtype=t)
        self.act_low = torch.as_tensor(venv._act_low, dtype=t)
        self.act_high = torch.as_tensor(venv._act_high, dtype=t)
        self.reset_states = np.asarray(venv.reset_states, dtype=np.float64)
        self.env_horizon = int(venv.horizon)

    def rollout(self, policy: torch.nn.Module, starts: torch.Tensor, horizon: int, gamma: float = 1.0,
                value: ValueFn | None = None, members: np.ndarray | None = None,
                keep_states: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Discounted ``horizon``-step return of ``policy`` from each start, plus ``gamma^t V`` where a row is
        truncated (horizon, domain, non-finite); (N,) and, with ``keep_states``, the states visited."""
        obs = starts
        n = obs.shape[0]
        alive = torch.ones(n, dtype=obs.dtype)
        J = torch.zeros(n, dtype=obs.dtype)
        disc = 1.0
        states = []
        for _ in range(horizon):
            if keep_states:
                states.append(obs.detach()[alive > 0])
            a = clip_outputs(policy(obs), self.act_low, self.act_high, "straight_through")
            nxt = self.dynamics(torch.cat([obs, a], dim=1), members=members)
            bad = ~torch.isfinite(nxt).all(dim=1)
            nxt = torch.where(bad[:, None], obs, nxt)
            term = torch.zeros(n, dtype=torch.bool)
            if self.termination is not None:
                with np.errstate(all="ignore"):
                    t = self.termination(obs.detach().numpy(), a.detach().numpy(), nxt.detach().numpy())
                term = torch.as_tensor(np.asarray(t, dtype=bool).reshape(n)) & ~bad
            out = ((nxt < self.low) | (nxt > self.high)).any(dim=1) & ~term
            nxt = torch.maximum(torch.minimum(nxt, self.high), self.low)
            r = self.reward(obs, a, nxt)
            r = torch.where(torch.isfinite(r), r, torch.zeros_like(r))
            J = J + disc * alive * r
            disc *= gamma
            cut = (out | bad).to(obs.dtype)
            if value is not None and bool((alive * cut).any()):
                J = J + disc * alive * cut * value(nxt)
            alive = alive * (1.0 - torch.maximum(cut, term.to(obs.dtype)))
            obs = nxt
            if not bool(alive.any()):
                break
        if value is not None:
            J = J + disc * alive * value(obs)
        return J, states


def agent_value(agent) -> tuple[ValueFn, float, str] | None:
    """The neural agent's critic as a state value ``V(obs (N, n_obs) float64) -> (N,)``, its discount and a
    description; None when the agent has none (see the module docstring for the choice)."""
    pol = getattr(agent, "policy", None)
    if pol is None:
        return None
    gamma = float(getattr(agent, "gamma", 0.99))
    if callable(getattr(pol, "predict_values", None)):  # PPO, A2C

        def v_ppo(obs: torch.Tensor) -> torch.Tensor:
            return pol.predict_values(obs.float()).reshape(-1).to(obs.dtype)

        return v_ppo, gamma, "the PPO value network V(s)"
    critic, actor = getattr(pol, "critic", None), getattr(pol, "actor", None)
    if critic is not None and actor is not None:  # SAC, TD3, DDPG, BEER

        def v_q(obs: torch.Tensor) -> torch.Tensor:
            o = obs.float()
            a = pol._predict(o, deterministic=True)  # the actor's action in the critic's (scaled) action space
            q = torch.cat(critic(o, a), dim=1)
            return q.min(dim=1).values.to(obs.dtype)

        return v_q, gamma, "the smallest critic Q(s, mu(s)) at the neural actor's action"
    return None


@dataclass
class RefineResult:
    """Candidates of a refinement: the model after every optimisation phase, with what was measured."""

    candidates: list[SparseModel]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def refine_policy(
    model: SparseModel,
    surrogate: TorchSurrogate,
    *,
    value: ValueFn | None = None,
    gamma: float = 1.0,
    horizon: int = 20,
    steps: int = 150,
    batch: int = 256,
    lr: float = 0.002,
    rounds: int = 3,
    threshold: float = 0.01,
    support: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    on_policy_fraction: float = 0.5,
    seed: int = 0,
    echo: Callable[..., None] | None = None,
) -> RefineResult:
    """Ascend the ``horizon``-step surrogate return (plus ``value`` at the horizon) in ``model``'s coefficients.

    Parameters
    ----------
    model : SparseModel
        The policy to start from (inputs: observations, outputs: actions, ``output_bounds`` the action bounds).
    surrogate : TorchSurrogate
        The differentiable surrogate.
    value : callable, optional
        Bootstrap ``V(obs) -> (N,)`` at the horizon and at truncations (e.g. :func:`agent_value`).
    gamma : float, default 1.0
        Discount of the objective (the critic's own discount when there is a critic).
    horizon, steps, batch : int
        Rollout length, Adam steps in all (split evenly over ``rounds``), starts per step.
    lr : float, default 0.002
        Adam learning rate, in units of the coefficients' relative contributions.
    rounds : int, default 3
        Optimisation phases; a hard threshold after each phase but the last.
    threshold : float, default 0.01
        A coefficient is dropped when ``|c| * rms(feature) / scale(output)`` is below it (the output's scale is
        the RMS of the starting policy's output on the starts; its bound half-width for a zero policy).
    support : bool array (n_outputs, n_terms), optional
        Coefficients that may move (default: the nonzero ones of ``model``).
    starts : array (M, n_obs), optional
        Start states (default: the surrogate's stored real states).
    on_policy_fraction : float, default 0.5
        Share of each batch drawn from states the current policy visits in full-length surrogate rollouts
        (refreshed every phase) instead of the stored states.
    """
    if model.output_bounds is None:
        raise ValueError("refine_policy: the policy needs output_bounds (the action bounds)")
    if horizon < 1 or steps < 1 or batch < 1 or rounds < 1:
        raise ValueError(f"refine_policy: horizon, steps, batch and rounds must be >= 1, got "
                         f"{horizon}, {steps}, {batch}, {rounds}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pool = np.asarray(surrogate.reset_states if starts is None else starts, dtype=np.float64)
    scale = relative_scale(model, pool)  # the policy's own output scale (a zero one: the bounds)
    twin = TorchSparseModel(model, trainable=True, clip="straight_through", scale=scale, support=support)
    opt = torch.optim.Adam([twin.weight], lr=lr)
    per_round = max(1, steps // rounds)
    # cosine decay to a tenth within each phase: large steps to move, small ones to settle
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.45 * (1 + np.cos(np.pi * (i % per_round) / per_round)))
    frozen = _freeze_value(value)
    candidates, history = [], []
    try:
        for k in range(rounds):
            visited = _visited(surrogate, twin, pool, rng) if on_policy_fraction > 0 else pool
            objective = float("nan")
            for _ in range(per_round):
                n_on = int(round(on_policy_fraction * batch))
                S = np.concatenate([visited[rng.integers(len(visited), size=n_on)],
                                    pool[rng.integers(len(pool), size=batch - n_on)]])
                members = rng.integers(surrogate.n_models, size=batch) if surrogate.n_models > 1 else None
                J, _ = surrogate.rollout(twin, torch.as_tensor(S), horizon, gamma, value, members)
                loss = -J.mean()
                opt.zero_grad()
                loss.backward()
                if torch.isfinite(loss) and torch.isfinite(twin.weight.grad).all():
                    opt.step()  # (a rollout that blew up says nothing about the direction)
                sched.step()
                objective = -float(loss.detach())
            nnz_before = int(np.count_nonzero(twin.coef_numpy()))
            candidates.append(twin.to_model())
            rec = {"round": k + 1, "objective": objective, "nnz": nnz_before}
            if k + 1 < rounds:
                with torch.no_grad():
                    keep = np.zeros(model.coef.shape, dtype=bool)
                    keep[:, twin.active] = (twin.weight * twin._mask).abs().numpy() >= threshold
                twin.set_support(keep)
                rec["nnz_after_threshold"] = int(np.count_nonzero(twin.coef_numpy()))
            history.append(rec)
            if echo is not None:
                echo(f"[refine round {k + 1}/{rounds}] {horizon}-step objective {objective:.4g}, {nnz_before} "
                     f"nonzero coefficients" + (f", {rec['nnz_after_threshold']} after the threshold"
                                                 if "nnz_after_threshold" in rec else ""))
    finally:
        frozen()
    return RefineResult(candidates, history, time.perf_counter() - t0)


def _visited(surrogate: TorchSurrogate, twin: TorchSparseModel, pool: np.ndarray, rng, n: int = 64) -> np.ndarray:
    """States the current policy visits in full-length surrogate rollouts from stored states."""
    S = torch.as_tensor(pool[rng.integers(len(pool), size=min(n, len(pool)))])
    with torch.no_grad():
        _, states = surrogate.rollout(twin, S, surrogate.env_horizon, keep_states=True)
    return torch.cat(states).numpy() if states else pool


def _freeze_value(value) -> Callable[[], None]:
    """Stop gradients accumulating in a critic's own parameters while it bootstraps; returns the undo."""
    mods = [c.cell_contents for c in getattr(value, "__closure__", None) or ()
            if isinstance(getattr(c, "cell_contents", None), torch.nn.Module)]
    params = [p for m in mods for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)

    def undo() -> None:
        for p in params:
            p.requires_grad_(True)

    return undo
