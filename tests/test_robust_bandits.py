"""EXP3-IX, EXP3.S and the regret bookkeeping of sindyrl.robust.bandits."""

import math

import numpy as np
import pytest

from sindyrl.robust.bandits import (
    EXP3IX,
    EXP3S,
    DiscountedEXP3IX,
    PolicySelector,
    make_bandit,
    normalise_returns,
    play,
    regret_curve,
    switching_schedule,
)


def test_exp3ix_probabilities_match_hand_computation():
    # K = 2, T = 100, c = sqrt(2):  eta = sqrt(2) * sqrt(ln 2 / 200) = 0.0832555,  gamma = eta / 2 = 0.0416277.
    b = EXP3IX(2, horizon=100)
    assert b.eta == pytest.approx(0.08325546111576979, rel=1e-12)
    assert b.gamma == pytest.approx(0.04162773055788489, rel=1e-12)
    # Round 1: p = (1/2, 1/2); arm 0 earns 1 -> loss 0, estimates stay (0, 0).
    np.testing.assert_allclose(b.probabilities(), [0.5, 0.5])
    b.update(0, 1.0)
    np.testing.assert_allclose(b.probabilities(), [0.5, 0.5])
    # Round 2: arm 1 earns 0 -> L1 = 1 / (0.5 + gamma) = 1.8462866;
    # p0 = 1 / (1 + exp(-eta * 1.8462866)) = 0.5383529.
    b.update(1, 0.0)
    np.testing.assert_allclose(b.loss_estimates, [0.0, 1.8462865610111663], rtol=1e-10)
    np.testing.assert_allclose(b.probabilities(), [0.5383528732322191, 0.4616471267677808], rtol=1e-10)
    # Round 3: arm 1 earns 0.5 -> L1 += 0.5 / (0.4616471 + gamma) = 2.8397795; p0 = 0.5588330.
    b.update(1, 0.5)
    np.testing.assert_allclose(b.probabilities(), [0.5588329893299938, 0.44116701067000624], rtol=1e-10)
    # Round 4: arm 0 earns 0.25 -> L0 = 0.75 / (0.5588330 + gamma) = 1.2490409; p0 = 0.5330611.
    b.update(0, 0.25)
    np.testing.assert_allclose(b.loss_estimates, [1.2490409033584147, 2.8397794659755276], rtol=1e-10)
    np.testing.assert_allclose(b.probabilities(), [0.5330611086606167, 0.4669388913393833], rtol=1e-10)


def test_exp3ix_learning_rate_formula_and_bad_input():
    b = EXP3IX(5, horizon=300, c=2.0)
    assert b.eta == pytest.approx(2.0 * math.sqrt(math.log(5) / (5 * 300)))
    assert b.gamma == pytest.approx(b.eta / 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        b.update(0, 1.5)
    with pytest.raises(ValueError, match="arm"):
        b.update(7, 0.5)
    with pytest.raises(ValueError, match="n_arms"):
        EXP3IX(0, horizon=10)
    with pytest.raises(ValueError, match="unknown bandit"):
        make_bandit("ucb", 3, 10)


def test_exp3s_update_matches_auer_formula():
    b = EXP3S(3, horizon=50, gamma=0.3, alpha=0.02)
    p = b.probabilities()
    np.testing.assert_allclose(p, [1 / 3] * 3)  # (1 - g) * 1/3 + g/3
    b.update(1, 0.6)
    # w_i' = w_i exp(g x_i / K) + e alpha W / K with w = 1/3 each, x_1 = 0.6 / (1/3) = 1.8.
    w = np.full(3, 1 / 3) + math.e * 0.02 / 3
    w[1] = (1 / 3) * math.exp(0.3 * 1.8 / 3) + math.e * 0.02 / 3
    np.testing.assert_allclose(b.probabilities(), 0.7 * w / w.sum() + 0.1, rtol=1e-12)


def test_bandits_concentrate_on_the_best_arm():
    rng = np.random.default_rng(0)
    T = 2000
    rewards = np.clip(rng.normal([0.3, 0.7, 0.5], 0.1, size=(T, 3)), 0, 1)
    for kind in ("exp3ix", "exp3s"):
        arms = play(make_bandit(kind, 3, T, seed=1), rewards)
        assert np.mean(arms[-500:] == 1) > 0.6, kind
    # A short memory trades concentration for tracking: better than uniform, not more.
    arms = play(make_bandit("discounted_exp3ix", 3, T, seed=1), rewards)
    assert np.mean(arms[-500:] == 1) > 0.4


def test_switching_aware_bandit_tracks_a_switch_better():
    # Arm 0 is best for the first half, arm 1 for the second: the best fixed arm gets 0.5 * T * 0.9 + ...
    T = 1000
    rewards = np.zeros((T, 2))
    rewards[: T // 2] = [0.9, 0.1]
    rewards[T // 2:] = [0.1, 0.9]
    ix = np.mean([rewards[np.arange(T), play(EXP3IX(2, T, seed=s), rewards)].mean() for s in range(5)])
    ds = np.mean([rewards[np.arange(T), play(DiscountedEXP3IX(2, T, discount=0.95, seed=s), rewards)].mean()
                  for s in range(5)])
    s3 = np.mean([rewards[np.arange(T), play(EXP3S(2, T, switches=1, seed=s), rewards)].mean() for s in range(5)])
    assert ds > ix + 0.05
    assert s3 > ix


def test_regret_curve_by_hand():
    table = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [1.0, 1.0]])
    # totals: arm 0 = 4, arm 1 = 4 -> argmax picks arm 0 (first of equals).
    arms = np.array([1, 1, 0, 0])
    regret, best = regret_curve(table, arms)
    assert best == 0
    np.testing.assert_allclose(regret, [1.0, -2.0, -2.0, -2.0])
    table[3, 1] = 2.0  # now arm 1 totals 5
    regret, best = regret_curve(table, np.array([0, 0, 0, 0]))
    assert best == 1
    np.testing.assert_allclose(regret, [-1.0, 2.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="table"):
        regret_curve(table, np.array([0, 1]))


def test_normalise_schedule_and_selector():
    np.testing.assert_allclose(normalise_returns([-10, 0, 5, 20], -10, 10), [0, 0.5, 0.75, 1])
    with pytest.raises(ValueError, match="low < high"):
        normalise_returns([0.0], 1, 1)
    assert switching_schedule(["none", "mad", "learned"], 7, 2) == ["none", "none", "mad", "mad", "learned",
                                                                    "learned", "none"]
    sel = PolicySelector([lambda o: np.zeros(1), lambda o: np.ones(1)], EXP3IX(2, 10, eta=1.0), (-100.0, 0.0))
    arm = sel.begin_episode()
    assert sel.act(np.zeros(3))[0] == arm
    sel.end_episode(-100.0)  # loss 1 for that arm
    p = sel.bandit.probabilities()
    assert p[arm] < 0.5
    with pytest.raises(RuntimeError):
        sel.act(np.zeros(3))


def test_regret_exponent_and_period():
    from sindyrl.robust.adaptation import regret_exponent, schedule_period

    t = np.arange(1, 1001)
    assert regret_exponent(3.0 * t) == pytest.approx(1.0, abs=1e-9)
    assert regret_exponent(5.0 * np.sqrt(t)) == pytest.approx(0.5, abs=1e-9)
    assert regret_exponent(-t.astype(float)) == float("-inf")
    # a saw-tooth that gains sqrt(k) per period: fitted at period ends only
    saw = np.concatenate([np.sqrt(k) * 10 + np.linspace(0, 5, 100) for k in range(1, 11)])
    assert regret_exponent(saw, period=100) < 0.7
    assert schedule_period(switching_schedule(["none", "mad", "adv"], 1000, 50)) == 150
    assert schedule_period(["a", "b", "c"]) == 3


def test_evaluate_adaptation_on_a_given_table(tmp_path):
    from sindyrl.robust.adaptation import evaluate_adaptation, plot_regret

    rng = np.random.default_rng(0)
    sched = switching_schedule(["none", "mad"], 400, 50)
    # policy 0: natural, good without attack; policy 1: robust, a bit worse clean, much better under MAD
    table = np.where(np.array(sched)[:, None] == "none", [-150.0, -200.0], [-900.0, -400.0])
    table = table + rng.normal(0, 30, size=table.shape)
    res = evaluate_adaptation({"natural": None, "robust": None}, {}, sched, None, (-1200.0, 0.0), return_range=1000.0,
                              bandits=["exp3ix", "exp3ix@c8", "exp3s"], n_seeds=10, table=table,
                              bandit_options={"exp3ix@c8": {"c": 8.0}})
    m = res.metrics
    assert m["best_fixed_policy"] == "robust" and m["schedule_period"] == 100
    assert m["natural_mean_return"] == pytest.approx(table[:, 0].mean())
    for k in ("exp3ix", "exp3ix@c8", "exp3s"):
        assert m[f"{k}_beats_natural"]
        assert res.arms[k].shape == (10, 400)
        np.testing.assert_allclose(res.regret(k)[:, -1].mean(), m[f"{k}_final_regret"])
    # a larger learning rate commits sooner: less regret, sublinear growth
    assert m["exp3ix@c8_final_regret"] < m["exp3ix_final_regret"]
    assert m["exp3ix@c8_regret_exponent"] < 1
    assert m["segment_best_mean_return"] >= m["best_fixed_mean_return"]
    png = plot_regret(res, tmp_path / "regret.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="table"):
        evaluate_adaptation({"a": None}, {}, sched, None, (-1.0, 0.0), table=table)
