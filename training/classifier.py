"""The MNIST classifier that judges generated digits: its penultimate features and class probabilities
feed the sample metrics (training/evaluation.py). Trained once per (training-data digest,
CLASSIFIER_VERSION) and cached, so two
evaluations that are compared always use the same weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.data import CACHE_DIR, Mnist, to_unit_range

# Bump when the architecture or training recipe below changes: it keys the cache.
CLASSIFIER_VERSION = "cnn-v1"
FEATURE_LAYER = "features"
MIN_TEST_ACCURACY = 0.99


class ClassifierError(RuntimeError):
    """The classifier could not reach the accuracy that makes its features trustworthy."""


@dataclass
class MnistClassifier:
    """features: (N, 28, 28, 1) in [-1, 1] -> (N, 128); probabilities -> (N, 10)."""

    model: keras.Model
    key: str
    test_accuracy: float

    def __post_init__(self) -> None:
        self._both = keras.Model(self.model.inputs[0],
                                 [self.model.get_layer(FEATURE_LAYER).output, self.model.outputs[0]])

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the classifier's weights: two classifiers with the same fingerprint score alike."""
        digest = hashlib.sha256()
        for weight in self.model.get_weights():
            digest.update(np.ascontiguousarray(weight).tobytes())
        return digest.hexdigest()

    def features_and_probabilities(self, images: np.ndarray, batch_size: int = 1000):
        feats, probs = [], []
        for start in range(0, len(images), batch_size):
            f, p = self._both(images[start:start + batch_size], training=False)
            feats.append(keras.ops.convert_to_numpy(f))
            probs.append(keras.ops.convert_to_numpy(p))
        return np.concatenate(feats).astype(np.float64), np.concatenate(probs).astype(np.float64)


def build_classifier() -> keras.Model:
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.25),
        layers.Dense(128, activation="relu", name=FEATURE_LAYER),
        layers.Dropout(0.25),
        layers.Dense(10, activation="softmax", dtype="float32"),
    ], name="mnist_evaluator")


def load_or_train(mnist: Mnist, cache_dir: Path | None = None, epochs: int = 3) -> MnistClassifier:
    """The cached classifier for this MNIST file, trained (seeded, ~1 minute on 2 CPU cores) if absent."""
    key = f"{CLASSIFIER_VERSION}-{mnist.sha256[:16]}"
    directory = (cache_dir or CACHE_DIR / "evaluator") / key
    if (directory / "meta.json").is_file():
        return load(directory)
    print(f"evaluator: training the MNIST classifier that judges samples ({epochs} epochs, once per MNIST "
          "file)", flush=True)
    model, accuracy = _train(mnist, epochs)
    if accuracy < MIN_TEST_ACCURACY:
        raise ClassifierError(f"the MNIST classifier reached {accuracy:.4f} test accuracy, below "
                              f"{MIN_TEST_ACCURACY}")
    trained = MnistClassifier(model, key, accuracy)
    save(trained, directory)
    print(f"evaluator: test accuracy {accuracy:.2%}, cached in {directory}", flush=True)
    return trained


def save(classifier: MnistClassifier, directory: Path) -> None:
    """classifier.keras, then meta.json: a folder counts as complete once meta.json exists."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        classifier.model.save(Path(tmp) / "classifier.keras")
        os.replace(Path(tmp) / "classifier.keras", directory / "classifier.keras")
        meta = Path(tmp) / "meta.json"
        meta.write_text(json.dumps({"test_accuracy": classifier.test_accuracy, "key": classifier.key}))
        os.replace(meta, directory / "meta.json")


def load(directory: Path) -> MnistClassifier:
    meta = json.loads((directory / "meta.json").read_text())
    model = keras.saving.load_model(directory / "classifier.keras", safe_mode=True)
    return MnistClassifier(model, meta["key"], meta["test_accuracy"])


def _train(mnist: Mnist, epochs: int) -> tuple[keras.Model, float]:
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")  # the classifier is the same on every device
    model = build_classifier()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                       metrics=["accuracy"])
    x_train, x_test = to_unit_range(mnist.x_train), to_unit_range(mnist.x_test)
    model.fit(x_train, mnist.y_train.astype("int32"), batch_size=128, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(x_test, mnist.y_test.astype("int32"), batch_size=1000, verbose=0)
    return model, float(accuracy)
