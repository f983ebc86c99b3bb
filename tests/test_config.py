"""Defaults live once in TrainConfig; every out-of-range value is refused with its range named."""

from __future__ import annotations

import pytest

from training.config import ConfigError, TrainConfig

BAD_VALUES = [
    ("epochs", 0, "epochs must be in [1, inf]"),
    ("batch_size", 0, "batch_size must be in [1, 60000]"),
    ("batch_size", 60001, "batch_size must be in [1, 60000]"),
    ("learning_rate", 0.0, "learning_rate must be in (0.0, 1.0]"),
    ("learning_rate", -1e-4, "learning_rate must be in (0.0, 1.0]"),
    ("learning_rate", float("nan"), "learning_rate must be a number"),
    ("beta_1", 1.0, "beta_1 must be in [0.0, 1.0)"),
    ("n_iter_d", 0, "n_iter_d must be in [1, 100]"),
    ("n_iter_g", 0, "n_iter_g must be in [1, 100]"),
    ("z_dim", 0, "z_dim must be in [1, 4096]"),
    ("real_label", 1.5, "real_label must be in [0.0, 1.0]"),
    ("fake_label", -0.1, "fake_label must be in [0.0, 1.0]"),
    ("seed", -1, "seed must be in [0, 2147483647]"),
    ("max_steps", -1, "max_steps must be in [0, inf]"),
    ("train_images", 70000, "train_images must be in [0, 60000]"),
    ("log_every", 0, "log_every must be in [1, inf]"),
    ("preset", "huge", "preset must be one of seed, small, tiny"),
    ("precision", "fp8", "precision must be one of auto, float32, mixed_bfloat16"),
    ("data", "", "data must not be empty"),
    ("epochs", 1.5, "epochs must be of type int"),
    ("resume", "yes", "resume must be of type bool"),
]


def test_defaults_are_the_seed_recipe():
    config = TrainConfig()
    assert (config.preset, config.epochs, config.batch_size, config.learning_rate, config.beta_1,
            config.z_dim, config.n_iter_d, config.n_iter_g, config.real_label, config.fake_label) == (
        "seed", 200, 128, 2e-4, 0.5, 100, 1, 5, 0.9, 0.0)


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_bad_value_is_refused_with_its_range(name, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        TrainConfig(**{name: value})


def test_batch_larger_than_the_chosen_training_images_is_refused():
    with pytest.raises(ConfigError, match=r"batch_size must be in 1..train_images=100"):
        TrainConfig(train_images=100, batch_size=128)


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown parameter"):
        TrainConfig.from_dict({"epochs": 1, "learning_rte": 0.1})
