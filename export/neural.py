"""SB3 policies -> ONNX graphs that compute ``model.predict(obs, deterministic=True)``.

SB3's own ONNX recipe exports the network and leaves the rest to the user,
so the file's output differs from ``predict`` (users keep reporting it). Here
the graph is a small torch module assembled from the policy's own networks
with everything ``predict`` does folded in:

    obs --(VecNormalize: (obs - mean) / sqrt(var + eps), clip)--> features
        --> latent network --> action head
        --> PPO/A2C: clip to the action bounds (tanh + rescale if squash_output)
            SAC: tanh, TD3/DDPG (and subclasses such as BEER): the actor's tanh,
            then rescale from [-1, 1] to [low, high] as SB3's ``unscale_action``.

The normalisation runs in float64 in the graph, exactly as VecNormalize does
in numpy. Policies are recognised by their SB3 base class, so algorithm
subclasses (BEER is a TD3/DDPG subclass) export without extra code; the
parity check at the end of every export guards anything a subclass changes.

Exporter: torch's dynamo exporter when ``onnxscript`` is installed, else (or
if dynamo fails on a policy) the TorchScript one (``exporter="auto"``); both
were checked here with torch 2.13
and give the same graph up to rounding. We never export ``policy.forward``:
the dynamo exporter fails on SB3's distribution objects.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from export.onnxfile import (
    BATCH_DIM,
    OPSET,
    encode_bounds,
    file_sha256,
    finish_model,
    model_from_proto,
    save_onnx,
    sindyrl_version,
)
from export.parity import DEFAULT_TOL, check_parity, require_parity
from export.sparse_model import ExportResult

__all__ = ["policy_to_onnx", "export_policy", "PolicyModule", "policy_family"]

INPUT_NAME = "obs"
OUTPUT_NAME = "action"


def policy_family(sb3_model: Any) -> str:
    """``"actor_critic"`` (PPO, A2C), ``"sac"`` or ``"td3"`` (TD3, DDPG, BEER); TypeError otherwise.

    Also checks the observation and action spaces the export supports:
    a flat ``Box`` of observations (no images, no dicts) and ``Box`` actions.
    """
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.preprocessing import is_image_space
    from stable_baselines3.sac.policies import SACPolicy
    from stable_baselines3.td3.policies import TD3Policy

    policy = getattr(sb3_model, "policy", None)
    if policy is None or not isinstance(policy, nn.Module):
        raise TypeError(f"export_policy: expected a stable-baselines3 model, got {type(sb3_model).__name__}")
    algo = type(sb3_model).__name__
    obs_space, act_space = policy.observation_space, policy.action_space
    if isinstance(obs_space, spaces.Dict):
        raise TypeError(
            f"export_policy: {algo} has dict observations ({list(obs_space.spaces)}); only a flat Box is supported "
            "(wrap the env in gymnasium.wrappers.FlattenObservation and retrain)"
        )
    if not isinstance(obs_space, spaces.Box):
        raise TypeError(f"export_policy: {algo} observation space {obs_space} is not supported (need a flat Box)")
    if is_image_space(obs_space, check_channels=False, normalized_image=False) and len(obs_space.shape) == 3:
        raise TypeError(f"export_policy: {algo} has image observations {obs_space.shape}; CNN policies are not supported")
    if len(obs_space.shape) != 1:
        raise TypeError(f"export_policy: {algo} observations have shape {obs_space.shape}; need a flat (n,) Box")
    if not isinstance(act_space, spaces.Box):
        raise TypeError(
            f"export_policy: {algo} has {type(act_space).__name__} actions; only continuous Box actions are supported"
        )
    if len(act_space.shape) != 1:
        raise TypeError(f"export_policy: {algo} actions have shape {act_space.shape}; need a flat (n,) Box")
    if isinstance(policy, SACPolicy):
        return "sac"
    if isinstance(policy, TD3Policy):
        return "td3"
    if isinstance(policy, ActorCriticPolicy):
        return "actor_critic"
    raise TypeError(
        f"export_policy: policy class {type(policy).__name__} of {algo} is not supported "
        "(need an ActorCriticPolicy, SACPolicy or TD3Policy subclass)"
    )


class PolicyModule(nn.Module):
    """``model.predict(obs, deterministic=True)`` of an SB3 policy as one torch module.

    Parameters
    ----------
    policy : stable_baselines3 BasePolicy
        The policy (used as is: copy it first if it must not be touched).
    family : str
        From :func:`policy_family`.
    obs_mean, obs_std, clip_obs : array, array, float, optional
        VecNormalize statistics: ``clip((obs - mean) / std, -clip, clip)``
        with ``std = sqrt(var + epsilon)``, computed in float64.
    """

    def __init__(
        self,
        policy: nn.Module,
        family: str,
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
        clip_obs: float | None = None,
    ):
        super().__init__()
        self.policy = policy
        self.family = family
        self.normalize = obs_mean is not None
        if self.normalize:
            self.register_buffer("obs_mean", torch.as_tensor(np.asarray(obs_mean, dtype=np.float64)))
            self.register_buffer("obs_std", torch.as_tensor(np.asarray(obs_std, dtype=np.float64)))
            self.clip_obs = float(clip_obs)
        low = np.asarray(policy.action_space.low, dtype=np.float32)
        high = np.asarray(policy.action_space.high, dtype=np.float32)
        self.register_buffer("low", torch.as_tensor(low))
        self.register_buffer("high", torch.as_tensor(high))
        # (high - low) in float32 numpy, as unscale_action computes it
        self.register_buffer("span", torch.as_tensor((high - low).astype(np.float32)))
        self.squash = bool(policy.squash_output)

    def core(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action before SB3's rescale/clip."""
        p = self.policy
        if self.family == "td3":
            return p.actor(obs)  # the actor's mu ends in tanh
        if self.family == "sac":
            mean_actions = p.actor.get_action_dist_params(obs)[0]
            return torch.tanh(mean_actions)  # mode of the squashed Gaussian / gSDE with tanh bijector
        features = p.extract_features(obs, p.pi_features_extractor)
        mean_actions = p.action_net(p.mlp_extractor.forward_actor(features))
        if getattr(p.action_dist, "bijector", None) is not None:
            return torch.tanh(mean_actions)  # gSDE with squash_output
        return mean_actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.normalize:
            x = torch.clamp((obs.double() - self.obs_mean) / self.obs_std, -self.clip_obs, self.clip_obs).float()
        a = self.core(x)
        if self.squash:
            return self.low + (0.5 * (a + 1.0) * self.span)
        return torch.minimum(torch.maximum(a, self.low), self.high)


def _vecnormalize_stats(vecnormalize: Any, n_obs: int) -> tuple[np.ndarray, np.ndarray, float] | None:
    from stable_baselines3.common.vec_env import VecNormalize

    if not isinstance(vecnormalize, VecNormalize):
        raise TypeError(f"export_policy: vecnormalize must be a VecNormalize, got {type(vecnormalize).__name__}")
    if not vecnormalize.norm_obs:
        return None  # only rewards were normalised: predict sees raw observations
    rms = vecnormalize.obs_rms
    if isinstance(rms, dict):
        raise TypeError("export_policy: VecNormalize has per-key (dict) observation statistics; need a flat Box")
    mean = np.asarray(rms.mean, dtype=np.float64).reshape(-1)
    if mean.shape != (n_obs,):
        raise ValueError(f"export_policy: VecNormalize statistics have shape {mean.shape}, observations ({n_obs},)")
    std = np.sqrt(np.asarray(rms.var, dtype=np.float64).reshape(-1) + vecnormalize.epsilon)
    return mean, std, float(vecnormalize.clip_obs)


def _resolve_exporter(exporter: str) -> str:
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"export_policy: exporter must be 'auto', 'dynamo' or 'torchscript', got {exporter!r}")
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if exporter == "dynamo" and not has_onnxscript:
        raise ImportError("export_policy: exporter='dynamo' needs the onnxscript package (pip install onnxscript)")
    if exporter == "auto":
        return "dynamo" if has_onnxscript else "torchscript"
    return exporter


def _torch_export(module: nn.Module, n_obs: int, exporter: str) -> onnx.ModelProto:
    # batch 2: torch.export specialises dimensions of size 1, which would fix the batch
    dummy = torch.zeros(2, n_obs, dtype=torch.float32)
    # the dynamo exporter and onnxscript's optimiser log progress and unrelated torchvision notes at INFO/WARNING
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                batch = torch.export.Dim(BATCH_DIM)
                prog = torch.onnx.export(
                    module, (dummy,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME], dynamic_shapes={"obs": {0: batch}}, verbose=False,
                )
                proto = prog.model_proto
            else:
                buf = io.BytesIO()
                torch.onnx.export(
                    module, (dummy,), buf, dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
                )
                proto = onnx.load_model_from_string(buf.getvalue())
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
    # one batch-dimension name whichever exporter ran
    for vi in list(proto.graph.input) + list(proto.graph.output):
        d0 = vi.type.tensor_type.shape.dim[0]
        if d0.HasField("dim_value") and d0.dim_value != 0:
            raise RuntimeError(f"export_policy: the {exporter} exporter fixed the batch dimension of {vi.name}")
        d0.dim_param = BATCH_DIM
    return proto


def _cpu_policy(policy: nn.Module) -> nn.Module:
    """The policy itself when on CPU (tracing does not change it), else a CPU copy.

    Not ``deepcopy``: gSDE policies hold non-leaf noise tensors that refuse it.
    The copy is rebuilt the way SB3's ``BasePolicy.load`` does.
    """
    if all(p.device.type == "cpu" for p in policy.parameters()):
        return policy
    cpu = type(policy)(**policy._get_constructor_parameters())
    cpu.load_state_dict({k: v.to("cpu") for k, v in policy.state_dict().items()})
    return cpu


def _state_dict_sha256(policy: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(policy.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def policy_to_onnx(
    sb3_model: Any,
    vecnormalize: Any = None,
    obs_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    checkpoint: str | os.PathLike | None = None,
    exporter: str = "auto",
) -> onnx.ModelProto:
    """Build the ONNX graph of ``sb3_model.predict(obs, deterministic=True)`` (checked with ``onnx.checker``).

    Parameters are those of :func:`export_policy`.

    Returns
    -------
    onnx.ModelProto
        Input ``obs`` ``[batch, n_obs]`` float32, output ``action`` ``[batch, n_act]`` float32.
    """
    family = policy_family(sb3_model)
    policy = _cpu_policy(sb3_model.policy)
    policy.set_training_mode(False)  # as predict() does
    n_obs = int(policy.observation_space.shape[0])
    n_act = int(policy.action_space.shape[0])
    obs_names = [f"obs{i}" for i in range(n_obs)] if obs_names is None else [str(s) for s in obs_names]
    action_names = [f"act{i}" for i in range(n_act)] if action_names is None else [str(s) for s in action_names]
    if len(obs_names) != n_obs:
        raise ValueError(f"export_policy: obs_names has {len(obs_names)} names but observations have {n_obs} entries")
    if len(action_names) != n_act:
        raise ValueError(f"export_policy: action_names has {len(action_names)} names but actions have {n_act} entries")
    stats = None if vecnormalize is None else _vecnormalize_stats(vecnormalize, n_obs)
    module = PolicyModule(policy, family, *(stats or (None, None, None))).eval()
    chosen = _resolve_exporter(exporter)
    try:
        proto = _torch_export(module, n_obs, chosen)
    except Exception as e:
        if exporter != "auto" or chosen != "dynamo":
            raise
        # "auto" means: whichever works; the parity check below vouches for the result either way
        warnings.warn(f"export_policy: the dynamo exporter failed ({type(e).__name__}: {e}); using TorchScript",
                      stacklevel=2)
        chosen = "torchscript"
        proto = _torch_export(module, n_obs, chosen)

    algo = type(sb3_model).__name__
    bases = [c.__name__ for c in type(sb3_model).__mro__ if c.__module__.startswith("stable_baselines3.")]
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"export_policy: checkpoint file not found: {checkpoint}")
        source = {"source_sha256": file_sha256(checkpoint), "source_file": Path(checkpoint).name}
    else:
        source = {"source_sha256": "", "policy_params_sha256": _state_dict_sha256(policy)}
    space = policy.observation_space
    meta = {
        "kind": "neural_policy",
        "algorithm": algo,
        "sb3_base": bases[0] if bases else algo,
        "policy_class": type(policy).__name__,
        "sindyrl_version": sindyrl_version(),
        "input_names": json.dumps(obs_names),
        "output_names": json.dumps(action_names),
        "input_bounds": encode_bounds(space.low, space.high),
        "output_bounds": encode_bounds(policy.action_space.low, policy.action_space.high),
        "vecnormalize": json.dumps(stats is not None),
        "exporter": f"torch {torch.__version__} {chosen}",
        "computes": "stable_baselines3 model.predict(obs, deterministic=True)",
        **source,
    }
    if stats is not None:
        meta["obs_mean"] = json.dumps(stats[0].tolist())
        meta["obs_std"] = json.dumps(stats[1].tolist())
        meta["clip_obs"] = repr(stats[2])
    doc = f"{algo} policy -> deterministic action, rescaled and clipped to the action bounds (sindyrl export)"
    return finish_model(proto, meta, doc)


def export_policy(
    sb3_model: Any,
    path: str | os.PathLike,
    vecnormalize: Any = None,
    obs_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    low: np.ndarray | list[float] | None = None,
    high: np.ndarray | list[float] | None = None,
    n_states: int = 10_000,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    exporter: str = "auto",
) -> ExportResult:
    """Export an SB3 policy (PPO, A2C, SAC, TD3, DDPG and their subclasses) to ONNX.

    The graph computes ``sb3_model.predict(obs, deterministic=True)``
    including the VecNormalize observation normalisation (when given), the
    tanh squashing, the rescale to the action bounds and the clipping. The
    file is written only after a parity check against ``predict``.

    Parameters
    ----------
    sb3_model : stable_baselines3 BaseAlgorithm
        The trained agent.
    path : path-like
        The ``.onnx`` file to write (atomically).
    vecnormalize : VecNormalize, optional
        The statistics the agent was trained with; folded into the graph.
    obs_names, action_names : list of str, optional
        Column names stored in the metadata (default ``obs0..``, ``act0..``).
    checkpoint : path-like, optional
        The agent's ``.zip``; its sha256 goes into the metadata (without it, a
        hash of the policy parameters does).
    low, high : array, optional
        Box of the parity states (raw observations). Default: the observation
        space, which must then be finite. ``n_states=0`` skips the check.
    n_states : int, default 10000
        Number of parity states.
    seed : int, default 0
        Seed of the parity states.
    tol : float, default 1e-5
        Largest accepted max-abs action difference.
    exporter : {"auto", "dynamo", "torchscript"}, default "auto"
        torch exporter; ``auto`` is dynamo when onnxscript is installed, and
        TorchScript when it is not or when dynamo fails on this policy.

    Returns
    -------
    ExportResult

    Raises
    ------
    TypeError
        Unsupported policy: image or dict observations, non-Box actions,
        a policy class that is not an ActorCritic/SAC/TD3 policy.
    ParityError
        If the graph differs from ``predict`` by more than ``tol``.
    """
    proto = policy_to_onnx(sb3_model, vecnormalize, obs_names, action_names, checkpoint=checkpoint, exporter=exporter)
    err = None
    if n_states:
        err = check_parity(
            model_from_proto(proto), sb3_model, low=low, high=high, n=n_states, seed=seed, vecnormalize=vecnormalize
        )
        require_parity(err, tol, f"{type(sb3_model).__name__} policy -> {path}")
    out = save_onnx(proto, path)
    meta = {p.key: p.value for p in proto.metadata_props}
    source = meta.get("source_sha256") or meta.get("policy_params_sha256", "")
    return ExportResult(path=Path(out), n_bytes=out.stat().st_size, parity_max_abs=err, source_hash=source)
