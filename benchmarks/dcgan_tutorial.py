"""The TensorFlow DCGAN tutorial's MNIST recipe (tensorflow.org/tutorials/generative/dcgan), re-implemented
for Keras 3 on the TensorFlow backend: the comparison point of the quality-per-minute benchmark.

Its generator (Dense 7x7x256 -> three Conv2DTranspose with BatchNorm) and discriminator (two strided
convolutions -> a logit), BCE from logits, G and D updated together from one forward pass in one
tf.function, Adam(1e-4) each, batch 256, z ~ N(0, 1) of 100 dimensions, a shuffled tf.data pipeline.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

NOISE_DIM = 100
BATCH_SIZE = 256


def make_generator_model() -> keras.Model:
    return keras.Sequential([
        keras.Input((NOISE_DIM,)),
        layers.Dense(7 * 7 * 256, use_bias=False),
        layers.BatchNormalization(),
        layers.LeakyReLU(),
        layers.Reshape((7, 7, 256)),
        layers.Conv2DTranspose(128, (5, 5), strides=(1, 1), padding="same", use_bias=False),
        layers.BatchNormalization(),
        layers.LeakyReLU(),
        layers.Conv2DTranspose(64, (5, 5), strides=(2, 2), padding="same", use_bias=False),
        layers.BatchNormalization(),
        layers.LeakyReLU(),
        layers.Conv2DTranspose(1, (5, 5), strides=(2, 2), padding="same", use_bias=False, activation="tanh"),
    ])


def make_discriminator_model() -> keras.Model:
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(64, (5, 5), strides=(2, 2), padding="same"),
        layers.LeakyReLU(),
        layers.Dropout(0.3),
        layers.Conv2D(128, (5, 5), strides=(2, 2), padding="same"),
        layers.LeakyReLU(),
        layers.Dropout(0.3),
        layers.Flatten(),
        layers.Dense(1),
    ])


class TutorialDcgan:
    def __init__(self, images: np.ndarray, seed: int = 0):
        """images: (N, 28, 28, 1) float32 in [-1, 1], as the tutorial's (x - 127.5) / 127.5."""
        keras.utils.set_random_seed(seed)
        self.generator = make_generator_model()
        self.discriminator = make_discriminator_model()
        self.cross_entropy = keras.losses.BinaryCrossentropy(from_logits=True)
        self.generator_optimizer = keras.optimizers.Adam(1e-4)
        self.discriminator_optimizer = keras.optimizers.Adam(1e-4)
        dataset = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images)).batch(BATCH_SIZE)
        self.batches = iter(dataset.repeat())
        self.train_step = tf.function(self._train_step)
        self.images_seen, self.num_images = 0, len(images)

    def discriminator_loss(self, real_output, fake_output):
        real_loss = self.cross_entropy(tf.ones_like(real_output), real_output)
        fake_loss = self.cross_entropy(tf.zeros_like(fake_output), fake_output)
        return real_loss + fake_loss

    def generator_loss(self, fake_output):
        return self.cross_entropy(tf.ones_like(fake_output), fake_output)

    def _train_step(self, images):
        noise = tf.random.normal([BATCH_SIZE, NOISE_DIM])
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            generated_images = self.generator(noise, training=True)
            real_output = self.discriminator(images, training=True)
            fake_output = self.discriminator(generated_images, training=True)
            gen_loss = self.generator_loss(fake_output)
            disc_loss = self.discriminator_loss(real_output, fake_output)
        gradients_of_generator = gen_tape.gradient(gen_loss, self.generator.trainable_variables)
        gradients_of_discriminator = disc_tape.gradient(disc_loss, self.discriminator.trainable_variables)
        self.generator_optimizer.apply_gradients(
            zip(gradients_of_generator, self.generator.trainable_variables))
        self.discriminator_optimizer.apply_gradients(
            zip(gradients_of_discriminator, self.discriminator.trainable_variables))
        return gen_loss, disc_loss

    def step(self) -> None:
        """One tutorial train_step on the next batch; waits for it."""
        batch = next(self.batches)
        gen_loss, _ = self.train_step(batch)
        float(gen_loss)
        self.images_seen += int(batch.shape[0])

    def samples(self, n: int, seed: int = 0) -> np.ndarray:
        """(n, 28, 28, 1) float32 in [-1, 1] from z ~ N(0, 1), G in inference mode."""
        z = np.random.default_rng(seed).standard_normal((n, NOISE_DIM)).astype(np.float32)
        return np.concatenate([keras.ops.convert_to_numpy(self.generator(z[i:i + 1000], training=False))
                               for i in range(0, n, 1000)])
