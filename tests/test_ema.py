"""The moving average of G's weights: its formula, its place in the step, and that 0 turns it off."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training import ema
from training.config import TrainConfig
from training.data import to_unit_range
from training.loop import build_gan, train


def test_update_matches_its_formula():
    weights = [np.full((2, 3), 1.0, "float32")], [np.array([4.0, 8.0], "float32")]
    average = ema.init([np.zeros((2, 3), "float32")], [np.zeros(2, "float32")])
    for t, decay in enumerate([0.1, 2 / 11, 3 / 12]):  # the warm-up: (1 + t) / (10 + t) below 0.999
        expected_trainable = decay * np.asarray(average["trainable"][0]) + (1 - decay) * 1.0
        expected_non_trainable = decay * np.asarray(average["non_trainable"][0]) + (1 - decay) * weights[1][0]
        average = ema.update(average, *weights, decay=0.999)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(average["trainable"][0]), expected_trainable,
                                   rtol=1e-6)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(average["non_trainable"][0]),
                                   expected_non_trainable, rtol=1e-6)
        assert float(average["t"][0]) == t + 1
    assert float(ema.decay_at(0.999, 10_000.0)) == pytest.approx(0.999)
    assert float(ema.decay_at(0.5, 0.0)) == pytest.approx(0.1), "the warm-up never exceeds decay's own"
    assert float(ema.decay_at(0.5, 100.0)) == pytest.approx(0.5)


def test_a_training_step_moves_the_average_towards_the_new_weights():
    gan = build_gan(TrainConfig(preset="tiny", batch_size=8, ema_decay=0.9))
    state = gan.initial_state()
    before = keras.tree.map_structure(keras.ops.convert_to_numpy, state["g_ema"])
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (1, 8, 28, 28, 1)).astype("float32")
    z_d, z_g = (rng.uniform(-1, 1, (n, 8, 100)).astype("float32") for n in (1, 5))
    after, _ = gan.update(state, real, z_d, z_g)

    decay = 0.1  # the first update's warm-up decay, min(0.9, 1 / 10)
    for key in ("trainable", "non_trainable"):
        for old, new_weight, averaged in zip(before[key], after[f"g_{key}"], after["g_ema"][key],
                                             strict=True):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(averaged),
                                       decay * old + (1 - decay) * keras.ops.convert_to_numpy(new_weight),
                                       rtol=1e-5, atol=1e-7)
    assert float(after["g_ema"]["t"][0]) == 1.0
    trained, averaged = gan.generator_weights(after, averaged=False), gan.generator_weights(after)
    assert not np.allclose(keras.ops.convert_to_numpy(trained[0][0]),
                           keras.ops.convert_to_numpy(averaged[0][0]))


@pytest.mark.slow
def test_ema_decay_zero_trains_exactly_as_without_an_average(tmp_path, mnist_path):
    with np.load(mnist_path) as npz:
        images = to_unit_range(npz["x_train"][:128])
    runs = {}
    for decay in (0.0, 0.999):
        config = TrainConfig(preset="tiny", batch_size=64, epochs=1, eval_every=0, ema_decay=decay,
                             checkpoint_dir=str(tmp_path / f"ema-{decay}"))
        runs[decay] = train(config, images)
    off, on = runs[0.0], runs[0.999]
    assert sorted(off.generators) == ["generator"] and off.selected == "generator"
    assert sorted(on.generators) == ["generator", "generator_ema"] and on.selected == "generator_ema"
    assert "g_ema" not in build_gan(TrainConfig(preset="tiny", ema_decay=0.0)).initial_state()
    # The average never feeds back into training: G and D are bit for bit those of a run without it.
    for a, b in zip(off.gan.generator.get_weights() + off.gan.discriminator.get_weights(),
                    on.gan.generator.get_weights() + on.gan.discriminator.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
