"""Iterative discovery of a small set of non-dominated policies.

After Liu, Deng, Sun, Liang, Huang (ICLR 2024), "Beyond Worst-case Attacks:
Robust RL with Adaptive Defense via Non-dominated Policies". Start from the
naturally trained policy. Each iteration:

1. copy the last policy (warm start) as ``pi_new``;
2. alternate (``rounds`` times): train an attacker ``nu`` to maximise
   ``J(pi_new, nu) - max_{pi' in set} J(pi', nu)`` -- the attack under which
   the set falls furthest short of what a new policy can do -- then train
   ``pi_new`` against ``nu``; both train on ``make_train_env`` (the surrogate);
3. evaluate the payoff matrix (policies x attacks, with "none") on the real
   env, with ``nu`` added as a column;
4. stop if ``pi_new`` improves on the set by less than ``min_improvement``
   (as a fraction of the natural policy's return above a random policy's)
   under every attack; otherwise add it and drop dominated policies.

Everything is seeded; all training happens on ``make_train_env``, all
evaluation on ``make_eval_env``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from .attacker_training import train_attacker
from .attacks import (
    Attack,
    CriticAttack,
    MADAttack,
    NoAttack,
    ObservationAttack,
    RandomAttack,
    VecObservationAttack,
)
from .payoff import PayoffMatrix, episode_returns, evaluate_payoff, non_dominated
from .victims import as_victim

__all__ = ["DiscoveryResult", "discover", "clone_agent", "train_against", "base_attacks", "random_policy"]


def clone_agent(model: Any, env: Any = None) -> Any:
    """An independent copy of an SB3 model (weights and settings; not the replay buffer)."""
    buf = io.BytesIO()
    model.save(buf)
    buf.seek(0)
    return type(model).load(buf, env=env, device="cpu")


def _attacked_env(make_train_env: Callable[[], Any], attack: Attack) -> VecEnv:
    env = make_train_env()
    if isinstance(env, VecEnv):
        return VecObservationAttack(env, attack)
    if isinstance(env, gym.Env):
        return DummyVecEnv([lambda: ObservationAttack(env, attack)])
    raise TypeError(f"make_train_env must return a gymnasium.Env or an SB3 VecEnv, got {type(env).__name__}")


def train_against(model: Any, make_train_env: Callable[[], Any], attack: Attack, total_timesteps: int) -> Any:
    """Continue training ``model`` with its observations perturbed by ``attack`` (a warm start)."""
    if attack.needs_victim and attack.victim is None:
        attack = attack.bind(model)
    env = _attacked_env(make_train_env, attack)
    # Reload with the new env: on-policy buffers are sized by its number of copies.
    new = clone_agent(model, env=env)
    new.learn(int(total_timesteps), reset_num_timesteps=False)
    return new


def random_policy(action_space: gym.spaces.Box, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Uniform random actions (a seeded baseline: the bottom of the return range)."""
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(action_space.low, dtype=np.float64), np.asarray(action_space.high, dtype=np.float64)

    def act(obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        a = rng.uniform(lo, hi, size=(1 if obs.ndim == 1 else obs.shape[0], lo.size))
        return a[0] if obs.ndim == 1 else a

    return act


def base_attacks(kinds: list[str], epsilon: float, scale: np.ndarray, space: gym.spaces.Box,
                 steps: int = 10, step_size: float | None = None) -> dict[str, Attack]:
    """The policy-independent columns of the payoff matrix (white-box ones are aimed per row)."""
    out: dict[str, Attack] = {}
    lo, hi = space.low, space.high
    for k in kinds:
        if k == "none":
            out[k] = NoAttack(space.shape[0])
        elif k == "random":
            out[k] = RandomAttack(epsilon, scale, lo, hi)
        elif k == "mad":
            out[k] = MADAttack(epsilon, scale, lo, hi, steps=steps, step_size=step_size)
        elif k == "critic":
            out[k] = CriticAttack(epsilon, scale, lo, hi, steps=steps, step_size=step_size)
        else:
            raise ValueError(f"unknown attack {k!r}; expected none, random, mad or critic")
    return out


@dataclass
class DiscoveryResult:
    """What :func:`discover` found.

    Attributes
    ----------
    policies : dict
        Every policy trained, by name (``natural``, ``robust_1``...).
    kept : list of str
        The non-dominated set, in order of discovery.
    attacks : dict
        Every payoff column (``none``, ``random``, ``mad``, ``adversary``, ``gap_1``...).
    payoff : PayoffMatrix
        All policies x all attacks, mean return on the evaluation env.
    random_return, natural_return : float
        Mean return of a random policy and of the natural policy without attack
        (the range ``min_improvement`` is relative to).
    history : list of dict
        One entry per iteration (improvement, kept set, stop reason).
    """

    policies: dict[str, Any]
    kept: list[str]
    attacks: dict[str, Attack]
    payoff: PayoffMatrix
    random_return: float
    natural_return: float
    history: list[dict] = field(default_factory=list)

    @property
    def return_range(self) -> float:
        return self.natural_return - self.random_return


def _improvement(payoff: PayoffMatrix, new: str, kept: list[str]) -> tuple[float, str]:
    """max over attacks of J(new, a) - max_{kept} J(k, a), and the attack where it is reached."""
    V = payoff.values
    i = payoff.policies.index(new)
    rows = [payoff.policies.index(k) for k in kept]
    gap = V[i] - V[rows].max(axis=0)
    j = int(np.argmax(gap))
    return float(gap[j]), payoff.attacks[j]


def discover(natural: Any, make_train_env: Callable[[], Any], make_eval_env: Callable[[], gym.Env], *,
             epsilon: float, scale: np.ndarray, attack_kinds: tuple[str, ...] = ("none", "random", "mad"),
             iterations: int = 3, rounds: int = 1, min_improvement: float = 0.05,
             attacker_steps: int = 20_000, policy_steps: int = 20_000, adversary: bool = True,
             eval_episodes: int = 10, mad_steps: int = 10, mad_step_size: float | None = None,
             make_attacker_env: Callable[[], gym.Env] | None = None, seed: int = 0,
             log: Callable[[str], None] = lambda s: None) -> DiscoveryResult:
    """Find non-dominated policies against observation attacks.

    Parameters
    ----------
    natural : SB3 model
        The naturally trained policy (the first member of the set).
    make_train_env : callable
        Factory of the training env (gymnasium.Env or SB3 VecEnv): the
        surrogate in a run. Policies train here.
    make_eval_env : callable
        Factory of the real env (gymnasium.Env). The payoff matrix is measured here.
    epsilon : float
        Attack radius in units of ``scale``.
    scale : array (n_obs,)
        Per-dimension scale of the ball.
    attack_kinds : tuple of str
        Fixed payoff columns among ``none``, ``random``, ``mad``, ``critic``
        (``critic`` only when ``natural`` has a Q critic).
    iterations : int, default 3
        ``K``: at most this many new policies.
    rounds : int, default 1
        Attacker/policy alternations per iteration.
    min_improvement : float, default 0.05
        ``delta``, as a fraction of ``natural_return - random_return``.
    attacker_steps, policy_steps : int
        Training steps per round (attacker, new policy).
    adversary : bool, default True
        Also train a plain adversary (reward ``-r``) against the natural policy
        and add it as column ``adversary``.
    eval_episodes : int, default 10
        Episodes per payoff cell (same reset seeds for every cell).
    make_attacker_env : callable, optional
        gymnasium.Env factory for attacker training; default ``make_train_env``
        when it returns a gymnasium.Env.
    seed : int, default 0
    log : callable
        Progress messages.
    """
    if int(iterations) < 0 or int(rounds) < 1:
        raise ValueError(f"discover: need iterations >= 0 and rounds >= 1, got {iterations}, {rounds}")
    eval_env = make_eval_env()
    space, action_space = eval_env.observation_space, eval_env.action_space
    eval_env.close()
    if make_attacker_env is None:
        probe = make_train_env()
        probe.close()
        if not isinstance(probe, gym.Env):
            raise ValueError("discover: make_train_env returns a VecEnv; pass make_attacker_env (a gymnasium.Env factory)")
        make_attacker_env = make_train_env
    kinds = [k for k in attack_kinds if k != "critic" or as_victim(natural).has_critic]
    attacks = base_attacks(kinds, epsilon, scale, space, mad_steps, mad_step_size)
    if "none" not in attacks:
        attacks = {"none": NoAttack(space.shape[0]), **attacks}
    policies: dict[str, Any] = {"natural": natural}
    kept = ["natural"]
    rnd = random_policy(action_space, seed)
    random_return = float(episode_returns(rnd, make_eval_env, None, eval_episodes, seed=seed).mean())
    if adversary:
        log(f"training the adversary against the natural policy ({attacker_steps} steps)")
        attacks["adversary"] = train_attacker(make_attacker_env, natural, epsilon, scale,
                                              total_timesteps=attacker_steps, seed=seed, name="adversary")
    payoff = evaluate_payoff(policies, attacks, make_eval_env, eval_episodes, seed)
    natural_return = payoff.value("natural", "none")
    rng_range = natural_return - random_return
    if not rng_range > 0:
        raise ValueError(
            f"discover: the natural policy ({natural_return:.3g}) is no better than a random one "
            f"({random_return:.3g}) without attack; train it first"
        )
    log(f"natural {natural_return:.1f}, random {random_return:.1f}; payoff row: "
        + ", ".join(f"{a} {v:.1f}" for a, v in zip(payoff.attacks, payoff.values[0])))
    history: list[dict] = []
    last = natural
    for k in range(1, int(iterations) + 1):
        name = f"robust_{k}"
        new = clone_agent(last)
        attacker = None
        refs = [policies[p] for p in kept]
        for r in range(int(rounds)):
            log(f"[{name}] round {r + 1}: attacker ({attacker_steps} steps, gap objective over {len(refs)} policies)")
            nu = train_attacker(make_attacker_env, new, epsilon, scale, total_timesteps=attacker_steps,
                                references=refs, model=attacker, seed=seed + 100 * k + r, name=f"gap_{k}")
            attacker = nu.model
            log(f"[{name}] round {r + 1}: policy against it ({policy_steps} steps)")
            new = train_against(new, make_train_env, nu, policy_steps)
        attacks[f"gap_{k}"] = nu
        policies[name] = new
        payoff = evaluate_payoff(policies, attacks, make_eval_env, eval_episodes, seed, previous=payoff)
        gain, where = _improvement(payoff, name, kept)
        rel = gain / rng_range
        entry = {"iteration": k, "policy": name, "improvement": gain, "improvement_rel": rel, "where": where}
        log(f"[{name}] best improvement over the set: {gain:.1f} ({rel:.1%} of range) under {where}")
        if rel < min_improvement:
            entry["stop"] = f"improvement {rel:.3f} < min_improvement {min_improvement}"
            history.append(entry)
            break
        kept.append(name)
        idx = non_dominated(payoff.subset(policies=kept))
        dropped = [p for i, p in enumerate(kept) if i not in idx]
        kept = [kept[i] for i in idx]
        entry.update(kept=list(kept), dropped=dropped)
        history.append(entry)
        log(f"[{name}] kept {kept}" + (f", dropped {dropped}" if dropped else ""))
        last = new
    # Domination over every column measured (later columns can change earlier verdicts).
    idx = non_dominated(payoff.subset(policies=kept))
    kept = [kept[i] for i in idx]
    return DiscoveryResult(policies, kept, attacks, payoff, random_return, natural_return, history)

