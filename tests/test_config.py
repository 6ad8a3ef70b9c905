"""Config loading: typed values, errors that name the key path."""

from pathlib import Path

import pytest

from sindyrl.config import ConfigError, config_from_dict, load_config

EXAMPLES = sorted((Path(__file__).parents[1] / "examples" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_configs_load(path):
    cfg = load_config(path)
    assert cfg.env.id and cfg.dyna.iterations >= 1


def test_defaults_and_types():
    cfg = config_from_dict({"env": {"id": "Pendulum-v1"}, "dynamics": {"threshold": "1e-3"}})
    assert cfg.agent.algo == "ppo" and cfg.dynamics.threshold == 1e-3 and cfg.seed == 0


@pytest.mark.parametrize(
    "data, match",
    [
        ({}, "missing required key env"),
        ({"env": {}}, "missing required key env.id"),
        ({"env": {"id": "X"}, "agent": {"algoo": "ppo"}}, "unknown key agent.algoo"),
        ({"env": {"id": "X"}, "surprise": 1}, "unknown key surprise"),
        ({"env": {"id": "X"}, "agent": {"algo": "a2c"}}, r"agent.algo: 'a2c' is not one of"),
        ({"env": {"id": "X"}, "dynamics": {"n_models": "many"}}, "dynamics.n_models: expected an integer"),
        ({"env": {"id": "X"}, "dynamics": {"library": {"degree": 0}}}, "dynamics.library.degree: must be > 0"),
        ({"env": {"id": "X"}, "collect": {"stochastic": "yes"}}, "collect.stochastic: expected true/false"),
        ({"env": {"id": "X"}, "env_": 1}, "unknown key env_"),
        ({"env": {"id": "X", "unit_pairs": [["a"]]}}, r"env.unit_pairs\[0\]"),
        ({"env": {"id": "X"}, "distill": {"refine": "es"}}, r"distill.refine: 'es' is not one of"),
        ({"env": {"id": "X"}, "distill": {"max_terms_fraction": 0}}, "distill.max_terms_fraction: must be > 0"),
        ({"env": {"id": "X"}, "distill": {"refine_timesteps": -5}}, "distill.refine_timesteps: must be > 0"),
        ({"env": {"id": "X"}, "distill": {"confirm_top": -1}}, "distill.confirm_top: must be >= 0"),
        ({"env": {"id": "X"}, "distill": {"confirm_episodes": 0}}, "distill.confirm_episodes: must be > 0"),
    ],
)
def test_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_file_errors_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    p = tmp_path / "c.yaml"
    p.write_text("env: {id: Pendulum-v1}\nagent: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)
    p.write_text("env: {id: Pendulum-v1}\n")
    cfg = load_config(p, ["agent.algo=sac", "agent.kwargs.gamma=0.9", "dyna.iterations=3"])
    assert cfg.agent.algo == "sac" and cfg.agent.kwargs == {"gamma": 0.9} and cfg.dyna.iterations == 3
    with pytest.raises(ConfigError, match=str(p)):
        load_config(p, ["agent.algo=zzz"])
