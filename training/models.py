"""The generators and discriminators of the presets, in Keras 3 layers only (channels_last).

Preset `seed` is the post's architecture exactly; `small` and `tiny` keep its layer stack and shrink
its widths (`tiny` is for unit tests). Preset `cpu` is ours: a DCGAN-style pair of strided 4x4
convolutions each way, no pooling, narrow enough for ~800 images/s on 2 AVX2 cores; its recipe
(training.config.PRESET_RECIPES) and widths won a sweep at a fixed time budget (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

IMAGE_SHAPE = (28, 28, 1)


@dataclass(frozen=True)
class Widths:
    g_hidden: int  # first Dense of G
    g_channels: int  # channels of the 7x7 feature map G reshapes to
    g_conv: int  # filters of G's first 5x5 convolution
    d_conv1: int
    d_conv2: int
    d_hidden: int
    dropout: float = 0.3


PRESET_WIDTHS = {
    "seed": Widths(g_hidden=512, g_channels=128, g_conv=64, d_conv1=256, d_conv2=512, d_hidden=256),
    "small": Widths(g_hidden=256, g_channels=64, g_conv=32, d_conv1=32, d_conv2=64, d_hidden=128),
    "tiny": Widths(g_hidden=32, g_channels=8, g_conv=8, d_conv1=8, d_conv2=16, d_hidden=16),
}


@dataclass(frozen=True)
class StridedWidths:
    g_channels: int  # of the 7x7 feature map G starts from
    g_conv: int  # of the 14x14 feature map
    d_conv1: int  # of D's 14x14 feature map
    d_conv2: int  # of D's 7x7 feature map


CPU_WIDTHS = StridedWidths(g_channels=64, g_conv=32, d_conv1=32, d_conv2=64)


def build_models(preset: str, z_dim: int) -> tuple[keras.Model, keras.Model]:
    """(G, D) of a preset (training.config.PRESETS)."""
    if preset == "cpu":
        return build_strided_generator(CPU_WIDTHS, z_dim), build_strided_discriminator(CPU_WIDTHS)
    widths = PRESET_WIDTHS[preset]
    return build_generator(widths, z_dim), build_discriminator(widths)


def build_generator(widths: Widths, z_dim: int) -> keras.Model:
    """G: z (B, z_dim) in [-1, 1] -> images (B, 28, 28, 1) in [-1, 1]."""
    return keras.Sequential(
        [
            keras.Input((z_dim,), name="z"),
            layers.Dense(widths.g_hidden),
            layers.LeakyReLU(0.2),
            layers.Dense(widths.g_channels * 7 * 7),
            layers.LeakyReLU(0.2),
            layers.BatchNormalization(),
            layers.Reshape((7, 7, widths.g_channels)),
            layers.UpSampling2D(2),
            layers.Conv2D(widths.g_conv, 5, padding="same", activation="tanh"),
            layers.UpSampling2D(2),
            layers.Conv2D(1, 5, padding="same", activation="tanh"),
        ],
        name="generator",
    )


def build_discriminator(widths: Widths) -> keras.Model:
    """D: images (B, 28, 28, 1) in [-1, 1] -> probability of being real (B, 1), float32."""
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE, name="image"),
            layers.Conv2D(widths.d_conv1, 5, padding="same",
                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.02)),
            layers.LeakyReLU(0.2),
            layers.MaxPooling2D(2, strides=2),
            layers.Dropout(widths.dropout),
            layers.Conv2D(widths.d_conv2, 5, padding="same"),
            layers.LeakyReLU(0.2),
            layers.MaxPooling2D(2, strides=2),
            layers.Dropout(widths.dropout),
            layers.Flatten(),
            layers.Dense(widths.d_hidden),
            layers.LeakyReLU(0.2),
            layers.Dropout(widths.dropout),
            # float32 output keeps the cross-entropy exact under mixed precision.
            layers.Dense(1, activation="sigmoid", dtype="float32"),
        ],
        name="discriminator",
    )


def build_strided_generator(widths: StridedWidths, z_dim: int) -> keras.Model:
    """Preset cpu's G: z (B, z_dim) -> 7x7 -> 14x14 -> 28x28 by transposed 4x4 convolutions of stride 2;
    batch statistics that follow training closely (momentum 0.9), since D's fakes use the moving ones."""
    return keras.Sequential(
        [
            keras.Input((z_dim,), name="z"),
            layers.Dense(widths.g_channels * 7 * 7, use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Reshape((7, 7, widths.g_channels)),
            layers.Conv2DTranspose(widths.g_conv, 4, strides=2, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh"),
        ],
        name="generator",
    )


def build_strided_discriminator(widths: StridedWidths) -> keras.Model:
    """Preset cpu's D: images (B, 28, 28, 1) -> 14x14 -> 7x7 by 4x4 convolutions of stride 2 -> P(real)."""
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE, name="image"),
            layers.Conv2D(widths.d_conv1, 4, strides=2, padding="same"),
            layers.LeakyReLU(0.2),
            layers.Conv2D(widths.d_conv2, 4, strides=2, padding="same"),
            layers.LeakyReLU(0.2),
            layers.Flatten(),
            layers.Dense(1, activation="sigmoid", dtype="float32"),
        ],
        name="discriminator",
    )
