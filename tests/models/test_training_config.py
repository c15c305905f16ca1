from typing import get_args

import pytest

from models.training_config import PRESETS, PresetName, TrainingConfig, make_config


def test_seed_preset_is_the_tutorial() -> None:
    seed = PRESETS["seed"]
    assert (seed.hidden_size, seed.actor_lr, seed.critic_lr, seed.gamma, seed.tau) == (256, 1e-4, 1e-3, 0.99, 1e-2)
    assert (seed.batch_size, seed.replay_size, seed.episodes, seed.max_episode_steps) == (128, 50_000, 100, 200)
    assert (seed.noise, seed.noise_sigma, seed.ou_theta) == ("ou", 0.3, 0.15)
    # "an update every step once the buffer holds more than a batch", no random warm-up
    assert seed.learning_starts == seed.batch_size + 1 and seed.random_steps == 0 and seed.update_every == 1


def test_default_preset_is_the_dataclass_default() -> None:
    assert PRESETS["default"] == TrainingConfig()
    assert make_config() == TrainingConfig()


def test_preset_names_are_the_presets() -> None:
    assert get_args(PresetName) == tuple(PRESETS)


def test_every_field_documents_itself() -> None:
    for name, field in TrainingConfig.model_fields.items():
        assert field.description, name


def test_overrides_replace_fields_and_ints_are_accepted_for_floats() -> None:
    config = make_config("seed", episodes=3, actor_lr=1, noise="gaussian", max_episode_steps=None)
    assert config.episodes == 3 and config.actor_lr == 1.0 and isinstance(config.actor_lr, float)
    assert config.noise == "gaussian" and config.max_episode_steps is None
    assert config.hidden_size == 256  # untouched fields keep the preset's value


def test_to_dict_round_trips() -> None:
    config = make_config(seed=7)
    assert TrainingConfig(**config.to_dict()) == config
    assert TrainingConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("nope", {}, "unknown preset 'nope'"),
        ("default", {"hiden_size": 3}, "hiden_size"),
        ("default", {"gamma": 1.5}, "gamma"),
        ("default", {"tau": 0.0}, "tau"),
        ("default", {"episodes": 0}, "episodes"),
        ("default", {"episodes": 2.5}, "episodes"),
        ("default", {"episodes": True}, "episodes"),
        ("default", {"hidden_size": "64"}, "hidden_size"),
        ("default", {"actor_lr": float("nan")}, "actor_lr"),
        ("default", {"noise": "pink"}, "noise"),
        ("default", {"export": "first"}, "export"),
        ("default", {"batch_size": 512, "replay_size": 100}, "replay_size"),
        ("default", {"max_episode_steps": 0}, "max_episode_steps"),
        ("default", {"eval_episodes": 0}, "eval_episodes"),
        ("default", {"env_id": "  "}, "env_id"),
        ("seed", {"replay_size": 100}, "replay_size"),
    ],
)
def test_invalid_configs_name_the_problem(preset: str, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config(preset, **overrides)


def test_field_errors_are_located_at_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as exc_info:
        make_config("default", replay_size=100)
    assert [error["loc"] for error in exc_info.value.errors()] == [("replay_size",)]
