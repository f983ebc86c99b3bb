"""The seed preset is the post's G and D exactly: layer stack, shapes and parameter counts."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.config import PRESETS
from training.models import PRESET_WIDTHS, build_discriminator, build_generator, build_models

# (layer class, output shape without batch, parameter count), read off the post's Keras code.
SEED_GENERATOR = [
    ("Dense", (512,), 100 * 512 + 512),
    ("LeakyReLU", (512,), 0),
    ("Dense", (6272,), 512 * 6272 + 6272),
    ("LeakyReLU", (6272,), 0),
    ("BatchNormalization", (6272,), 4 * 6272),
    ("Reshape", (7, 7, 128), 0),
    ("UpSampling2D", (14, 14, 128), 0),
    ("Conv2D", (14, 14, 64), 5 * 5 * 128 * 64 + 64),
    ("UpSampling2D", (28, 28, 64), 0),
    ("Conv2D", (28, 28, 1), 5 * 5 * 64 + 1),
]
SEED_DISCRIMINATOR = [
    ("Conv2D", (28, 28, 256), 5 * 5 * 256 + 256),
    ("LeakyReLU", (28, 28, 256), 0),
    ("MaxPooling2D", (14, 14, 256), 0),
    ("Dropout", (14, 14, 256), 0),
    ("Conv2D", (14, 14, 512), 5 * 5 * 256 * 512 + 512),
    ("LeakyReLU", (14, 14, 512), 0),
    ("MaxPooling2D", (7, 7, 512), 0),
    ("Dropout", (7, 7, 512), 0),
    ("Flatten", (25088,), 0),
    ("Dense", (256,), 25088 * 256 + 256),
    ("LeakyReLU", (256,), 0),
    ("Dropout", (256,), 0),
    ("Dense", (1,), 257),
]


def _stack(model: keras.Model) -> list[tuple[str, tuple, int]]:
    return [(type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params())
            for layer in model.layers]


def test_seed_generator_is_the_posts():
    generator = build_generator(PRESET_WIDTHS["seed"], z_dim=100)
    assert _stack(generator) == SEED_GENERATOR
    assert generator.count_params() == 3_500_801
    assert generator.layers[-1].activation.__name__ == "tanh"
    assert generator.layers[-3].activation.__name__ == "tanh"


def test_seed_discriminator_is_the_posts():
    discriminator = build_discriminator(PRESET_WIDTHS["seed"])
    assert _stack(discriminator) == SEED_DISCRIMINATOR
    assert discriminator.count_params() == 9_707_009
    assert [layer.rate for layer in discriminator.layers if hasattr(layer, "rate")] == [0.3] * 3
    assert discriminator.layers[0].kernel_initializer.stddev == 0.02
    assert discriminator.layers[-1].activation.__name__ == "sigmoid"


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_map_z_to_images_in_range_and_back_to_probabilities(preset):
    generator, discriminator = build_models(preset, z_dim=100)
    z = np.random.default_rng(0).uniform(-1, 1, (4, 100)).astype("float32")
    fake = keras.ops.convert_to_numpy(generator(z, training=False))
    assert fake.shape == (4, 28, 28, 1) and np.all(np.abs(fake) <= 1.0)
    p = keras.ops.convert_to_numpy(discriminator(fake, training=False))
    assert p.shape == (4, 1) and np.all((p >= 0) & (p <= 1))


def test_smaller_presets_are_smaller():
    sizes = {name: build_discriminator(w).count_params() + build_generator(w, 100).count_params()
             for name, w in PRESET_WIDTHS.items()}
    assert sizes["tiny"] < sizes["small"] < sizes["seed"]
