"""Sample evaluation of a generator against MNIST's test split, beside the real-data reference.

The reference scores N real training images exactly as the generator's N samples are scored: it is
what a perfect generator would reach with this evaluator and this N.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import keras
import numpy as np

from training import metrics, plots
from training.classifier import MnistClassifier
from training.data import CACHE_DIR, Mnist, to_unit_range
from training.sampling import latent_batches, latents, render

# Images generated and classified at once: all an evaluation holds of its N images (3 MB), so that what
# it holds grows only by what it keeps of each sample, about 576 bytes (its float32 features and
# probabilities; the metrics' working memory is bounded, training/metrics.py).
BATCH = 1000
SHOWN = 64  # the first samples, kept for the report's grid


@dataclass
class Evaluation:
    metrics: dict[str, float]  # the generator's, including kid_stderr
    reference: dict[str, float]  # real training images scored the same way
    histogram: list[int]
    reference_histogram: list[int]
    samples: np.ndarray = field(repr=False)  # (min(n, SHOWN), 28, 28) uint8: the first of the n samples
    n: int  # samples scored


def classified(classifier: MnistClassifier, batches: Iterable[np.ndarray],
               n: int) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's features (n, 128) and probabilities (n, 10), float32, of n images that come as
    batches of (B, 28, 28, 1) in [-1, 1]: only one batch of images is held at a time."""
    features = probabilities = None
    start = 0
    for images in batches:
        f, p = classifier.features_and_probabilities(images)
        if features is None:
            features = np.empty((n, f.shape[1]), np.float32)
            probabilities = np.empty((n, p.shape[1]), np.float32)
        features[start:start + len(f)], probabilities[start:start + len(p)] = f, p
        start += len(f)
    if start != n:
        raise ValueError(f"expected {n} images, got {start}")
    return features, probabilities


def score(classifier: MnistClassifier, fake: np.ndarray,
          real_features: np.ndarray) -> tuple[dict, list[int]]:
    """Metrics of (N, 28, 28, 1) images in [-1, 1] against the real test features, and the histogram of
    their classes."""
    batches = (fake[start:start + BATCH] for start in range(0, len(fake), BATCH))
    return score_features(*classified(classifier, batches, len(fake)), real_features)


def score_features(features: np.ndarray, probabilities: np.ndarray,
                   real_features: np.ndarray) -> tuple[dict, list[int]]:
    """Metrics of samples given as their classifier features (N, 128) and probabilities (N, 10) against
    the real test features (10,000, 128), and the histogram of their classes."""
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
    return values, coverage["histogram"]


def evaluate(generator: keras.Model, mnist: Mnist, classifier: MnistClassifier, n: int,
             seed: int = 0) -> Evaluation:
    """Score n samples of `generator`, and n real training images as the reference, against the test split.
    The samples are generated, classified and dropped BATCH at a time."""
    if n < 10:
        raise ValueError(f"n must be >= 10 samples (got {n})")
    real_features, reference, reference_histogram = real_reference(classifier, mnist, n, seed)
    shown = []

    def batches():
        for z in latent_batches(n, generator.input_shape[-1], seed, BATCH):
            images = render(generator, z)
            if not shown:
                shown.append(plots.to_uint8(images[:SHOWN]))
            yield images

    values, histogram = score_features(*classified(classifier, batches(), n), real_features)
    return Evaluation(values, reference, histogram, reference_histogram, shown[0], n)


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
    batches = (to_unit_range(mnist.x_train[picks[start:start + BATCH]]) for start in range(0, n, BATCH))
    reference, histogram = score_features(*classified(classifier, batches, n), real_features)
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
