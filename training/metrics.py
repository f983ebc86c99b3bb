"""Sample-quality metrics as pure functions of classifier features and probabilities (NumPy only).

Features are (N, D) float arrays from the MNIST classifier's penultimate layer; probabilities are (N, 10)
rows of p(y|x). The expensive part (the classifier) lives in `training.classifier`; here is the math.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

# What an evaluation reports first, and which of those are better when lower.
HEADLINE = ("fid", "kid", "classifier_score", "precision", "recall", "classes_covered", "kl_to_uniform")
LOWER_IS_BETTER = {"fid", "kid", "kl_to_uniform"}

NUM_CLASSES = 10
Gaussian = tuple[np.ndarray, np.ndarray]  # mean (D,), covariance (D, D)


# Rows of (N, D) features the metrics take at once: beyond their inputs, what they hold is bounded by these
# whatever N is (a float32 tile of distances is 1024 x 4096 x 4 bytes = 16 MB), so 1,000,000 samples fit
# an evaluate task's memory as 10,000 do.
ROW_BLOCK = 1024
RESAMPLE_BLOCK = 16384  # drawn rows a bootstrap replicate gathers at a time: 8 MB of 128 float32 features
COLUMN_BLOCK = 4096


def _check_2d(name: str, x: np.ndarray) -> np.ndarray:
    """x as a float array (float32 stays float32: a float64 copy of a million features is 1 GB)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} must have shape (N >= 2, D), got {x.shape}")
    return x


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2) of Gaussians fitted to (N, D) features
    (Heusel et al. 2017, "FID"). 0 for identical distributions; compare only at equal N."""
    return frechet_distance_between(gaussian(_check_2d("real", real)), gaussian(_check_2d("fake", fake)))


def gaussian(features: np.ndarray) -> Gaussian:
    """The mean (D,) and covariance (D, D) of (N, D) features: what FID compares, computed once per set."""
    features = _check_2d("features", features)
    blocks = _blocks(len(features), ROW_BLOCK)
    mean = sum(features[rows].sum(0, dtype=np.float64) for rows in blocks) / len(features)
    scatter = np.zeros((features.shape[1],) * 2)
    for rows in blocks:
        centred = features[rows] - mean
        scatter += centred.T @ centred
    return mean, scatter / (len(features) - 1)


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
    probs = _check_2d("probs", probs)
    blocks = _blocks(len(probs), ROW_BLOCK)

    def clipped(rows: slice) -> np.ndarray:
        return np.clip(probs[rows].astype(np.float64), 1e-12, 1.0)

    log_marginal = np.log(sum(clipped(rows).sum(0) for rows in blocks) / len(probs))
    kl = sum((p * (np.log(p) - log_marginal)).sum() for p in map(clipped, blocks))
    return float(np.exp(kl / len(probs)))


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
        x = real[rng.choice(len(real), size, replace=False)].astype(np.float64)
        y = fake[rng.choice(len(fake), size, replace=False)].astype(np.float64)
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


def _distance_tiles(queries: np.ndarray, members: np.ndarray):
    """Squared distances of queries to members, tile by tile: for each block of ROW_BLOCK queries, its
    slice and an iterator of (members' slice, (rows, columns) float32 distances) over COLUMN_BLOCK
    members at a time. Both sides are centred on the members' mean first: distances do not change, and
    float32 keeps their digits where ||a||^2 + ||b||^2 - 2 a.b cancels (rows near each other)."""
    centre = members.mean(0, dtype=np.float64)

    def centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (x - centre).astype(np.float32)
        return x, (x * x).sum(1)

    def row_tiles(rows: slice):
        a, a_norms = centred(queries[rows])
        for columns in _blocks(len(members), COLUMN_BLOCK):
            b, b_norms = centred(members[columns])
            d = a @ b.T
            d *= -2
            d += a_norms[:, None]
            d += b_norms[None, :]
            yield columns, np.maximum(d, 0, out=d)

    for rows in _blocks(len(queries), ROW_BLOCK):
        yield rows, row_tiles(rows)


def _kth_neighbour_distance(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance (N,) float32 from each row to its k-th nearest other row."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} samples, got {len(x)}")
    radii = np.empty(len(x), np.float32)
    for rows, tiles in _distance_tiles(x, x):
        # each row's k + 1 smallest so far, the row itself (distance 0) among them; column k the largest
        nearest = np.full((rows.stop - rows.start, k + 1), np.inf, np.float32)
        for _, d in tiles:
            closer = (d < nearest[:, k, None]).any(1)  # after the first tiles, most rows have nothing
            both = np.concatenate([nearest[closer], d[closer]], axis=1)
            nearest[closer] = np.partition(both, k, axis=1)[:, :k + 1]
        radii[rows] = nearest[:, k]
    return radii


def _covered_share(queries: np.ndarray, members: np.ndarray, member_radii: np.ndarray) -> float:
    covered = 0
    for rows, tiles in _distance_tiles(queries, members):
        hit = np.zeros(rows.stop - rows.start, bool)
        for columns, d in tiles:
            hit |= (d <= member_radii[None, columns]).any(1)
        covered += int(hit.sum())
    return covered / len(queries)


def fid_gain_replicates(real: Gaussian, champion: np.ndarray, challenger: np.ndarray, replicates: int = 200,
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
    n, dims = champion.shape
    mu_r, cov_r = real
    eigenvalues, eigenvectors = np.linalg.eigh(cov_r)
    sqrt_cov_r = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    trace_r = np.trace(cov_r)

    def resampled_distance(features: np.ndarray, centre: np.ndarray, drawn: np.ndarray,
                           root_counts: np.ndarray) -> float:
        """FID of `features` resampled as rows `drawn`, each taken root_counts**2 times, RESAMPLE_BLOCK
        drawn rows at a time (so at any N it holds a few MB beyond its inputs). The rows are centred on
        `centre`, in float32: centred, float32 halves the cost of the one costly product without losing
        precision; as the product of one matrix with itself it is half a general product's, and of the
        drawn rows only (about 63 % of them), less again."""
        total, scatter = np.zeros(dims), np.zeros((dims, dims))
        for block in _blocks(len(drawn), RESAMPLE_BLOCK):
            rows = features[drawn[block]].astype(np.float32, copy=False)  # a gathered copy, changed in place
            rows -= centre
            rows *= root_counts[block, None]
            total += root_counts[block] @ rows
            scatter += rows.T @ rows
        mean = total / n
        cov = (scatter - n * np.outer(mean, mean)) / (n - 1)
        # Tr((S_r S_f)^1/2) = sum of the square roots of the eigenvalues of S_r^1/2 S_f S_r^1/2
        root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_cov_r @ cov @ sqrt_cov_r), 0, None)).sum()
        return float(((mu_r - centre - mean) ** 2).sum() + trace_r + np.trace(cov) - 2 * root_trace)

    centres = [x.mean(0, dtype=np.float64).astype(x.dtype) for x in (champion, challenger)]
    rng = np.random.default_rng(seed)
    gains = np.empty(replicates)
    # A thousand small products: one BLAS thread does them as fast as two on idle cores, and several
    # times faster than a pool that shares its cores with other work (a pod's CPU limit, a busy node).
    with threadpool_limits(1):
        for r in range(replicates):
            counts = np.bincount(rng.integers(0, n, n), minlength=n)
            drawn = np.flatnonzero(counts)
            root_counts = np.sqrt(counts[drawn], dtype=np.float32)
            gains[r] = (resampled_distance(champion, centres[0], drawn, root_counts)
                        - resampled_distance(challenger, centres[1], drawn, root_counts))
    return gains


@dataclass(frozen=True)
class FidGain:
    """FID(champion) - FID(challenger) measured in one head-to-head (`estimate`: positive when the
    challenger is better) and its paired bootstrap replicates (`fid_gain_replicates`)."""

    estimate: float
    replicates: np.ndarray = field(repr=False)

    def lower_bound(self, confidence: float) -> float:
        """The gain this head-to-head is `confidence` sure of (one-sided): the bootstrap's normal bound
        (Efron & Tibshirani 1993, ch. 13; Davison & Hinkley 1997, ch. 5.2), the estimate less the bias a
        resample adds to FID, less z_confidence standard errors of the resampled gains. A standard error
        is sure after a couple of hundred resamples, where a percentile of them needs thousands."""
        return self._centre - NormalDist().inv_cdf(confidence) * self._spread

    def p_value(self, margin: float) -> float:
        """How likely a gain this large is if the true gain were only `margin`, on the same normal
        approximation (promote when it is below 1 - confidence)."""
        if self._spread == 0:
            return 0.0 if self._centre > margin else 1.0
        return NormalDist(self._centre, self._spread).cdf(margin)

    @property
    def _centre(self) -> float:
        """The estimate without the bootstrap's estimate of its bias (mean of the replicates - estimate)."""
        return float(2 * self.estimate - np.mean(self.replicates))

    @property
    def _spread(self) -> float:
        return float(np.std(self.replicates, ddof=1))
