"""The seed post's training loop, ported to Keras 3 as faithfully as it runs: the baseline of the benchmarks.

It deliberately shares nothing with `training/`: its own G and D (the post's, channels_last), Keras'
Adam, `D.train_on_batch` on [real; G.predict(z)] with labels 0.9 / 0, `D.trainable` toggled, and
n_iter_G `train_on_batch` calls on the combined model G -> D. The only changes from the post are the
ones Keras 3 forces (channels_last, `learning_rate=` for `lr=`, `keras.layers` for `keras.layers.core`)
and `verbose=0` on `G.predict` (its progress bar would only slow the baseline down further).
`widths` shrinks the layers for the `small` preset, exactly as the project's presets do.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import initializers
from keras.layers import (
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPooling2D,
    Reshape,
    UpSampling2D,
)
from keras.models import Sequential
from keras.optimizers import Adam

# (G dense, G 7x7 channels, G conv, D conv1, D conv2, D dense), as the project's presets
WIDTHS = {"seed": (512, 128, 64, 256, 512, 256), "small": (256, 64, 32, 32, 64, 128),
          "tiny": (32, 8, 8, 8, 16, 16)}


class SeedGan:
    def __init__(self, images: np.ndarray, preset: str = "seed", batch_size: int = 128,
                 learning_rate: float = 0.0002, z_input_dim: int = 100, n_iter_d: int = 1,
                 n_iter_g: int = 5):
        """images: (N, 28, 28, 1) float32 in [-1, 1] (the post's x_data, channels_last)."""
        self.x_data, self.batch_size, self.z_input_dim = images, batch_size, z_input_dim
        self.learning_rate, self.n_iter_D, self.n_iter_G = learning_rate, n_iter_d, n_iter_g
        self.widths = WIDTHS[preset]
        self.D = self.discriminator()
        self.G = self.generator()
        self.GD = self.combined()

    def discriminator(self):
        conv1, conv2, hidden = self.widths[3:]
        D = Sequential()
        D.add(keras.Input((28, 28, 1)))
        D.add(Conv2D(conv1, (5, 5), padding="same",
                     kernel_initializer=initializers.RandomNormal(stddev=0.02)))
        D.add(LeakyReLU(0.2))
        D.add(MaxPooling2D(pool_size=(2, 2), strides=2))
        D.add(Dropout(0.3))
        D.add(Conv2D(conv2, (5, 5), padding="same"))
        D.add(LeakyReLU(0.2))
        D.add(MaxPooling2D(pool_size=(2, 2), strides=2))
        D.add(Dropout(0.3))
        D.add(Flatten())
        D.add(Dense(hidden))
        D.add(LeakyReLU(0.2))
        D.add(Dropout(0.3))
        D.add(Dense(1, activation="sigmoid"))
        D.compile(loss="binary_crossentropy", optimizer=Adam(learning_rate=self.learning_rate, beta_1=0.5),
                  metrics=["accuracy"])
        return D

    def generator(self):
        hidden, channels, conv = self.widths[:3]
        G = Sequential()
        G.add(keras.Input((self.z_input_dim,)))
        G.add(Dense(hidden))
        G.add(LeakyReLU(0.2))
        G.add(Dense(channels * 7 * 7))
        G.add(LeakyReLU(0.2))
        G.add(BatchNormalization())
        G.add(Reshape((7, 7, channels)))
        G.add(UpSampling2D(size=(2, 2)))
        G.add(Conv2D(conv, (5, 5), padding="same", activation="tanh"))
        G.add(UpSampling2D(size=(2, 2)))
        G.add(Conv2D(1, (5, 5), padding="same", activation="tanh"))
        G.compile(loss="binary_crossentropy", optimizer=Adam(learning_rate=self.learning_rate, beta_1=0.5),
                  metrics=["accuracy"])
        return G

    def combined(self):
        G, D = self.G, self.D
        D.trainable = False
        GD = Sequential()
        GD.add(G)
        GD.add(D)
        GD.compile(loss="binary_crossentropy", optimizer=Adam(learning_rate=self.learning_rate, beta_1=0.5),
                   metrics=["accuracy"])
        D.trainable = True
        return GD

    def get_real_sample(self):
        return self.x_data[np.random.randint(0, self.x_data.shape[0], size=self.batch_size)]

    def get_z_sample(self, sample_size):
        return np.random.uniform(-1.0, 1.0, (sample_size, self.z_input_dim))

    def train_D(self):
        real = self.get_real_sample()
        z = self.get_z_sample(self.batch_size)
        generated_images = self.G.predict(z, verbose=0)
        x = np.concatenate((real, generated_images), axis=0)
        y = np.array([0.9] * self.batch_size + [0] * self.batch_size)
        self.D.trainable = True
        return self.D.train_on_batch(x, y)

    def train_G(self):
        z = self.get_z_sample(self.batch_size)
        y = np.array([1] * self.batch_size)
        self.D.trainable = False
        return self.GD.train_on_batch(z, y)

    def step(self):
        """One of the post's "epochs": n_iter_D D steps, then n_iter_G G steps; returns (d_loss, g_loss)."""
        dloss = gloss = 0
        for _ in range(self.n_iter_D):
            dloss = self.train_D()
        for _ in range(self.n_iter_G):
            gloss = self.train_G()
        return dloss, gloss
