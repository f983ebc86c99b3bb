"""Sample-quality metrics as pure functions of classifier features and probabilities (NumPy only).

Features are (N, D) float arrays from the MNIST classifier's penultimate layer; probabilities are (N, 10)
rows of p(y|x). The expensive part (the classifier) lives in `training.classifier`; here is the math.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

# What an evaluation reports first, and which of those are better when lower.
HEADLINE = ("fid", "kid", "classifier_score", "precision", "recall", "classes_covered", "kl_to_uniform")
LOWER_IS_BETTER = {"fid", "kid", "kl_to_uniform"}

NUM_CLASSES = 10
Gaussian = tuple[np.ndarray, np.ndarray]  # mean (D,), covariance (D, D)


def _check_2d(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} must have shape (N >= 2, D), got {x.shape}")
    return x


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2) of Gaussians fitted to (N, D) features
    (Heusel et al. 2017, "FID"). 0 for identical distributions; compare only at equal N."""
    return frechet_distance_between(gaussian(_check_2d("real", real)), gaussian(_check_2d("fake", fake)))


def gaussian(features: np.ndarray) -> Gaussian:
    """The mean (D,) and covariance (D, D) of (N, D) features: what FID compares, computed once per set."""
    features = _check_2d("features", features)
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance_between(real: Gaussian, fake: Gaussian) -> float:
    """FID from two `gaussian`s (mean, covariance)."""
    (mu_r, cov_r), (mu_f, cov_f) = real, fake
    with warnings.catch_warnings():  # a singular product is handled just below
        warnings.simplefilter("ignore")
        covmean, _ = linalg.sqrtm(cov_r @ cov_f, disp=False)
    if not np.isfinite(covmean).all():  # singular product: regularise as the reference code does
        offset = np.eye(len(cov_r)) * 1e-6
        covmean = linalg.sqrtm((cov_r + offset) @ (cov_f + offset))
    covmean = covmean.real
    return float(((mu_r - mu_f) ** 2).sum() + np.trace(cov_r) + np.trace(cov_f) - 2 * np.trace(covmean))


def classifier_score(probs: np.ndarray) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]) of (N, 10) class probabilities ("Inception score"), in [1, 10]."""
    probs = np.clip(_check_2d("probs", probs), 1e-12, 1.0)
    marginal = probs.mean(0, keepdims=True)
    return float(np.exp((probs * (np.log(probs) - np.log(marginal))).sum(1).mean()))


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 50,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with the kernel (x.y / D + 1)^3 (Binkowski et al. 2018), averaged over random
    subsets; returns (mean, standard error of the mean)."""
    real, fake = _check_2d("real", real), _check_2d("fake", fake)
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    dim = real.shape[1]
    estimates = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        k_xx, k_yy, k_xy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off_diagonal = size * (size - 1)
        estimates.append((k_xx.sum() - np.trace(k_xx)) / off_diagonal
                         + (k_yy.sum() - np.trace(k_yy)) / off_diagonal - 2 * k_xy.mean())
    estimates = np.array(estimates)
    return float(estimates.mean()), float(estimates.std(ddof=1) / np.sqrt(len(estimates)))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): a sample is covered by a set when it
    lies within the distance of some set member to that member's k-th nearest neighbour.
    Precision: share of fakes covered by the reals; recall: share of reals covered by the fakes."""
    real, fake = _check_2d("real", real), _check_2d("fake", fake)
    real_radii, fake_radii = _kth_neighbour_distance(real, k), _kth_neighbour_distance(fake, k)
    return _covered_share(fake, real, real_radii), _covered_share(real, fake, fake_radii)


def class_coverage(probs: np.ndarray) -> dict[str, float | list[int]]:
    """Histogram of argmax classes, how many classes appear, and KL(histogram || uniform) in nats."""
    probs = _check_2d("probs", probs)
    histogram = np.bincount(probs.argmax(1), minlength=NUM_CLASSES)
    share = histogram / histogram.sum()
    present = share[share > 0]
    return {"histogram": histogram.tolist(), "classes_covered": int((histogram > 0).sum()),
            "kl_to_uniform": float((present * np.log(present * NUM_CLASSES)).sum())}


def _pairwise_sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def _kth_neighbour_distance(x: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} samples, got {len(x)}")
    radii = np.empty(len(x))
    for start in range(0, len(x), chunk):
        d = _pairwise_sq_distances(x[start:start + chunk], x)
        radii[start:start + chunk] = np.partition(d, k, axis=1)[:, k]  # index 0 is the row itself
    return radii


def _covered_share(queries: np.ndarray, members: np.ndarray, member_radii: np.ndarray,
                   chunk: int = 2048) -> float:
    covered = 0
    for start in range(0, len(queries), chunk):
        d = _pairwise_sq_distances(queries[start:start + chunk], members)
        covered += int((d <= member_radii[None, :]).any(1).sum())
    return covered / len(queries)


def fid_gain_replicates(real: Gaussian, champion: np.ndarray, challenger: np.ndarray, replicates: int = 500,
                        seed: int = 0) -> np.ndarray:
    """Bootstrap replicates (replicates,) of FID(champion) - FID(challenger), the FID gain.

    `champion` and `challenger` are (N, D) features of samples drawn from the same N latents, so row i of
    both comes from the same z: each replicate resamples the N latents with replacement and takes the same
    rows of both (a paired bootstrap, Efron & Tibshirani 1993), which keeps what the two generators share
    out of the noise of their difference. `real`, the test split's Gaussian, is the fixed ruler both are
    measured against and is not resampled."""
    champion, challenger = _check_2d("champion", champion), _check_2d("challenger", challenger)
    if champion.shape != challenger.shape:
        raise ValueError(f"paired features must have one shape, got {champion.shape} and {challenger.shape}")
    n = len(champion)
    mu_r, cov_r = real
    eigenvalues, eigenvectors = np.linalg.eigh(cov_r)
    sqrt_cov_r = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    trace_r = np.trace(cov_r)

    def resampled_distance(features: tuple[np.ndarray, np.ndarray], counts: np.ndarray) -> float:
        """FID of features resampled `counts` (N,) times each, given as (their mean, float32 rows
        centred on it): centred, float32 halves the cost of the one costly product without losing
        precision, and as the product of one matrix with itself it is half a general product's."""
        centre, centred = features
        mean = counts @ centred / n
        weighted = centred * np.sqrt(counts)[:, None]
        scatter = (weighted.T @ weighted).astype(np.float64)
        cov = (scatter - n * np.outer(mean, mean)) / (n - 1)
        # Tr((S_r S_f)^1/2) = sum of the square roots of the eigenvalues of S_r^1/2 S_f S_r^1/2
        root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_cov_r @ cov @ sqrt_cov_r), 0, None)).sum()
        return float(((mu_r - centre - mean) ** 2).sum() + trace_r + np.trace(cov) - 2 * root_trace)

    paired = [(f.mean(0), (f - f.mean(0)).astype(np.float32)) for f in (champion, challenger)]
    rng = np.random.default_rng(seed)
    gains = np.empty(replicates)
    # A thousand small products: one BLAS thread does them as fast as two on idle cores, and several
    # times faster than a pool that shares its cores with other work (a pod's CPU limit, a busy node).
    with threadpool_limits(1):
        for r in range(replicates):
            counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float32)
            gains[r] = resampled_distance(paired[0], counts) - resampled_distance(paired[1], counts)
    return gains


@dataclass(frozen=True)
class FidGain:
    """FID(champion) - FID(challenger) measured in one head-to-head (`estimate`: positive when the
    challenger is better) and its paired bootstrap replicates (`fid_gain_replicates`)."""

    estimate: float
    replicates: np.ndarray = field(repr=False)

    def lower_bound(self, confidence: float) -> float:
        """The gain this head-to-head is `confidence` sure of (one-sided): the basic bootstrap bound
        2 * estimate - q_confidence(replicates) (Davison & Hinkley 1997, ch. 5.2), which also takes off
        the bias a resample adds to FID."""
        return float(2 * self.estimate - np.quantile(self.replicates, confidence))

    def p_value(self, margin: float) -> float:
        """How likely a gain this large is if the true gain were only `margin`: the share of the
        bootstrap's gains at or below `margin` (promote when it is below 1 - confidence)."""
        return float(np.mean(2 * self.estimate - self.replicates <= margin))
