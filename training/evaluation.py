"""Sample evaluation of a generator against MNIST's test split, beside the real-data reference.

The reference scores N real training images exactly as the generator's N samples are scored: it is
what a perfect generator would reach with this evaluator and this N.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

import keras
import numpy as np

from training import metrics, plots
from training.classifier import MnistClassifier
from training.data import CACHE_DIR, Mnist, to_unit_range
from training.sampling import latents, render


@dataclass
class Evaluation:
    metrics: dict[str, float]  # the generator's, including kid_stderr
    reference: dict[str, float]  # real training images scored the same way
    histogram: list[int]
    reference_histogram: list[int]
    samples: np.ndarray = field(repr=False)  # (N, 28, 28) uint8
    sample_probabilities: np.ndarray = field(repr=False)  # (N, 10)


def score(classifier: MnistClassifier, fake: np.ndarray,
          real_features: np.ndarray) -> tuple[dict, list[int], np.ndarray]:
    """Metrics of (N, 28, 28, 1) images in [-1, 1] against the real test features."""
    features, probabilities = classifier.features_and_probabilities(fake)
    kid, kid_stderr = metrics.kernel_inception_distance(real_features, features)
    precision, recall = metrics.precision_recall(real_features, features, k=3)
    coverage = metrics.class_coverage(probabilities)
    values = {
        "fid": metrics.frechet_distance(real_features, features),
        "kid": kid, "kid_stderr": kid_stderr,
        "classifier_score": metrics.classifier_score(probabilities),
        "precision": precision, "recall": recall,
        "classes_covered": float(coverage["classes_covered"]),
        "kl_to_uniform": coverage["kl_to_uniform"],
    }
    return values, coverage["histogram"], probabilities


def evaluate(generator: keras.Model, mnist: Mnist, classifier: MnistClassifier, n: int,
             seed: int = 0) -> Evaluation:
    """Score n samples of `generator`, and n real training images as the reference, against the test split."""
    if n < 10:
        raise ValueError(f"n must be >= 10 samples (got {n})")
    real_features, reference, reference_histogram = real_reference(classifier, mnist, n, seed)
    fake = render(generator, latents(n, generator.input_shape[-1], seed))
    values, histogram, probabilities = score(classifier, fake, real_features)
    return Evaluation(values, reference, histogram, reference_histogram, plots.to_uint8(fake),
                      probabilities)


class QualityProbe:
    """Scores a generator's weights during training (the FID curve): always the same n latents, against
    the test split's features, with FID, classifier score and classes covered only (the cheap metrics).
    FID grows as n shrinks, so the curve's values compare with each other, not with a 10,000-sample
    evaluation."""

    def __init__(self, classifier: MnistClassifier, mnist: Mnist, n: int, seed: int = 0):
        self.classifier, self.n, self.seed = classifier, n, seed
        real_features, self.reference, _ = real_reference(classifier, mnist, n, seed)
        self.real = metrics.gaussian(real_features)

    def __call__(self, generator: keras.Model, weights: tuple[list, list]) -> dict[str, float]:
        """Scores of `generator` with `weights` (trainable, non-trainable) in place of its own."""
        z = latents(self.n, generator.input_shape[-1], seed=(self.seed, 2**31 + 1))
        features, probabilities = self.classifier.features_and_probabilities(render(generator, z, weights))
        return {"fid": metrics.frechet_distance_between(self.real, metrics.gaussian(features)),
                "classifier_score": metrics.classifier_score(probabilities),
                "classes_covered": float(metrics.class_coverage(probabilities)["classes_covered"])}


def real_reference(classifier: MnistClassifier, mnist: Mnist, n: int,
                   seed: int) -> tuple[np.ndarray, dict, list[int]]:
    """The test split's features (10,000 x 128) and the scores of n real training images against them.

    They depend only on the classifier's weights, the data, n and seed, so they are computed once and
    kept in the cache (about half of an evaluation's time)."""
    path = CACHE_DIR / "reference" / f"{classifier.fingerprint[:16]}-{mnist.sha256[:16]}-n{n}-seed{seed}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            return (cached["real_features"], json.loads(str(cached["reference"])),
                    cached["histogram"].tolist())
    real_features, _ = classifier.features_and_probabilities(to_unit_range(mnist.x_test))
    picks = np.random.default_rng([seed, 1]).choice(len(mnist.x_train), n, replace=n > len(mnist.x_train))
    reference, histogram, _ = score(classifier, to_unit_range(mnist.x_train[picks]), real_features)
    partial = path.with_suffix(f".{os.getpid()}.partial.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(partial, real_features=real_features, reference=json.dumps(reference), histogram=histogram)
        partial.replace(path)
    except OSError:  # a cache that cannot be written (read-only, full) only costs the next evaluation
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return real_features, reference, histogram


def nearest_training_images(samples: np.ndarray, train: np.ndarray, k: int = 3) -> np.ndarray:
    """For (S, 28, 28) uint8 samples, the indices (S, k) of their nearest training images in pixel L2."""
    flat_train = train.reshape(len(train), -1).astype(np.float32)
    flat = samples.reshape(len(samples), -1).astype(np.float32)
    distances = (flat ** 2).sum(1)[:, None] + (flat_train ** 2).sum(1)[None, :] - 2 * flat @ flat_train.T
    return np.argsort(distances, axis=1)[:, :k]
