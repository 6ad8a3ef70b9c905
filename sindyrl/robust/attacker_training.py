"""Training learned attackers: the attacker's environment, PPO training and a warm start by imitation.

:class:`AttackerEnv` makes an attacker the learning agent (it observes the true
state and perturbs what the victim sees, rewarded by the victim's loss or, with
reference policies, by the non-dominated discovery gap); :func:`train_attacker`
trains an SB3 PPO attacker in it and returns it as a
:class:`~sindyrl.robust.attacks.LearnedAttack`; :func:`imitate_attack` starts a
new attacker from an amortised MAD attack. The attacks themselves are in
:mod:`sindyrl.robust.attacks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from .attacks import ATTACKER_ACTION_BOUND, Attack, Ball, LearnedAttack, MADAttack, _check_box
from .victims import Victim, as_victim

__all__ = ["AttackerEnv", "train_attacker", "imitate_attack", "default_attacker_kwargs"]


class AttackerEnv(gym.Env):
    """The environment in which an attacker is the learning agent.

    The attacker observes the true state ``s`` of ``make_env()`` and acts with
    ``a`` in ``[-5, 5]^n_obs``; the victim sees ``s + epsilon * scale * tanh(a)``
    (projected into the ball) and the env steps with the victim's action.

    Rewards:

    - without ``references``: ``-r`` (the attacker minimises the victim's return);
    - with ``references`` (policies already in the set): the attacker maximises
      ``J(victim, nu) - max_k J(reference_k, nu)``, the non-dominated policy
      discovery objective. Every reference runs in its own copy of the env,
      reset to the same seed and attacked by the same attacker (its current
      deterministic action, set with :meth:`set_attacker`). The per-step reward
      is ``r_victim - r_best``, where ``best`` is the reference with the
      highest return against this attacker so far (exponential average of
      finished episodes), so the episode's sum is the gap to the best
      reference; when the victim's episode ends first, the best reference is
      run to its end and its remaining return is charged at the last step.

    Parameters
    ----------
    make_env : callable
        Factory of the training environment (the surrogate in a run).
    victim : SB3 model, Victim or callable
    epsilon, scale : float, array
        The attack ball.
    references : sequence of policies, optional
    seed : int, optional
        Seeds the sequence of episode seeds.
    """

    metadata: dict = {"render_modes": []}

    def __init__(self, make_env: Callable[[], gym.Env], victim: Any, epsilon: float, scale: np.ndarray,
                 references: Sequence[Any] = (), seed: int | None = None, ema: float = 0.5) -> None:
        super().__init__()
        self.env = make_env()
        space = self.env.observation_space
        _check_box(space, "AttackerEnv")
        self.observation_space = space
        n = space.shape[0]
        self.action_space = gym.spaces.Box(-ATTACKER_ACTION_BOUND, ATTACKER_ACTION_BOUND, shape=(n,), dtype=np.float32)
        self.victim = as_victim(victim, "victim")
        self.ball = Ball(epsilon, scale, space.low, space.high)
        if self.ball.n != n:
            raise ValueError(f"AttackerEnv: scale has {self.ball.n} entries, the env observes {n}")
        self.references = [as_victim(p, f"reference_{k}") for k, p in enumerate(references)]
        self.ref_envs = [make_env() for _ in self.references]
        self._attacker: Callable[[np.ndarray], np.ndarray] | None = None
        self._seeds = np.random.default_rng(seed)
        self._ema_w = float(ema)
        self.ref_return_ema: np.ndarray | None = None
        self._obs = None

    def set_attacker(self, act: Callable[[np.ndarray], np.ndarray]) -> None:
        """The attacker's deterministic action on a batch of states, for the reference copies."""
        self._attacker = act

    def _perturb(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        a = np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0)
        return self.ball.project(s, np.asarray(s, dtype=np.float64) + self.ball.radius * np.tanh(a))

    def _best(self) -> int | None:
        return None if self.ref_return_ema is None else int(np.argmax(self.ref_return_ema))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self._seeds.integers(2**31 - 1))
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = obs
        if self.references:
            if self._attacker is None:
                raise ValueError("AttackerEnv: references need the attacker's policy; call set_attacker() first")
            self._ref_obs = [e.reset(seed=seed, options=options)[0] for e in self.ref_envs]
            self._ref_done = np.zeros(len(self.references), dtype=bool)
            self._ref_ret = np.zeros(len(self.references))
        return obs, info

    def _step_refs(self, idx: list[int]) -> np.ndarray:
        """Step the references ``idx`` (not done) once under the attacker; their rewards."""
        r = np.zeros(len(self.references))
        if not idx:
            return r
        S = np.stack([self._ref_obs[k] for k in idx])
        S_hat = self._perturb(S, self._attacker(S))
        for j, k in enumerate(idx):
            u = self.references[k].act(S_hat[j])
            o, rk, te, tr, _ = self.ref_envs[k].step(u)
            self._ref_obs[k] = o
            r[k] = float(rk)
            self._ref_done[k] = bool(te or tr)
        return r

    def step(self, action):
        s_hat = self._perturb(self._obs, action)
        u = self.victim.act(s_hat)
        obs, rew, terminated, truncated, info = self.env.step(u)
        self._obs = obs
        rew = float(rew)
        if not self.references:
            return obs, -rew, terminated, truncated, info
        best = self._best()
        r_ref = self._step_refs([k for k in range(len(self.references)) if not self._ref_done[k]])
        self._ref_ret += r_ref
        baseline = r_ref.mean() if best is None else r_ref[best]
        reward = rew - baseline
        if terminated or truncated:
            # Finish the references so the charged baseline is a whole episode's return.
            for _ in range(100_000):
                live = [k for k in range(len(self.references)) if not self._ref_done[k]]
                if not live:
                    break
                extra = self._step_refs(live)
                self._ref_ret += extra
                reward -= extra.mean() if best is None else extra[best]
            if self.ref_return_ema is None:
                self.ref_return_ema = self._ref_ret.copy()
            else:
                self.ref_return_ema = self._ema_w * self.ref_return_ema + (1 - self._ema_w) * self._ref_ret
            info = dict(info)
            info["reference_returns"] = self._ref_ret.copy()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self.env.close()
        for e in self.ref_envs:
            e.close()


def default_attacker_kwargs() -> dict:
    """PPO settings for attackers: small nets, short rollouts (the budgets are small)."""
    return dict(n_steps=1024, batch_size=128, n_epochs=10, learning_rate=3e-4, gamma=0.99,
                policy_kwargs=dict(net_arch=[64, 64]))


def _visited_states(victim: Victim, make_env: Callable[[], gym.Env], attack: Attack, n_states: int,
                    seed: int, n_copies: int = 16) -> np.ndarray:
    """True states met by ``victim`` under ``attack`` in ``n_copies`` env copies stepped in lockstep."""
    envs = [make_env() for _ in range(n_copies)]
    obs = np.stack([np.asarray(e.reset(seed=seed + i)[0]) for i, e in enumerate(envs)])
    attack.reset(seed)
    out = []
    n_ep = n_copies
    while sum(len(o) for o in out) < n_states:
        out.append(obs.copy())
        acts = np.asarray(victim.act(attack.perturb(obs))).reshape(n_copies, -1)
        for i, e in enumerate(envs):
            o, _, te, tr, _ = e.step(acts[i])
            if te or tr:
                o, _ = e.reset(seed=seed + n_ep)
                n_ep += 1
            obs[i] = o
    for e in envs:
        e.close()
    return np.concatenate(out)[:n_states]


def imitate_attack(model: Any, attack: Attack, states: np.ndarray, epochs: int = 300, batch_size: int = 256,
                   lr: float = 1e-3, seed: int = 0) -> float:
    """Fit a PPO attacker's mean action to reproduce ``attack`` (``atanh`` of its normalised perturbation).

    A learned attacker trained from scratch on a small budget barely moves away
    from "no attack"; started from an amortised MAD it is a strong attack from
    the first step, and PPO then improves it on the true objective. Returns the
    final mean squared error (in pre-tanh units).
    """
    S = np.asarray(states, dtype=np.float64)
    radius = attack.ball.radius
    delta = attack.perturb(S).astype(np.float64) - S
    unit = np.divide(delta, radius, out=np.zeros_like(delta), where=radius > 0)
    target = np.arctanh(np.clip(unit, -0.995, 0.995))
    pol = model.policy
    dev = pol.device
    X = torch.as_tensor(S, dtype=torch.float32, device=dev)
    Y = torch.as_tensor(target, dtype=torch.float32, device=dev)
    params = [p for n, p in pol.named_parameters() if not n.startswith("value_net") and n != "log_std"]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss = torch.tensor(float("nan"))
    pol.set_training_mode(True)
    for _ in range(int(epochs)):
        idx = torch.randint(0, len(X), (min(batch_size, len(X)),), generator=gen)
        mean = pol.get_distribution(X[idx]).distribution.mean
        loss = ((mean - Y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    pol.set_training_mode(False)
    return float(loss.detach())


def train_attacker(make_env: Callable[[], gym.Env], victim: Any, epsilon: float, scale: np.ndarray, *,
                   total_timesteps: int, references: Sequence[Any] = (), model: Any = None,
                   n_envs: int = 1, seed: int = 0, ppo_kwargs: dict | None = None,
                   init: Any = "mad", init_states: int = 4096, name: str = "learned") -> LearnedAttack:
    """Train (or continue training) a PPO attacker; return it as a :class:`LearnedAttack`.

    Parameters
    ----------
    make_env : callable
        Training environment factory (the surrogate in a run).
    victim : SB3 model, Victim or callable
        The attacked policy; it is not trained here.
    epsilon, scale
        The attack ball.
    total_timesteps : int
        Attacker environment steps.
    references : sequence of policies, optional
        Non-empty: the gap objective of :class:`AttackerEnv`; empty: reward ``-r``.
    model : PPO, optional
        An attacker to continue training (warm start); its env is replaced.
    n_envs : int, default 1
    seed : int, default 0
    ppo_kwargs : dict, optional
        Overrides of :func:`default_attacker_kwargs`.
    init : "mad", None or a policy, default "mad"
        Start a new attacker by imitating MAD (:func:`imitate_attack`) aimed at
        the victim (no references) or at the last reference (gap objective: an
        attack the current set is weak against), or at the given policy;
        ``None`` starts from scratch. Needs a differentiable target (SB3).
    init_states : int, default 4096
        States (visited by the target under MAD in ``make_env``) to imitate on.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    if int(total_timesteps) < 1:
        raise ValueError(f"train_attacker: total_timesteps must be >= 1, got {total_timesteps}")
    envs = [AttackerEnv(make_env, victim, epsilon, scale, references=references, seed=seed + 1000 * i)
            for i in range(int(n_envs))]
    vec = DummyVecEnv([(lambda e=e: Monitor(e)) for e in envs])
    space = envs[0].observation_space
    if model is None:
        kw = default_attacker_kwargs()
        kw.update(ppo_kwargs or {})
        model = PPO("MlpPolicy", vec, seed=seed, verbose=0, device="cpu", **kw)
        if init is not None:
            if isinstance(init, str) and init != "mad":
                raise ValueError(f"train_attacker: init must be 'mad', None or a policy, got {init!r}")
            target = as_victim(init if not isinstance(init, str) else (references[-1] if references else victim))
            if target.differentiable:
                mad = MADAttack(epsilon, scale, space.low, space.high, victim=target, start="reverse")
                states = _visited_states(target, make_env, mad, int(init_states), seed)
                imitate_attack(model, mad, states, seed=seed)
    else:
        model.set_env(vec)

    def act(S: np.ndarray) -> np.ndarray:
        a, _ = model.predict(S.astype(np.float32), deterministic=True)
        return a

    for e in envs:
        e.set_attacker(act)
    model.learn(int(total_timesteps), reset_num_timesteps=False)
    return LearnedAttack(model, epsilon, scale, space.low, space.high, name=name)
