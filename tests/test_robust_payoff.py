"""Payoff matrices and the non-domination filter (pure and mixture domination) on hand-made matrices."""

import numpy as np
import pytest

from sindyrl.robust.payoff import PayoffMatrix, dominated_by, non_dominated


def test_pure_domination():
    V = np.array([[10.0, 0.0], [5.0, -1.0], [0.0, 10.0]])
    assert non_dominated(V) == [0, 2]
    assert non_dominated(V, mixtures=False) == [0, 2]
    w = dominated_by(V, 1, [0, 2])
    assert w is not None and np.all(w @ V >= V[1]) and w.sum() == pytest.approx(1.0)
    assert dominated_by(V, 1, [0]) is not None and dominated_by(V, 1, [2]) is None


def test_domination_by_a_mixture_only():
    # (4, 4) is beaten by the 50/50 mixture (5, 5) of the two specialists, by neither alone.
    V = np.array([[10.0, 0.0], [0.0, 10.0], [4.0, 4.0]])
    assert non_dominated(V, mixtures=False) == [0, 1, 2]
    assert non_dominated(V) == [0, 1]
    w = dominated_by(V, 2, [0, 1])
    assert w is not None and np.all(w @ V >= V[2])
    # (6, 6) beats every mixture somewhere: the best mixture gets min 5.
    V[2] = [6.0, 6.0]
    assert non_dominated(V) == [0, 1, 2]
    assert dominated_by(V, 2, [0, 1]) is None


def test_three_attacks_mixture_of_three():
    V = np.array([
        [9.0, 0.0, 0.0],
        [0.0, 9.0, 0.0],
        [0.0, 0.0, 9.0],
        [2.9, 2.9, 2.9],  # the uniform mixture gets 3 everywhere
        [3.1, 2.0, 2.0],  # beats the uniform mixture on column 0, but (0.35, 0.325, 0.325) dominates it
        [5.0, 5.0, -1.0],
    ])
    keep = non_dominated(V)
    assert keep == [0, 1, 2, 5]


def test_ties_keep_the_first_and_tolerance():
    V = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 3.0]])
    assert non_dominated(V) == [0, 2]
    # Each row is best somewhere, and no mixture of the other two reaches it on both columns.
    V2 = np.array([[1.0, 2.0], [1.05, 1.99], [0.0, 2.01]])
    assert non_dominated(V2) == [0, 1, 2]
    # With 0.02 of slack, row 0 covers row 2 and row 1 covers row 0.
    assert non_dominated(V2, tol=0.02) == [1]


def test_bad_payoff_input():
    with pytest.raises(ValueError, match="NaN"):
        non_dominated(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        non_dominated(np.zeros(3))


def test_payoff_csv_roundtrip_and_heatmap(tmp_path):
    P = PayoffMatrix(["natural", "robust_1"], ["none", "mad"], [[-150.0, -700.0], [-180.0, -300.0]],
                     [[5.0, 20.0], [6.0, 10.0]])
    assert P.value("robust_1", "mad") == -300.0
    path = P.to_csv(tmp_path / "payoff.csv")
    Q = PayoffMatrix.from_csv(path)
    assert Q.policies == P.policies and Q.attacks == P.attacks
    np.testing.assert_allclose(Q.values, P.values)
    np.testing.assert_allclose(Q.stderr, P.stderr)
    png = P.heatmap(tmp_path / "payoff.png", kept=["natural", "robust_1"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sub = P.subset(policies=["robust_1"], attacks=["mad"])
    assert sub.values.shape == (1, 1) and sub.values[0, 0] == -300.0
    with pytest.raises(ValueError, match="duplicate"):
        PayoffMatrix(["a", "a"], ["none"], [[1.0], [2.0]])
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="payoff matrix CSV"):
        PayoffMatrix.from_csv(tmp_path / "bad.csv")
