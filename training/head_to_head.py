"""The challenger and the champion scored together, as promotion compares them: the same evaluator
weights, the same test split, the same latents, the same N. Scores recorded at registration may come from
other evaluators, latents or N; these do not.

Besides both scores, a head-to-head measures how sure its FID gain is: the paired bootstrap of
`metrics.fid_gain_replicates` (docs/MLFLOW.md, "How promotion decides", says why this statistic).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import metrics

REPLICATES = 200  # bootstrap resamples, enough for a standard error: about 1.3 s at N = 10,000 on a CPU core
GRID = 64  # samples of each generator, from the same latents, in the picture of the decision


@dataclass(frozen=True)
class HeadToHead:
    challenger: dict[str, float]  # fid, classes_covered
    champion: dict[str, float]
    gain: metrics.FidGain
    samples: int
    seed: int
    evaluator_sha256: str
    seconds: float
    challenger_grid: np.ndarray = field(repr=False)  # (GRID, 28, 28) uint8, from the first GRID latents
    champion_grid: np.ndarray = field(repr=False)  # the same latents through the champion


def score(challenger, champion, mnist, classifier, n: int, seed: int = 0,
          replicates: int = REPLICATES) -> HeadToHead:
    """Score two Keras generators on n samples each, drawn from the latents of `seed` (each at its own
    z_dim: the same latents when their z_dim agree, which pairs the samples row by row)."""
    from training import plots
    from training.evaluation import BATCH, classified, real_reference
    from training.sampling import latent_batches, render

    if n < 10:
        raise ValueError(f"n must be >= 10 samples (got {n})")
    started = time.perf_counter()
    real_features, _, _ = real_reference(classifier, mnist, n, seed)
    real = metrics.gaussian(real_features)
    features, scores, grids = {}, {}, {}
    for side, generator in (("challenger", challenger), ("champion", champion)):
        def batches(generator=generator, side=side):  # one batch of images held at a time, at any n
            for z in latent_batches(n, generator.input_shape[-1], seed, BATCH):
                images = render(generator, z)
                if side not in grids:
                    grids[side] = plots.to_uint8(images[:GRID])
                yield images

        features[side], probabilities = classified(classifier, batches(), n)
        scores[side] = {"fid": metrics.frechet_distance_between(real, metrics.gaussian(features[side])),
                        "classes_covered": float(metrics.class_coverage(probabilities)["classes_covered"])}
    gain = metrics.FidGain(scores["champion"]["fid"] - scores["challenger"]["fid"],
                           metrics.fid_gain_replicates(real, features["champion"], features["challenger"],
                                                       replicates, seed))
    return HeadToHead(scores["challenger"], scores["champion"], gain, n, seed, classifier.fingerprint,
                      time.perf_counter() - started, grids["challenger"], grids["champion"])


@dataclass
class Judge:
    """Scores pairs of generator files head to head with one evaluator on `data`'s test split. MNIST and
    the evaluator are loaded at the first pair (a promotion without a champion needs neither): from
    `classifier_dir` (a pipeline artifact), else the local cache."""

    data: str
    samples: int
    classifier_dir: str | None = None
    seed: int = 0

    def __call__(self, challenger_file: Path, champion_file: Path) -> HeadToHead:
        from training.sampling import load_generator

        mnist, classifier = self._ruler
        return score(load_generator(str(challenger_file)), load_generator(str(champion_file)), mnist,
                     classifier, self.samples, self.seed)

    @functools.cached_property
    def _ruler(self):
        from training.data import load_mnist
        from training.jobs.artifacts import evaluator

        mnist = load_mnist(self.data)
        return mnist, evaluator(mnist, self.classifier_dir)
