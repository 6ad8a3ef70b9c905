"""Tests for sindyrl.agents.BEER: the bound and penalty by hand, gradient routing, training, save/load."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DDPG, TD3
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.noise import NormalActionNoise

from sindyrl.agents import BEER, bellman_cosine_bound, bellman_rank_penalty, critic_features, effective_rank


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Small networks on a shared 2-core machine: a second intra-op thread makes each step many times slower.
    n = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(n)


def small(**overrides) -> dict:
    """Small, fast settings; a fresh dict each time (SB3's DDPG writes into the policy_kwargs it is given)."""
    kwargs = dict(policy_kwargs=dict(net_arch=[32, 32]), learning_starts=100, batch_size=64, seed=0, device="cpu")
    return kwargs | overrides


def _params(module: th.nn.Module) -> list[th.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# --- the bound and the penalty, by hand -------------------------------------------------------------------


def test_bound_and_penalty_hand_computed():
    # Three pairs: (1) below the bound, (2) above it, (3) above it but terminal (masked out).
    phi = th.tensor([[3.0, 4.0], [3.0, 4.0], [3.0, 4.0]])  # |phi| = 5
    next_phi = th.tensor([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])  # |phi'| = 2, cos = 8 / 10 = 0.8
    w = th.tensor([[1.0, 2.0]])  # |w|^2 = 5
    b = th.tensor([0.5])
    r = th.tensor([[1.0], [10.0], [10.0]])
    gamma = 0.9
    bound = bellman_cosine_bound(phi, next_phi, r, w, b, gamma)
    # r~ = r - (1 - gamma) b = r - 0.05;  bound = (25 + 0.81 * 4 - r~^2 / 5) / (2 * 0.9 * 5 * 2)
    expected = [(25 + 3.24 - (ri - 0.05) ** 2 / 5) / 18 for ri in (1.0, 10.0, 10.0)]
    assert bound.shape == (3,)
    np.testing.assert_allclose(bound.numpy(), expected, rtol=1e-6)
    assert expected[0] > 0.8 > expected[1]

    # Without a bias the bound is the paper's formula.
    np.testing.assert_allclose(
        bellman_cosine_bound(phi, next_phi, r, w, None, gamma).numpy(),
        [(25 + 3.24 - ri**2 / 5) / 18 for ri in (1.0, 10.0, 10.0)],
        rtol=1e-6,
    )

    not_terminal = th.tensor([[1.0], [1.0], [0.0]])
    penalty, frac = bellman_rank_penalty(phi, next_phi, bound, not_terminal)
    # Mean over the two non-terminal pairs: (0 + (0.8 - bound_2)) / 2.
    assert penalty.item() == pytest.approx((0.8 - expected[1]) / 2, rel=1e-5)
    assert frac.item() == pytest.approx(0.5)

    # Every pair terminal: no penalty, no NaN.
    penalty, frac = bellman_rank_penalty(phi, next_phi, bound, th.zeros(3))
    assert penalty.item() == 0.0 and frac.item() == 0.0


def test_bound_holds_whenever_bellman_holds_exactly():
    # If r = (phi - gamma phi')^T w + (1 - gamma) b exactly, Cauchy-Schwarz says cos <= bound, tightly when
    # phi - gamma phi' is parallel to w. A sign or factor error in the bound breaks one of the two.
    gen = th.Generator().manual_seed(0)
    phi, next_phi = th.randn(500, 8, generator=gen).double(), th.randn(500, 8, generator=gen).double()
    w, b, gamma = th.randn(1, 8, generator=gen).double(), th.tensor([0.3]).double(), 0.97
    r = (phi - gamma * next_phi) @ w.T + (1 - gamma) * b
    cos = th.nn.functional.cosine_similarity(phi, next_phi, dim=1)
    assert bool((cos <= bellman_cosine_bound(phi, next_phi, r, w, b, gamma) + 1e-9).all())

    # Tight case: phi = gamma phi' + c w.
    phi_tight = gamma * next_phi + 0.7 * w
    r_tight = (phi_tight - gamma * next_phi) @ w.T + (1 - gamma) * b
    cos_tight = th.nn.functional.cosine_similarity(phi_tight, next_phi, dim=1)
    np.testing.assert_allclose(
        bellman_cosine_bound(phi_tight, next_phi, r_tight, w, b, gamma).numpy(), cos_tight.numpy(), atol=1e-9
    )


def test_bound_per_sample_discount_and_dead_features():
    phi = th.tensor([[1.0, 0.0], [0.0, 0.0]])
    next_phi = th.tensor([[1.0, 0.0], [1.0, 0.0]])
    w = th.tensor([[1.0, 0.0]])
    gammas = th.tensor([[0.5], [0.9]])
    bound = bellman_cosine_bound(phi, next_phi, th.zeros(2, 1), w, None, gammas)
    assert bound[0].item() == pytest.approx((1 + 0.25) / (2 * 0.5))
    # Dead features (phi = 0) give a huge bound, i.e. no penalty, never NaN.
    assert math.isfinite(bound[1].item()) and bound[1].item() > 1e6


def test_penalty_gradient_reaches_phi_only_and_not_through_the_bound():
    gen = th.Generator().manual_seed(1)
    phi = th.rand(16, 6, generator=gen).requires_grad_(True)
    next_phi = th.rand(16, 6, generator=gen).requires_grad_(True)
    w = th.randn(1, 6, generator=gen).requires_grad_(True)
    r = th.randn(16, 1, generator=gen) * 3
    mask = (th.arange(16) % 4 != 0).float()  # every fourth pair terminal
    bound = bellman_cosine_bound(phi, next_phi, r, w, None, 0.99)
    assert not bound.requires_grad
    penalty, _ = bellman_rank_penalty(phi, next_phi, bound, mask)
    penalty.backward()
    assert next_phi.grad is None and w.grad is None

    # Analytic gradient with the bound held constant: d cos / d phi = phi'/(|phi||phi'|) - cos phi/|phi|^2.
    with th.no_grad():
        p, q = phi.detach(), next_phi.detach()
        cos = th.nn.functional.cosine_similarity(p, q, dim=1)
        dcos = q / (p.norm(dim=1, keepdim=True) * q.norm(dim=1, keepdim=True)) - cos[:, None] * p / p.norm(
            dim=1, keepdim=True
        ).pow(2)
        active = ((cos > bound) & (mask > 0)).float()[:, None]
        expected = dcos * active / mask.sum()
    assert active.sum() > 0 and (active == 0).any()
    np.testing.assert_allclose(phi.grad.numpy(), expected.numpy(), atol=1e-6)


def test_penalty_on_a_real_critic_reaches_only_the_feature_layers():
    model = BEER("MlpPolicy", "Pendulum-v1", **small())
    model.learn(150)  # fill the buffer with real transitions
    data = model.replay_buffer.sample(64)
    with th.no_grad():
        next_actions = model.actor_target(data.next_observations)
        (next_phi,) = critic_features(model.critic_target, data.next_observations, next_actions)
    (phi,) = critic_features(model.critic, data.observations, data.actions)
    head = model.critic.qf0[-1]
    np.testing.assert_allclose(  # the fused forward is the critic's own
        head(phi).detach().numpy(), model.critic(data.observations, data.actions)[0].detach().numpy(), rtol=1e-6
    )
    # A batch with wild rewards puts pairs above the bound, so the penalty has a gradient.
    bound = bellman_cosine_bound(phi, next_phi, data.rewards * 100, head.weight, head.bias, model.gamma)
    penalty, frac = bellman_rank_penalty(phi, next_phi, bound, 1 - data.dones)
    assert frac.item() > 0
    for module in (model.critic, model.critic_target, model.actor, model.actor_target):
        module.zero_grad(set_to_none=True)
    penalty.backward()
    feature_layers = [model.critic.qf0[0], model.critic.qf0[2]]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for m in feature_layers for p in m.parameters())
    assert head.weight.grad is None and head.bias.grad is None
    for module in (model.critic_target, model.actor, model.actor_target):
        assert all(p.grad is None for p in module.parameters())


def test_critic_step_leaves_targets_and_actor_alone():
    # With the actor/target update delayed past this call, one train() must change the critic only.
    model = BEER("MlpPolicy", "Pendulum-v1", base="td3", policy_delay=1000, beer_coef=1.0, **small())
    model.learn(150)
    model.set_logger(configure(None, []))
    before = {name: _params(getattr(model, name)) for name in ("critic", "critic_target", "actor", "actor_target")}
    model.train(gradient_steps=3, batch_size=64)
    for name in ("critic_target", "actor", "actor_target"):
        assert all(th.equal(a, b) for a, b in zip(before[name], _params(getattr(model, name)))), name
    assert not all(th.equal(a, b) for a, b in zip(before["critic"], _params(model.critic)))


# --- effective rank ---------------------------------------------------------------------------------------


def test_effective_rank_of_known_spectra():
    gen = th.Generator().manual_seed(2)
    u, _ = th.linalg.qr(th.randn(40, 40, generator=gen, dtype=th.float64))
    v, _ = th.linalg.qr(th.randn(10, 10, generator=gen, dtype=th.float64))

    def with_spectrum(s: list[float]) -> th.Tensor:
        return u[:, :10] @ th.diag(th.tensor(s + [0.0] * (10 - len(s)), dtype=th.float64)) @ v.T

    assert effective_rank(with_spectrum([1.0, 1.0, 1.0])) == 3
    spectrum = with_spectrum([90.0, 9.5, 0.5])  # cumulative mass 0.9, 0.995, 1
    assert effective_rank(spectrum, delta=0.01) == 2
    assert effective_rank(spectrum, delta=0.2) == 1
    assert effective_rank(spectrum, delta=0.0) == 3
    # rounding noise at the level a different BLAS kernel leaves behind is not rank
    noisy = spectrum + 1e-15 * th.randn(spectrum.shape, generator=gen, dtype=th.float64)
    assert effective_rank(noisy, delta=0.0) == 3
    assert effective_rank(noisy.float(), delta=0.0) == 3
    assert effective_rank(th.zeros(5, 4)) == 0
    with pytest.raises(ValueError, match="delta"):
        effective_rank(spectrum, delta=1.0)


# --- the algorithm ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("base, reference", [("ddpg", DDPG), ("td3", TD3)])
def test_zero_coefficient_reproduces_sb3_exactly(base, reference):
    # beer_coef = 0 must be SB3's DDPG / TD3 to the bit: checks the fused phi -> Q forward and the base settings.
    def noise():
        return NormalActionNoise(np.zeros(1), 0.1 * np.ones(1))

    kwargs = small(learning_rate=1e-3)
    beer = BEER("MlpPolicy", "Pendulum-v1", beer_coef=0.0, base=base, action_noise=noise(), **kwargs).learn(300)
    ref = reference("MlpPolicy", "Pendulum-v1", action_noise=noise(), **small(learning_rate=1e-3)).learn(300)
    assert len(ref.critic.q_networks) == len(beer.critic.q_networks) == (1 if base == "ddpg" else 2)
    for (name, a), b in zip(beer.policy.state_dict().items(), ref.policy.state_dict().values()):
        assert th.equal(a, b), name
    # ... and a positive coefficient changes what is learned.
    beer = BEER("MlpPolicy", "Pendulum-v1", beer_coef=1.0, base=base, action_noise=noise(), **small(learning_rate=1e-3))
    beer.learn(300)
    assert not all(th.equal(a, b) for a, b in zip(beer.policy.state_dict().values(), ref.policy.state_dict().values()))


@pytest.mark.parametrize("base", ["ddpg", "td3"])
def test_learn_smoke_logs_beer_statistics(base, tmp_path):
    model = BEER("MlpPolicy", "Pendulum-v1", base=base, **small())
    assert model.policy_kwargs["n_critics"] == (1 if base == "ddpg" else 2)
    assert isinstance(model.action_noise, NormalActionNoise)  # the paper's Gaussian exploration by default
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(400, log_interval=1)
    stats = model.beer_stats
    assert set(stats) == {"beer_penalty", "beer_frac_above_bound", "beer_srank"}
    assert all(math.isfinite(v) for v in stats.values())
    assert stats["beer_penalty"] >= 0 and 0 <= stats["beer_frac_above_bound"] <= 1
    assert 1 <= stats["beer_srank"] <= 32
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"train/beer_penalty", "train/beer_frac_above_bound", "train/beer_srank"} <= set(header)


def test_save_load_round_trip(tmp_path):
    model = BEER("MlpPolicy", "Pendulum-v1", base="td3", beer_coef=5e-3, **small()).learn(250)
    model.save(tmp_path / "beer.zip")
    loaded = BEER.load(tmp_path / "beer.zip", device="cpu")
    assert (loaded.base, loaded.beer_coef, loaded.policy_kwargs["n_critics"]) == ("td3", 5e-3, 2)
    assert loaded.beer_stats == model.beer_stats
    obs = np.stack([model.observation_space.sample() for _ in range(32)])
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    # It keeps training on a fresh env.
    loaded.set_env(gym.make("Pendulum-v1"))
    loaded.learn(150, reset_num_timesteps=False)
    assert loaded.num_timesteps == 400


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(base="sac"), "base"),
        (dict(beer_coef=-1.0), "beer_coef"),
        (dict(beer_coef=float("nan")), "beer_coef"),
        (dict(srank_interval=0), "srank_interval"),
        (dict(exploration_noise=-0.1), "exploration_noise"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BEER("MlpPolicy", "Pendulum-v1", **kwargs)


@pytest.mark.slow
def test_beer_learns_pendulum():
    # A few thousand steps must beat a random policy by a wide margin (random scores about -1200).
    model = BEER("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, learning_starts=500, seed=0, device="cpu")
    model.learn(4000)
    env = gym.make("Pendulum-v1")
    env.reset(seed=123)
    returns, _ = evaluate_policy(model, env, n_eval_episodes=10, deterministic=True, return_episode_rewards=True)
    rng = np.random.default_rng(0)
    env.reset(seed=123)
    random_returns = []
    for _ in range(10):
        env.reset()
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(rng.uniform(-2, 2, size=1).astype(np.float32))
            total, done = total + float(r), terminated or truncated
        random_returns.append(total)
    assert np.mean(returns) > np.mean(random_returns) + 500, (np.mean(returns), np.mean(random_returns))


def test_benchmark_script_runs_on_a_tiny_budget(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("beer_benchmark", Path(__file__).parents[1] / "benchmarks" / "beer.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# B\n<!-- beer:start -->\nold\n<!-- beer:end -->\n<!-- other:start -->\nkeep\n<!-- other:end -->\n")
    argv = ["--pendulum-steps", "300", "--swimmer-steps", "0", "--seeds", "1", "--eval-episodes", "1",
            "--evals-per-run", "2", "--timing-steps", "5", "--timing-repeats", "2", "--out", str(tmp_path),
            "--write-docs", str(doc)]
    results = bench.main(argv)
    runs = results["tasks"]["Pendulum-v1"]["runs"]
    assert set(runs) == {"BEER", "DDPG", "TD3"}
    assert all(len(r[0]["curve"]) == 2 and math.isfinite(r[0]["final_return"]) for r in runs.values())
    assert results["timing"]["Pendulum-v1"]["beer_over_ddpg_median"] > 0
    assert (tmp_path / "beer.json").is_file() and (tmp_path / "beer_curves.png").is_file()
    text = doc.read_text()
    assert "old" not in text and "| Pendulum-v1 | 300 (100) | BEER |" in text and "keep" in text
    figures = json.loads((tmp_path / "results" / "beer.json").read_text())["figures"]  # beside the docs file
    assert figures["pendulum_v1.beer_over_ddpg_median"] == results["timing"]["Pendulum-v1"]["beer_over_ddpg_median"]
    assert math.isfinite(figures["pendulum_v1.BEER.final_return_mean"])
