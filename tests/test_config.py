"""Defaults live once in TrainConfig; every out-of-range value is refused with its range named."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from tests.conftest import ROOT
from training.config import (
    MODEL_NAME_MAX,
    PRESET_RECIPES,
    ConfigError,
    JobConfig,
    TrainConfig,
    param,
    params,
    parse,
)
from training.flags import add_flag

BAD_VALUES = [
    ("epochs", 0, "epochs must be in [1, inf]"),
    ("batch_size", -1, "batch_size must be in [0, 60000]"),
    ("batch_size", 60001, "batch_size must be in [0, 60000]"),
    ("learning_rate", -1e-4, "learning_rate must be in [0.0, 1.0]"),
    ("learning_rate", 1.5, "learning_rate must be in [0.0, 1.0]"),
    ("learning_rate", float("nan"), "learning_rate must be a number"),
    ("beta_1", 1.0, "beta_1 must be in [0.0, 1.0)"),
    ("n_iter_d", 0, "n_iter_d must be in [1, 100]"),
    ("n_iter_g", 101, "n_iter_g must be in [0, 100]"),
    ("z_dim", 0, "z_dim must be in [1, 4096]"),
    ("real_label", 1.5, "real_label must be in [0.0, 1.0]"),
    ("fake_label", -0.1, "fake_label must be in [0.0, 1.0]"),
    ("seed", -1, "seed must be in [0, 2147483647]"),
    ("max_steps", -1, "max_steps must be in [0, inf]"),
    ("max_minutes", -0.5, "max_minutes must be in [0.0, inf]"),
    ("train_images", 70000, "train_images must be in [0, 60000]"),
    ("log_every", 0, "log_every must be in [1, inf]"),
    ("devices", 0, "devices must be in [1, 64]"),
    ("preset", "huge", "preset must be one of seed, small, tiny, cpu"),
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


def test_a_preset_brings_its_recipe_where_none_is_given_and_again_when_it_changes():
    cpu = TrainConfig(preset="cpu")
    assert (cpu.batch_size, cpu.learning_rate, cpu.n_iter_g) == tuple(
        PRESET_RECIPES["cpu"][name] for name in ("batch_size", "learning_rate", "n_iter_g"))
    assert cpu.to_dict()["n_iter_g"] == PRESET_RECIPES["cpu"]["n_iter_g"], "what MLflow logs is the value"
    seed = cpu.replace(preset="seed", epochs=3)
    assert (seed.batch_size, seed.learning_rate, seed.n_iter_g, seed.epochs) == (128, 2e-4, 5, 3)
    assert seed.replace(preset="cpu") == cpu.replace(epochs=3)
    chosen = TrainConfig(preset="cpu", n_iter_g=3, batch_size=32)
    assert (chosen.n_iter_g, chosen.batch_size, chosen.learning_rate) == (3, 32, PRESET_RECIPES["cpu"][
        "learning_rate"]), "a value given is kept"
    assert chosen.replace(preset="seed").n_iter_g == 3, "and kept when the preset changes"
    assert TrainConfig.from_text({"preset": "cpu", "n_iter_g": "0"}) == cpu
    assert "0 = the preset's: 5 (seed, small, tiny), 2 (cpu)" in param(TrainConfig, "n_iter_g").help


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_bad_value_is_refused_with_its_range(name, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        TrainConfig(**{name: value})


def test_batch_larger_than_the_chosen_training_images_is_refused():
    with pytest.raises(ConfigError, match=r"batch_size must be in 1..train_images=100"):
        TrainConfig(train_images=100, batch_size=128)


def test_best_generator_needs_the_fid_curve():
    with pytest.raises(ConfigError, match=r"select=best needs the FID curve \(eval_every > 0\)"):
        TrainConfig(select="best", eval_every=0)
    assert not TrainConfig(eval_every=0).keeps_best and TrainConfig().keeps_best
    assert not TrainConfig(select="last").keeps_best


def test_a_checkpoint_from_before_the_average_resumes_only_without_it():
    older = {k: v for k, v in TrainConfig().to_dict().items()
             if k not in ("ema_decay", "eval_every", "eval_samples", "select")}
    assert TrainConfig().resume_conflicts(older) == ["ema_decay"]
    assert TrainConfig(ema_decay=0.0, eval_every=2).resume_conflicts(older) == []


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown parameter"):
        TrainConfig.from_dict({"epochs": 1, "learning_rte": 0.1})


# What MLflow's registry refuses at `register`, after training, and what it takes.
REFUSED_MODEL_NAMES = ["team/gan", "gan:v2", " ", ".", "..", "..gan", "/gan"]
ACCEPTED_MODEL_NAMES = ["mnist-gan-generator", "my gan", ".gan", "gan..v2", "gan.", "Generator_2"]


def test_a_model_name_is_refused_up_front_exactly_when_mlflows_registry_would_refuse_it(tmp_path):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.promotion_lock import lock_name

    registry = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in REFUSED_MODEL_NAMES:
        with pytest.raises(ConfigError, match="model_name must"):
            JobConfig(model_name=name)
        with pytest.raises(MlflowException):
            registry.create_registered_model(name)
    for name in ACCEPTED_MODEL_NAMES:
        JobConfig(model_name=name)
        registry.create_registered_model(name)
        registry.create_registered_model(lock_name(name))  # promotions lock it by this name


def test_a_model_name_leaves_room_for_its_promotion_lock_in_the_registrys_256_characters():
    from training.promotion_lock import lock_name

    longest = "g" * MODEL_NAME_MAX
    assert len(lock_name(JobConfig(model_name=longest).model_name)) == 256
    with pytest.raises(ConfigError, match=f"model_name must be a registered model name of at most "
                                          f"{MODEL_NAME_MAX} characters"):
        JobConfig(model_name=longest + "g")


# ---- one file to add a parameter: every entry point derives it from the config or fails naming it ----

CLUSTER_SETTINGS = ("devices",)  # the pipeline takes these from ClusterSettings, not as parameters


def interface_gaps(train=TrainConfig, job=JobConfig) -> list[str]:
    """What the MLproject, the training component and the pipeline lack or disagree on, one line each."""
    from components.gan import train_and_evaluate_trial, train_gan
    from infra.mlproject import render
    from pipelines.mnist_gan import build

    gaps = [] if (ROOT / "MLproject").read_text() == render(train, job) else [
        "MLproject differs from training/config.py: run `make mlproject`"]
    kfp_types = {"int": "Integer", "float": "Float", "str": "String", "bool": "Boolean"}
    pipeline = build().component_spec.inputs
    trained = [p for p in params(train) if p.name != "data"]
    for where, inputs, expected in (
            ("components/gan.py train_gan", train_gan.component_spec.inputs, trained),
            ("components/gan.py train_and_evaluate_trial", train_and_evaluate_trial.component_spec.inputs,
             trained),
            ("pipelines/mnist_gan.py mnist_gan", pipeline,
             [p for p in params(train) + params(job) if p.name not in CLUSTER_SETTINGS])):
        for p in expected:
            if p.name not in inputs:
                gaps.append(f"{where} lacks `{p.name}: {p.type} = {p.default!r}`")
            elif inputs[p.name].default != p.default or inputs[p.name].type != kfp_types[p.type]:
                gaps.append(f"{where}: {p.name} is {inputs[p.name].type} = {inputs[p.name].default!r}, "
                            f"the config says {p.type} = {p.default!r}")
    return gaps


def test_every_entry_point_has_every_parameter_with_the_configs_default():
    assert interface_gaps() == []


def test_a_new_hyperparameter_reaches_the_cli_and_fails_loudly_where_it_is_missing():
    @dataclasses.dataclass(frozen=True)
    class WithMomentum(TrainConfig):
        momentum: float = dataclasses.field(default=0.9, metadata={"help": "a new knob", "ge": 0.0})

    gaps = interface_gaps(WithMomentum)
    assert gaps[0].startswith("MLproject differs from training/config.py")
    assert "components/gan.py train_gan lacks `momentum: float = 0.9`" in gaps
    assert "components/gan.py train_and_evaluate_trial lacks `momentum: float = 0.9`" in gaps
    assert "pipelines/mnist_gan.py mnist_gan lacks `momentum: float = 0.9`" in gaps
    parser = argparse.ArgumentParser()
    for p in params(WithMomentum):
        add_flag(parser, p)
    assert parser.parse_args(["--momentum", "0.5"]).momentum == 0.5  # the CLI derives its flags
    with pytest.raises(SystemExit):
        parser.parse_args(["--momentum", "-1"])


def test_text_becomes_a_value_in_one_place():
    for raw, value in (("true", True), ("Yes", True), ("1", True), ("off", False), ("FALSE", False)):
        assert parse(param(TrainConfig, "resume"), raw) is value
    for raw in ("maybe", "", "2", "truee"):
        with pytest.raises(ConfigError, match="resume must be true or false"):
            parse(param(TrainConfig, "resume"), raw)
    assert (TrainConfig.from_text({"epochs": "3", "resume": "yes"}).replace()
            == TrainConfig(epochs=3, resume=True))
    with pytest.raises(ConfigError, match="min_fid_gain must be in"):
        JobConfig.from_text({"min_fid_gain": "-1"})
