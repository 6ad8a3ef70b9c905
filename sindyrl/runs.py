"""The run directory: one place for a run's config, real data, models, agent, metrics and outputs.

    runs/<name>/config.yaml      resolved config
    runs/<name>/data/real.npz    every real transition (append-only)
    runs/<name>/models/*.json    SparseModel JSON (dynamics, reward, policy)
    runs/<name>/agent/agent.zip  SB3 checkpoint (trusted input only: it unpickles)
    runs/<name>/export/          ONNX files
    runs/<name>/firmware/        generated C, builds, HIL logs
    runs/<name>/plots/           PNG figures
    runs/<name>/metrics.csv      one row per Dyna iteration
    runs/<name>/summary.json     headline figures, flat keys; each stage adds its own
    runs/<name>/manifest.json    versions, hashes, timings
    runs/<name>/state.json       Dyna progress (for --resume)
    runs/<name>/traces/*.npz     one closed-loop episode per controller (obs, actions, rewards), for the report

All writes are atomic (temporary file, then rename). ``limit_threads`` is the thread cap every run
process starts with (the CLI, sweep trials, benchmark workers).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np
import yaml

from .atomic import atomic_write  # re-exported: the run directory's writes, as before
from .config import Config, config_from_dict, config_to_dict
from .sparse import SparseModel, _json_safe

__all__ = ["Run", "atomic_write", "ALGORITHMS", "algorithm_class", "limit_threads"]


def limit_threads(n: int | None = None) -> None:
    """Cap BLAS and torch threads (default: ``$SINDYRL_THREADS``, else 1).

    The models and batches are small, so one thread is fastest, and runs side by side (sweeps, benchmark
    trials) must not oversubscribe the cores. ``OMP_NUM_THREADS`` is set too, for child processes.
    """
    n = int(os.environ.get("SINDYRL_THREADS", "1")) if n is None else int(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover
        pass
    import torch

    torch.set_num_threads(n)


_jsonable = _json_safe


ALGORITHMS = ("ppo", "sac", "td3", "ddpg", "beer")


def algorithm_class(algo: str):
    """The SB3 class for a config's ``agent.algo``."""
    import stable_baselines3 as sb3

    if algo == "beer":
        from .agents import BEER

        return BEER
    table = {"ppo": sb3.PPO, "sac": sb3.SAC, "td3": sb3.TD3, "ddpg": sb3.DDPG}
    if algo not in table:
        raise ValueError(f"agent.algo: unknown algorithm {algo!r}; expected one of {ALGORITHMS}")
    return table[algo]


def quiet_logger(model):
    """Give an SB3 model without ``tensorboard_log`` a logger that writes no files.

    Left alone, every ``learn()`` of such a model makes an empty ``/tmp/SB3-<date>`` folder (SB3's default
    log folder); a Dyna run calls ``learn()`` once per iteration. ``verbose >= 1`` still prints to stdout.
    """
    if getattr(model, "tensorboard_log", None) is None:
        from stable_baselines3.common.logger import HumanOutputFormat, Logger

        model.set_logger(Logger(None, [HumanOutputFormat(sys.stdout)] if model.verbose >= 1 else []))
    return model


class Run:
    """A run directory. Create with :meth:`create`, open an existing one with :meth:`open`."""

    def __init__(self, path: Path, config: Config):
        self.path = Path(path)
        self.config = config
        self._spec = None

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, config: Config, root: str | Path = "runs", name: str | None = None, exist_ok: bool = False) -> Run:
        """Make ``root/name`` (default: config name or env id, plus a timestamp) and write the config."""
        if name is None:
            base = config.name or config.env.id.replace("/", "_").replace(":", "_")
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            name = f"{base}-{stamp}"
        path = Path(root) / name
        if path.exists() and any(path.iterdir()) and not exist_ok:
            raise ValueError(f"run directory {path} already exists (use --resume {path} to continue it)")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, config)
        atomic_write(path / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
        run.write_manifest()
        return run

    @classmethod
    def open(cls, path: str | Path) -> Run:
        path = Path(path)
        cfg_file = path / "config.yaml"
        if not path.is_dir():
            raise ValueError(f"run directory not found: {path}")
        if not cfg_file.is_file():
            raise ValueError(f"{path} is not a sindyrl run directory (no config.yaml)")
        data = yaml.safe_load(cfg_file.read_text())
        return cls(path, config_from_dict(data, source=str(cfg_file)))

    # ----------------------------------------------------------------- env
    def make_env(self, seed: int | None = None, render_mode: str | None = None):
        from .envs import make_env

        return make_env(self.config.env, seed=seed, render_mode=render_mode)

    @property
    def spec(self):
        if self._spec is None:
            from .envs import env_spec

            self._spec = env_spec(self.config.env)
        return self._spec

    @property
    def obs_names(self) -> list[str]:
        return list(self.spec.obs_names)

    @property
    def action_names(self) -> list[str]:
        return list(self.spec.action_names)

    # --------------------------------------------------------------- paths
    def _dir(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def data_path(self) -> Path:
        return self.path / "data" / "real.npz"

    @property
    def models_dir(self) -> Path:
        return self._dir("models")

    @property
    def export_dir(self) -> Path:
        return self._dir("export")

    @property
    def firmware_dir(self) -> Path:
        return self._dir("firmware")

    @property
    def plots_dir(self) -> Path:
        return self._dir("plots")

    @property
    def agent_path(self) -> Path:
        return self.path / "agent" / "agent.zip"

    @property
    def vecnormalize_path(self) -> Path:
        return self.path / "agent" / "vecnormalize.pkl"

    def model_path(self, name: str) -> Path:
        return self.path / "models" / f"{name}.json"

    # --------------------------------------------------------- artifacts
    def load_model(self, name: str) -> SparseModel:
        p = self.model_path(name)
        if not p.is_file():
            hint = {"policy": "run `sindyrl distill RUN` first", "reward": "this run uses a known reward"}.get(
                name, "run `sindyrl train` or `sindyrl fit` first")
            raise FileNotFoundError(f"{self.path}: no {name} model at {p} ({hint})")
        return SparseModel.from_json(p)

    def save_model(self, name: str, model: SparseModel) -> Path:
        p = self.model_path(name)
        self.models_dir  # noqa: B018  (creates the directory)
        model.to_json(p)
        return p

    def confirm_episodes(self) -> int:
        """Real episodes a later stage confirms a controller on, by default: as many as the final evaluation of
        the neural policy had (the same reset seeds), else 1."""
        n = self.read_summary().get("eval_episodes")
        return int(n) if n else 1

    def save_termination(self, rule) -> Path:
        """``models/termination.json``: a learned episode-end rule (:class:`sindyrl.termination.BoxTermination`)."""
        p = self.models_dir / "termination.json"
        atomic_write(p, json.dumps(rule.to_dict(), indent=1))
        return p

    def load_termination(self):
        """The learned episode-end rule of this run, or None when it has none."""
        from .termination import BoxTermination

        p = self.models_dir / "termination.json"
        return BoxTermination.from_dict(json.loads(p.read_text())) if p.is_file() else None
    def load_reward(self):
        """The run's reward: its known reward function, else the saved sparse reward (``models/reward.json``)."""
        from .reward import SINDyReward, known_reward

        if self.config.reward.known_spec:
            return known_reward(self.config.reward.known_spec)
        return SINDyReward.from_model(self.load_model("reward"), len(self.obs_names))

    def load_vecnormalize(self):
        """The agent's VecNormalize statistics frozen for evaluation (None when the run has none).

        ``training=False`` (statistics are not updated) and ``norm_reward=False``; loading against the real
        env also checks that the statistics fit its observation space.
        """
        if not self.vecnormalize_path.is_file():
            return None
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        vn = VecNormalize.load(str(self.vecnormalize_path), DummyVecEnv([lambda: self.make_env()]))
        vn.training = False
        vn.norm_reward = False
        return vn

    def load_data(self):
        from .data import TransitionBuffer

        if not self.data_path.is_file():
            raise FileNotFoundError(f"{self.path}: no real data yet ({self.data_path})")
        return TransitionBuffer.load(self.data_path)

    def load_agent(self, env=None):
        """The SB3 agent of this run (a trusted file: SB3 checkpoints unpickle)."""
        if not self.agent_path.is_file():
            raise FileNotFoundError(f"{self.path}: no trained agent at {self.agent_path} (run `sindyrl train` first)")
        cls = algorithm_class(self.config.agent.algo)
        return quiet_logger(cls.load(self.agent_path, env=env, device="cpu"))

    # --------------------------------------------------------- summaries
    def read_summary(self) -> dict:
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def update_summary(self, values: dict) -> dict:
        s = self.read_summary()
        s.update(_jsonable(values))
        atomic_write(self.path / "summary.json", json.dumps(s, indent=1, sort_keys=True))
        return s

    def read_state(self) -> dict:
        p = self.path / "state.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def write_state(self, state: dict) -> None:
        atomic_write(self.path / "state.json", json.dumps(_jsonable(state), indent=1))

    def read_metrics(self) -> list[dict]:
        p = self.path / "metrics.csv"
        if not p.is_file():
            return []
        with p.open() as fh:
            return [
                {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(fh)
            ]

    def write_metrics(self, rows: list[dict]) -> None:
        """Rewrite metrics.csv (atomic); columns are the union of the rows' keys, in first-seen order."""
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: _jsonable(v) for k, v in r.items()})
        atomic_write(self.path / "metrics.csv", buf.getvalue())

    def write_manifest(self, timings: dict | None = None) -> None:
        import importlib.metadata as md

        versions = {}
        for pkg in ("sindyrl", "numpy", "pysindy", "torch", "stable-baselines3", "gymnasium", "onnx",
                    "onnxruntime", "casadi"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                versions[pkg] = None
        p = self.path / "manifest.json"
        old = json.loads(p.read_text()) if p.is_file() else {}
        hashes = {}
        for f in sorted(self.path.glob("models/*.json")) + sorted(self.path.glob("agent/*.zip")):
            hashes[str(f.relative_to(self.path))] = hashlib.sha256(f.read_bytes()).hexdigest()
        if self.data_path.is_file():
            hashes["data/real.npz"] = hashlib.sha256(self.data_path.read_bytes()).hexdigest()
        man = {
            "created": old.get("created", _dt.datetime.now().isoformat(timespec="seconds")),
            "updated": _dt.datetime.now().isoformat(timespec="seconds"),
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions, "hashes": hashes,
            "timings": {**old.get("timings", {}), **(timings or {})},
        }
        atomic_write(p, json.dumps(man, indent=1))

    # ------------------------------------------------------------ traces
    def save_trace(self, label: str, trace: dict) -> Path:
        """Write one closed-loop episode (``obs``, ``actions``, ``rewards`` arrays) to ``traces/<label>.npz``.

        ``trace`` is typically ``evaluate_policy(..., keep_trace=True).trace``; the report draws every trace.
        """
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", label or ""):
            raise ValueError(f"save_trace: label {label!r} must be letters, digits, '_', '.' or '-'")
        if trace is None or not {"obs", "actions", "rewards"} <= set(trace):
            raise ValueError(f"save_trace({label!r}): trace needs 'obs', 'actions' and 'rewards' arrays "
                             "(evaluate_policy(..., keep_trace=True).trace)")
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in trace.items()})
        p = self._dir("traces") / f"{label}.npz"
        atomic_write(p, buf.getvalue())
        return p

    def load_traces(self) -> dict[str, dict]:
        """Every saved trace: label -> dict of arrays (empty when the run has none)."""
        out = {}
        for p in sorted((self.path / "traces").glob("*.npz")):
            with np.load(p, allow_pickle=False) as z:
                out[p.stem] = {k: z[k] for k in z.files}
        return out
