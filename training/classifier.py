"""The MNIST classifier that judges generated digits: its penultimate features and class probabilities
feed the sample metrics (training/evaluation.py). Trained once per training data and training code, and
cached, so two evaluations that are compared always use the same weights.

The cache (EVALUATOR_CACHE) holds one folder per key, `cnn-<code digest>-<data digest>`, complete once
its meta.json exists (written last, atomically). A process that finds it complete only reads; one that
does not takes `<key>.lock` beside it, so that another process asking at the same time waits and then
loads what the first saved. A cache that cannot be written costs a training, never the result.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.data import EVALUATOR_CACHE, Mnist, to_unit_range

EPOCHS = 2
PEAK_LEARNING_RATE = 5e-3  # Adam's rate at the start, decayed to 0 over the epochs (cosine)
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
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.25),
        layers.Dense(128, activation="relu", name=FEATURE_LAYER),
        layers.Dropout(0.25),
        layers.Dense(10, activation="softmax", dtype="float32"),
    ], name="mnist_evaluator")


def cache_key(data_sha256: str, epochs: int = EPOCHS, code: str | None = None) -> str:
    """`cnn-<12 hex>-<16 hex>`: a digest of the code that decides the weights (`code`, by default
    TRAINING_CODE) and of what else does (epochs, learning rate, the feature layer's name), then the
    data's digest."""
    recipe = json.dumps({"code": TRAINING_CODE if code is None else code, "epochs": epochs,
                         "peak_learning_rate": PEAK_LEARNING_RATE, "feature_layer": FEATURE_LAYER},
                        sort_keys=True)
    return f"cnn-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}-{data_sha256[:16]}"


def load_or_train(mnist: Mnist, cache_dir: Path | None = None, epochs: int = EPOCHS) -> MnistClassifier:
    """The cached classifier for this MNIST file, trained (seeded, under a minute on 2 CPU cores) if absent.
    While another process trains the same one, this one waits for it; a cache that cannot be written
    (read-only, no permission) means training in memory."""
    key = cache_key(mnist.sha256, epochs)
    directory = (cache_dir or EVALUATOR_CACHE) / key
    if _complete(directory):
        return _accepted(load(directory))
    lock_path = directory.with_name(f"{key}.lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as err:
        print(f"evaluator: the cache {lock_path.parent} cannot be written ({err.strerror or err}), so the "
              "classifier is trained in memory and not kept", flush=True)
        return _trained(mnist, key, epochs)
    try:
        _lock(lock, lock_path)
        if _complete(directory):  # saved by the process this one waited for
            return _accepted(load(directory))
        trained = _trained(mnist, key, epochs)
        try:
            save(trained, directory)
        except OSError as err:
            print(f"evaluator: the classifier could not be cached in {directory} ({err})", flush=True)
        else:
            print(f"evaluator: test accuracy {trained.test_accuracy:.2%}, cached in {directory}", flush=True)
        return trained
    finally:
        os.close(lock)  # which releases the lock


def save(classifier: MnistClassifier, directory: Path) -> None:
    """classifier.keras, then meta.json: a folder counts as complete once meta.json exists."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").unlink(missing_ok=True)  # never the new weights with the old meta.json
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        classifier.model.save(Path(tmp) / "classifier.keras")
        os.replace(Path(tmp) / "classifier.keras", directory / "classifier.keras")
        meta = Path(tmp) / "meta.json"
        meta.write_text(json.dumps({"key": classifier.key, "test_accuracy": classifier.test_accuracy,
                                    "fingerprint": classifier.fingerprint}))
        os.replace(meta, directory / "meta.json")


def load(directory: Path) -> MnistClassifier:
    """The classifier saved in `directory`; ClassifierError if its weights are not the ones meta.json
    names (folders saved before meta.json named them are taken as they are)."""
    meta = json.loads((directory / "meta.json").read_text())
    model = keras.saving.load_model(directory / "classifier.keras", safe_mode=True)
    classifier = MnistClassifier(model, meta["key"], meta["test_accuracy"])
    if meta.get("fingerprint", classifier.fingerprint) != classifier.fingerprint:
        raise ClassifierError(f"{directory}: classifier.keras is not the classifier meta.json describes; "
                              "delete the folder to train it again")
    return classifier


def _complete(directory: Path) -> bool:
    """Whether `directory` holds a whole saved classifier (meta.json is written last) that this process
    may read."""
    try:
        return (directory / "meta.json").is_file()
    except PermissionError:  # another user's private cache, mounted into a container
        return False


def _lock(fd: int, path: Path) -> None:
    """Take the exclusive lock on the open lock file `path`, waiting (and saying so) while another
    process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"evaluator: waiting for another process that is training this classifier ({path})", flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)


def _trained(mnist: Mnist, key: str, epochs: int) -> MnistClassifier:
    print(f"evaluator: training the MNIST classifier that judges samples ({epochs} epochs, once per MNIST "
          "file and classifier code)", flush=True)
    model, accuracy = train(mnist, epochs)
    return _accepted(MnistClassifier(model, key, accuracy))


def _accepted(classifier: MnistClassifier) -> MnistClassifier:
    if classifier.test_accuracy < MIN_TEST_ACCURACY:
        raise ClassifierError(f"the MNIST classifier {classifier.key} reached {classifier.test_accuracy:.4f} "
                              f"test accuracy, below {MIN_TEST_ACCURACY}")
    return classifier


def train(mnist: Mnist, epochs: int = EPOCHS, build=build_classifier,
          peak_learning_rate: float = PEAK_LEARNING_RATE, decay: bool = True) -> tuple[keras.Model, float]:
    """A classifier trained afresh (seeded, not cached) and its accuracy on MNIST's test split. `build`,
    `peak_learning_rate` and `decay` (off: a constant rate) are for benchmarks that compare recipes; the
    project's judge takes the defaults."""
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")  # the classifier is the same on every device
    model = build()
    batch_size = 128
    steps = epochs * -(-len(mnist.x_train) // batch_size)
    schedule = (keras.optimizers.schedules.CosineDecay(peak_learning_rate, steps) if decay
                else peak_learning_rate)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x_train, x_test = to_unit_range(mnist.x_train), to_unit_range(mnist.x_test)
    model.fit(x_train, mnist.y_train.astype("int32"), batch_size=batch_size, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(x_test, mnist.y_test.astype("int32"), batch_size=1000, verbose=0)
    return model, float(accuracy)


# What decides the classifier's weights: its architecture, its training and the scaling of its inputs.
# Read once, on import: a change to any of them is a new cache key, and so a new training.
TRAINING_CODE = "".join(inspect.getsource(function) for function in (build_classifier, train, to_unit_range))
