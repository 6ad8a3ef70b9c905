"""Tests of export/: SB3 policies and SparseModels to ONNX, run with onnxruntime against the Python reference."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import onnx
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from export import (
    OPSET,
    ParityError,
    check_parity,
    export_policy,
    export_sparse_model,
    load_onnx,
    quantize,
    sample_states,
    sparse_model_to_onnx,
)
from export.onnxfile import model_from_proto
from sindyrl.sparse import SparseModel

ALGOS = {"PPO": PPO, "SAC": SAC, "TD3": TD3, "DDPG": DDPG}
N_STATES = 10_000


class TwoActionEnv(gym.Env):
    """A tiny env with 5 asymmetric observation bounds and 2 asymmetric action bounds."""

    def __init__(self):
        self.observation_space = spaces.Box(
            low=np.array([-1, -2, -3, 0, -5], dtype=np.float32), high=np.array([1, 2, 3, 4, 5], dtype=np.float32)
        )
        self.action_space = spaces.Box(low=np.array([-1, 0], dtype=np.float32), high=np.array([2, 5], dtype=np.float32))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def _make_env(env_id: str) -> gym.Env:
    return TwoActionEnv() if env_id == "two-action" else gym.make(env_id)


def _last_linear(model) -> torch.nn.Linear:
    p = model.policy
    head = p.actor.mu if isinstance(model, (SAC, TD3)) else p.action_net  # TD3 covers DDPG
    return [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]


def _spread_actions(model, seed: int = 0) -> None:
    """Re-draw the action head so that a sizeable share of actions hit the bounds (untrained heads are tiny)."""
    layer = _last_linear(model)
    g = torch.Generator().manual_seed(seed)
    # tanh heads (SAC, TD3, DDPG) reach their bound only far out: a larger gain than for PPO's clip
    gain = 3.0 if isinstance(model, PPO) else 8.0
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * gain / layer.weight.shape[1] ** 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.5)


def _wide_box(space: spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    # 1.5x the observation box: states the agent never saw are part of the deployment contract too
    mid, half = (space.high + space.low) / 2, (space.high - space.low) / 2
    return mid - 1.5 * half, mid + 1.5 * half


def _make_agent(algo: str, env: gym.Env, **kwargs):
    # 64x64, the size of the reference work's policies; tanh heads of TD3's default 400x300 with a
    # saturating gain differ from torch by ~2e-5 through float32 summation order alone
    kwargs.setdefault("policy_kwargs", {"net_arch": [64, 64]})
    return ALGOS[algo]("MlpPolicy", env, seed=0, device="cpu", **kwargs)


# ---------------------------------------------------------------- neural policies
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "two-action"])
@pytest.mark.parametrize("algo", list(ALGOS))
def test_policy_matches_predict(tmp_path, algo, env_id):
    env = _make_env(env_id)
    model = _make_agent(algo, env)
    _spread_actions(model)
    low, high = _wide_box(env.observation_space)
    n_obs, n_act = env.observation_space.shape[0], env.action_space.shape[0]
    obs_names = [f"o{i}" for i in range(n_obs)]
    res = export_policy(model, tmp_path / "p.onnx", obs_names=obs_names, low=low, high=high, n_states=N_STATES)
    assert res.parity_max_abs is not None and res.parity_max_abs <= 1e-5
    assert res.path.stat().st_size == res.n_bytes

    m = load_onnx(res.path)
    X = sample_states(low, high, n=N_STATES, seed=7)
    want = model.predict(X, deterministic=True)[0]
    got = m(X)
    assert got.shape == want.shape == (N_STATES, n_act)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # the parity states cover both saturated and unsaturated actions (tanh heads: within 0.1% of the range)
    lo, hi = env.action_space.low, env.action_space.high
    near = 1e-6 if algo == "PPO" else 1e-3 * (hi - lo)
    at_bound = (np.abs(want - lo) <= near) | (np.abs(want - hi) <= near)
    assert 0.01 < at_bound.mean() < 0.99, at_bound.mean()
    assert np.all(got >= lo - 1e-6) and np.all(got <= hi + 1e-6)
    # single observation, and a different batch size than the one traced
    np.testing.assert_allclose(m(X[0]), model.predict(X[0], deterministic=True)[0], atol=1e-5, rtol=0)

    proto = onnx.load(res.path)
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET >= 17
    assert [i.name for i in proto.graph.input] == ["obs"] and [o.name for o in proto.graph.output] == ["action"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = m.metadata
    assert meta["kind"] == "neural_policy" and meta["algorithm"] == algo
    assert m.input_names == obs_names and len(m.output_names) == n_act
    assert json.loads(meta["output_bounds"]) == {"low": lo.tolist(), "high": hi.tolist()}
    assert json.loads(meta["input_bounds"])["low"] == env.observation_space.low.tolist()
    assert len(meta["policy_params_sha256"]) == 64 and meta["sindyrl_version"]


def test_vecnormalize_is_folded_in(tmp_path):
    env = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    vn = VecNormalize(env, norm_obs=True, norm_reward=True, clip_obs=1.5, gamma=0.9)
    vn.seed(0)
    vn.reset()
    for _ in range(300):  # statistics from real steps; clip_obs 1.5 makes the clip matter
        vn.step(np.array([vn.action_space.sample()]))
    assert not np.allclose(vn.obs_rms.mean, 0)
    model = PPO("MlpPolicy", vn, seed=0, device="cpu")
    _spread_actions(model)
    res = export_policy(model, tmp_path / "p.onnx", vecnormalize=vn, obs_names=["cos_th", "sin_th", "th_dot"])
    assert res.parity_max_abs <= 1e-5
    m = load_onnx(res.path)
    X = sample_states(vn.observation_space.low, vn.observation_space.high, n=N_STATES, seed=3)
    np.testing.assert_allclose(m(X), model.predict(vn.normalize_obs(X), deterministic=True)[0], atol=1e-5, rtol=0)
    # without the folded normalisation the graph would not be predict(normalize(obs))
    assert np.abs(m(X) - model.predict(X, deterministic=True)[0]).max() > 1e-2
    assert json.loads(m.metadata["vecnormalize"]) is True
    np.testing.assert_allclose(json.loads(m.metadata["obs_mean"]), vn.obs_rms.mean)


def test_gsde_and_squashed_ppo(tmp_path):
    env = gym.make("Pendulum-v1")
    for model in (
        PPO("MlpPolicy", env, seed=0, device="cpu", use_sde=True),  # the pendulum example's setting
        PPO("MlpPolicy", env, seed=0, device="cpu", use_sde=True, policy_kwargs={"squash_output": True}),
        SAC("MlpPolicy", env, seed=0, device="cpu", use_sde=True),
    ):
        _spread_actions(model)
        res = export_policy(model, tmp_path / "p.onnx", low=[-2, -2, -12], high=[2, 2, 12])
        assert res.parity_max_abs <= 1e-5


def test_beer_briefly_trained(tmp_path):
    """The project's BEER (an SB3 TD3 subclass), after a few gradient steps."""
    from sindyrl.agents import BEER

    model = BEER("MlpPolicy", gym.make("Pendulum-v1"), base="td3", seed=0, device="cpu", learning_starts=64,
                 batch_size=32, policy_kwargs={"net_arch": [64, 64]})
    model.learn(160)
    res = export_policy(model, tmp_path / "beer.onnx", obs_names=["cos_th", "sin_th", "th_dot"], action_names=["u"])
    assert res.parity_max_abs <= 1e-5
    assert load_onnx(res.path).metadata["algorithm"] == "BEER"


def test_td3_subclass_exports_like_beer(tmp_path):
    """BEER is a TD3/DDPG subclass with its own policy class: subclasses are recognised by base class."""
    from stable_baselines3.td3.policies import TD3Policy

    class MyPolicy(TD3Policy):
        pass

    class MyTD3(TD3):
        policy_aliases = {"MlpPolicy": MyPolicy}

    model = MyTD3("MlpPolicy", gym.make("Pendulum-v1"), seed=1, device="cpu", policy_kwargs={"net_arch": [32, 32]})
    _spread_actions(model)
    res = export_policy(model, tmp_path / "beer.onnx")
    assert res.parity_max_abs <= 1e-5
    meta = load_onnx(res.path).metadata
    assert meta["algorithm"] == "MyTD3" and meta["sb3_base"] == "TD3" and meta["policy_class"] == "MyPolicy"


def test_torchscript_exporter_and_checkpoint_hash(tmp_path):
    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu", policy_kwargs={"net_arch": [32, 32]})
    model.save(tmp_path / "agent.zip")
    res = export_policy(model, tmp_path / "p.onnx", exporter="torchscript", checkpoint=tmp_path / "agent.zip")
    assert res.parity_max_abs <= 1e-5
    import hashlib

    assert res.source_hash == hashlib.sha256((tmp_path / "agent.zip").read_bytes()).hexdigest()
    assert "torchscript" in load_onnx(res.path).metadata["exporter"]


def test_auto_exporter_falls_back_to_torchscript(tmp_path, monkeypatch):
    import export.neural as neural

    real = neural._torch_export

    def dynamo_breaks(module, n_obs, exporter):
        if exporter == "dynamo":
            raise RuntimeError("unsupported operator in this policy")
        return real(module, n_obs, exporter)

    monkeypatch.setattr(neural, "_torch_export", dynamo_breaks)
    monkeypatch.setattr(neural, "_resolve_exporter", lambda e: "dynamo" if e == "auto" else e)
    model = PPO("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu", policy_kwargs={"net_arch": [16]})
    with pytest.warns(UserWarning, match="dynamo exporter failed"):
        res = export_policy(model, tmp_path / "p.onnx")
    assert res.parity_max_abs <= 1e-5 and "torchscript" in load_onnx(res.path).metadata["exporter"]
    with pytest.raises(RuntimeError, match="unsupported operator"):
        export_policy(model, tmp_path / "q.onnx", exporter="dynamo")


def test_unsupported_policies_are_refused(tmp_path):
    class ImageEnv(gym.Env):
        observation_space = spaces.Box(0, 255, (40, 40, 3), dtype=np.uint8)
        action_space = spaces.Box(-1, 1, (1,), dtype=np.float32)

    class DictEnv(gym.Env):
        observation_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Box(-1, 1, (1,))})
        action_space = spaces.Box(-1, 1, (1,), dtype=np.float32)

    with pytest.raises(TypeError, match="image observations"):
        export_policy(PPO("CnnPolicy", ImageEnv(), n_steps=8, batch_size=8, device="cpu"), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="dict observations"):
        export_policy(PPO("MultiInputPolicy", DictEnv(), n_steps=8, batch_size=8, device="cpu"), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="Discrete actions"):
        export_policy(PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=8, batch_size=8, device="cpu"), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="stable-baselines3 model"):
        export_policy(object(), tmp_path / "x.onnx")
    pend = SAC("MlpPolicy", gym.make("Pendulum-v1"), device="cpu", policy_kwargs={"net_arch": [8]})
    with pytest.raises(ValueError, match="obs_names has 2 names"):
        export_policy(pend, tmp_path / "x.onnx", obs_names=["a", "b"])
    unbounded = PPO("MlpPolicy", TwoActionEnv(), n_steps=8, batch_size=8, device="cpu")
    unbounded.observation_space = spaces.Box(-np.inf, np.inf, (5,), dtype=np.float32)
    with pytest.raises(ValueError, match="no box to sample states"):
        export_policy(unbounded, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_parity_failure_writes_nothing(tmp_path):
    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu")
    _spread_actions(model)
    with pytest.raises(ParityError, match="above the tolerance"):
        export_policy(model, tmp_path / "p.onnx", tol=0.0)
    assert not (tmp_path / "p.onnx").exists()


def test_quantize_neural_policy(tmp_path):
    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu")  # 256x256, as the reference figures
    _spread_actions(model)
    res = export_policy(model, tmp_path / "policy.onnx", n_states=1000)
    q = quantize(res.path)
    assert q.path.name == "policy.int8.onnx" and q.float_bytes == res.n_bytes
    assert q.ratio < 0.4, q.ratio
    fm, qm = load_onnx(res.path), load_onnx(q.path)
    assert qm.metadata["quantized"].startswith("int8") and qm.metadata["algorithm"] == "SAC"
    assert any(n.op_type == "MatMulInteger" for n in qm.proto.graph.node)
    X = sample_states(model.observation_space.low, model.observation_space.high, n=2000, seed=1)
    diff = np.abs(qm(X) - fm(X))
    assert 0 < diff.max() < 0.25, diff.max()  # int8 moves actions a little, never wildly
    sparse = _random_model(0)
    sres = export_sparse_model(sparse, tmp_path / "s.onnx")
    with pytest.raises(ValueError, match="sparse models are not quantised"):
        quantize(sres.path)


# ---------------------------------------------------------------- sparse models
def _random_model(seed: int, n_in: int = 4, n_out: int = 3, n_terms: int = 30, unit_pairs=((0, 1),), bounds=True,
                  name: str = "dynamics") -> SparseModel:
    """A random model using every factor kind, integer powers 1-3, and several trig frequencies."""
    rng = np.random.default_rng(seed)
    terms = [()]
    for _ in range(n_terms - 1):
        term = []
        for _ in range(rng.integers(1, 4)):
            i = int(rng.integers(n_in))
            kind = str(rng.choice(["pow", "sin", "cos"]))
            p = int(rng.integers(1, 4)) if kind == "pow" else float(rng.choice([1.0, 2.0, 0.5, 3.0]))
            term.append((i, kind, p))
        terms.append(tuple(term))
    coef = rng.normal(size=(n_out, n_terms)) * (rng.random((n_out, n_terms)) < 0.4)
    coef[:, 0] = rng.normal(size=n_out)  # a constant term, as a bias
    ob = (np.full(n_out, -0.9), np.full(n_out, 0.8)) if bounds else None  # tight: clips unit pairs too
    ib = (-np.full(n_in, 2.0), np.full(n_in, 2.5))
    model = SparseModel(
        [f"x{i}" for i in range(n_in)], [f"y{i}" for i in range(n_out)], terms, coef,
        unit_pairs=list(unit_pairs), output_bounds=ob, input_bounds=ib, name=name,
    )
    # scale each term to at most 1 in magnitude over the box, as a fitted model's coefficients are: outputs of
    # order 1-10, where float32 output rounding is ~1e-6 (a 3000-valued output could not be met to 1e-5 in float32)
    peak = np.abs(model.features(sample_states(*ib, n=2000, seed=seed))).max(axis=0)
    return model.with_coef(coef / np.maximum(peak, 1e-12))


def _kinds(model: SparseModel) -> set[str]:
    return {k for t in model.terms for _, k, _ in t}


@pytest.mark.parametrize("seed", range(6))
def test_sparse_model_matches_evaluate(tmp_path, seed):
    n_out = 3 + seed % 2
    model = _random_model(seed, unit_pairs=[(0, 1), (2, 3)] if n_out == 4 else [(0, 1)], n_out=n_out,
                          bounds=seed % 3 != 0)
    assert _kinds(model) == {"pow", "sin", "cos"}
    res = export_sparse_model(model, tmp_path / "m.onnx", n_states=N_STATES, seed=seed)
    assert res.parity_max_abs <= 1e-5 and res.source_hash == model.content_hash()
    m = load_onnx(res.path)
    X = sample_states(*model.input_bounds, n=N_STATES, seed=100 + seed)
    want = model.evaluate(X)
    got = m(X)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # the renormalisation and the clip are really in the graph
    for c, s in model.unit_pairs:
        r = np.hypot(got[:, c], got[:, s])
        free = (want[:, c] > -0.9) & (want[:, c] < 0.8) & (want[:, s] > -0.9) & (want[:, s] < 0.8)
        np.testing.assert_allclose(r[free], 1.0, atol=1e-6)
    if model.output_bounds is not None:
        assert np.mean(got == np.float32(0.8)) > 0.01 and np.mean(got == np.float32(-0.9)) > 0.01
    meta = m.metadata
    assert meta["kind"] == "sparse_model" and meta["source_hash"] == model.content_hash()
    assert m.input_names == model.inputs and m.output_names == model.outputs
    assert json.loads(meta["equations"])[0].startswith("y0 = ")
    assert m.input_name == "input" and m.output_name == "output"


def test_sparse_float32_graph():
    """An all-float32 graph also works; its error is float32 rounding, relative to the output size."""
    model = _random_model(11, bounds=False, unit_pairs=[])
    proto = sparse_model_to_onnx(model, dtype="float32")
    assert not any(n.op_type == "Cast" for n in proto.graph.node)
    X = sample_states(*model.input_bounds, n=N_STATES, seed=0)
    err = check_parity(proto, model, n=N_STATES)
    scale = np.abs(model.evaluate(X)).max()
    assert 0 < err <= 1e-6 * max(1.0, scale) * 10


def test_sparse_edge_cases(tmp_path):
    # constant-only model, all-zero model: the output still has the batch dimension
    const = SparseModel(["a", "b"], ["u"], [(), ((0, "pow", 2),)], [[0.7, 0.0]], input_bounds=([-1, -1], [1, 1]),
                        output_bounds=([-0.5], [0.5]), name="policy")
    zero = const.with_coef(np.zeros((1, 2)), output_bounds=None)
    for model in (const, zero):
        res = export_sparse_model(model, tmp_path / "c.onnx", n_states=100)
        m = load_onnx(res.path)
        assert m.input_name == "obs" and m.output_name == "action"  # a sparse policy is a drop-in for the neural one
        np.testing.assert_array_equal(m(np.zeros((5, 2))), model.evaluate(np.zeros((5, 2))))
    # a pendulum-like dynamics model: (cos, sin) pair renormalised, and the origin maps to 0, not NaN
    pend = SparseModel(["cos_th", "sin_th", "th_dot", "u"], ["cos_th", "sin_th", "th_dot"],
                       [((0, "pow", 1),), ((1, "pow", 1),), ((2, "pow", 1),), ((3, "pow", 1),), ((1, "pow", 1), (2, "pow", 1))],
                       [[1, 0, 0, 0, -0.05], [0, 1, 0.05, 0, 0], [0, 0.15, 1, 0.15, 0]], unit_pairs=[(0, 1)],
                       input_bounds=([-1, -1, -8, -2], [1, 1, 8, 2]))
    res = export_sparse_model(pend, tmp_path / "dyn.onnx")
    assert res.parity_max_abs <= 1e-5
    np.testing.assert_array_equal(load_onnx(res.path)(np.zeros((1, 4)))[0, :2], [0.0, 0.0])
    # no input bounds and no box: a clear error, nothing written
    nob = SparseModel(["a"], ["b"], [((0, "pow", 1),)], [[2.0]])
    with pytest.raises(ValueError, match="no input_bounds"):
        export_sparse_model(nob, tmp_path / "nob.onnx")
    assert not (tmp_path / "nob.onnx").exists()
    assert export_sparse_model(nob, tmp_path / "nob.onnx", low=[-3], high=[3]).parity_max_abs == 0.0
    with pytest.raises(TypeError, match="expected a SparseModel"):
        sparse_model_to_onnx({"coef": 1})
    with pytest.raises(ValueError, match="dtype"):
        sparse_model_to_onnx(nob, dtype="float16")


def test_parity_of_large_outputs_is_relative_to_their_size():
    """A dynamics model sampled at the corners of its data box can give thousands: its float32 outputs are
    then off by their rounding alone (InvertedDoublePendulum's cubic model: 8,436, off by 4.8e-4)."""
    model = _random_model(5, unit_pairs=[])
    big = model.with_coef(model.coef * 1e4, output_bounds=None)
    proto = sparse_model_to_onnx(big)
    X = sample_states(*big.input_bounds, n=2000, seed=0)
    ref = big.evaluate(X)
    got = np.asarray(model_from_proto(proto)(X), dtype=np.float64)
    assert np.abs(ref).max() > 1e3 and np.abs(got - ref).max() > 1e-5  # absolute: float32 rounding
    np.testing.assert_array_equal(got, ref.astype(np.float32))  # the graph computes in float64
    assert check_parity(proto, big, n=2000) <= 1e-7
    # a real error of the same relative size is still caught
    assert check_parity(proto, lambda Z: big.evaluate(Z) * (1 + 1e-4), *big.input_bounds, n=2000) > 5e-5


def test_check_parity_detects_differences():
    model = _random_model(3)
    proto = sparse_model_to_onnx(model)
    assert check_parity(proto, model, n=500) <= 1e-5
    off = check_parity(proto, lambda X: model.evaluate(X) + 0.25, low=model.input_bounds[0],
                       high=model.input_bounds[1], n=500)
    X = sample_states(*model.input_bounds, n=500, seed=0)
    assert off == pytest.approx(np.max(0.25 / np.maximum(1.0, np.abs(model.evaluate(X) + 0.25))), rel=1e-3)
    assert off > 1e-2
    assert check_parity(proto, lambda X: np.full((len(X), 3), np.nan), *model.input_bounds, n=10) == np.inf
    with pytest.raises(ValueError, match="no box"):
        check_parity(proto, lambda X: X)
    with pytest.raises(ValueError, match="not finite in dimension"):
        sample_states([0, -np.inf], [1, 1])
    with pytest.raises(ValueError, match="output has shape"):
        check_parity(proto, lambda X: X[:, :1], *model.input_bounds, n=10)


# ---------------------------------------------------------------- files
def test_load_onnx_rejects_corrupted_files(tmp_path):
    model = _random_model(1)
    res = export_sparse_model(model, tmp_path / "good.onnx")
    data = res.path.read_bytes()
    assert load_onnx(res.path)(np.zeros(4)).shape == (3,)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_onnx(tmp_path / "empty.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot an onnx file at all" * 7)
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_onnx(tmp_path / "junk.onnx")
    # truncated anywhere: from a few bytes to all but the last byte
    for cut in (5, len(data) // 4, len(data) // 2, len(data) - 40, len(data) - 1):
        bad = tmp_path / f"cut{cut}.onnx"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=str(bad.name)):
            load_onnx(bad)
    # a flipped byte inside a weight still parses and runs: the graph checksum catches it
    coef_bytes = np.asarray(model.coef[model.coef != 0][:1], dtype=np.float64).tobytes()
    at = data.find(coef_bytes)
    assert at > 0
    flipped = bytearray(data)
    flipped[at + 3] ^= 0x40
    (tmp_path / "flip.onnx").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        load_onnx(tmp_path / "flip.onnx")
