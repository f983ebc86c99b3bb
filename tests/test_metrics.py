"""The metric math on small arrays whose answers are known."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from training import metrics


@pytest.fixture
def gaussian():
    return np.random.default_rng(0).normal(size=(4000, 8))


def test_frechet_distance_is_zero_for_one_distribution_and_the_squared_shift_for_a_moved_one(gaussian):
    assert metrics.frechet_distance(gaussian, gaussian) == pytest.approx(0.0, abs=1e-6)
    shift = np.arange(8) / 4.0
    assert metrics.frechet_distance(gaussian, gaussian + shift) == pytest.approx((shift**2).sum(), rel=1e-6)


def test_frechet_distance_from_precomputed_statistics_is_the_same(gaussian):
    moved = gaussian[:1000] * 1.5 + 0.3
    assert metrics.frechet_distance_between(metrics.gaussian(gaussian), metrics.gaussian(moved)) == \
        metrics.frechet_distance(gaussian, moved)


def test_frechet_distance_of_a_collapsed_set_is_finite(gaussian):
    collapsed = np.repeat(gaussian[:1], 100, axis=0)
    assert np.isfinite(metrics.frechet_distance(gaussian, collapsed))


def test_classifier_score_spans_1_to_10():
    confident_uniform = np.eye(10)[np.arange(1000) % 10]
    assert metrics.classifier_score(confident_uniform) == pytest.approx(10.0, rel=1e-6)
    assert metrics.classifier_score(np.tile(np.eye(10)[3], (50, 1))) == pytest.approx(1.0)
    assert metrics.classifier_score(np.full((50, 10), 0.1)) == pytest.approx(1.0)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_another(gaussian):
    same, same_err = metrics.kernel_inception_distance(gaussian[:2000], gaussian[2000:], subsets=20,
                                                       subset_size=500)
    moved, moved_err = metrics.kernel_inception_distance(gaussian, gaussian + 1.0, subsets=20,
                                                         subset_size=500)
    assert abs(same) < 3 * same_err + 1e-3
    assert moved > 10 * moved_err > 0


def test_precision_and_recall_see_fidelity_and_diversity(gaussian):
    real, fake = gaussian[:2000], gaussian[2000:]
    precision, recall = metrics.precision_recall(real, fake)
    assert precision > 0.8 and recall > 0.8  # k=3 manifolds miss some of the tails
    far_precision, far_recall = metrics.precision_recall(real, fake + 100.0)
    assert far_precision == far_recall == 0.0
    # Collapse onto one realistic point: every sample is plausible, none of the variety is there.
    collapsed_precision, collapsed_recall = metrics.precision_recall(real, np.repeat(real[:1], 500, 0))
    assert collapsed_precision == 1.0 and collapsed_recall < 0.01


def test_class_coverage_counts_classes_and_distance_to_uniform():
    uniform = metrics.class_coverage(np.eye(10)[np.arange(100) % 10])
    assert uniform == {"histogram": [10] * 10, "classes_covered": 10, "kl_to_uniform": 0.0}
    one_class = metrics.class_coverage(np.tile(np.eye(10)[7], (30, 1)))
    assert one_class["classes_covered"] == 1 and one_class["histogram"][7] == 30
    assert one_class["kl_to_uniform"] == pytest.approx(np.log(10))


def test_wrong_rank_is_a_value_error():
    with pytest.raises(ValueError, match=r"real must have shape \(N >= 2, D\)"):
        metrics.frechet_distance(np.zeros(5), np.zeros((5, 2)))


def _paired_features(gap: float, seed: int, n: int = 2000, dim: int = 8):
    """Features of a champion and a challenger from the same latents: what they share (z) plus each's own
    noise; the challenger is `gap` standard deviations nearer to the real mean."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, dim))
    champion = shared + 0.3 * rng.normal(size=(n, dim)) + 0.5
    challenger = shared + 0.3 * rng.normal(size=(n, dim)) + 0.5 - gap
    return champion, challenger


def test_the_bootstrap_of_the_fid_gain_centres_on_the_gain_and_resamples_both_sides_alike(gaussian):
    real = metrics.gaussian(gaussian)
    champion, challenger = _paired_features(0.2, seed=1)
    estimate = (metrics.frechet_distance_between(real, metrics.gaussian(champion))
                - metrics.frechet_distance_between(real, metrics.gaussian(challenger)))
    replicates = metrics.fid_gain_replicates(real, champion, challenger, replicates=200)
    assert estimate > 0 and abs(replicates.mean() - estimate) < 3 * replicates.std()
    gain = metrics.FidGain(estimate, replicates)
    assert 0 < gain.lower_bound(0.95) < estimate and gain.p_value(0.0) < 0.05
    same = metrics.fid_gain_replicates(real, champion, champion.copy(), replicates=50)
    assert np.all(same == 0), "one generator against itself gains nothing in any resample"
    assert metrics.FidGain(0.0, same).lower_bound(0.95) == 0.0


def test_the_fid_gain_bound_at_95_percent_declares_a_tie_better_about_1_time_in_20(gaussian):
    """Calibration on Gaussians with known truth: a challenger exactly as good as the champion (same
    distribution, its own noise) is declared better at 95 % in about 5 % of 200 draws (at most 8 %: 2
    standard deviations of that share), and one better by a tenth of a standard deviation in all 20."""
    real = metrics.gaussian(gaussian)

    def declared_better(gap: float, seed: int) -> bool:
        champion, challenger = _paired_features(gap, seed=100 + seed, n=1000)
        estimate = (metrics.frechet_distance_between(real, metrics.gaussian(champion))
                    - metrics.frechet_distance_between(real, metrics.gaussian(challenger)))
        replicates = metrics.fid_gain_replicates(real, champion, challenger, replicates=200, seed=seed)
        return metrics.FidGain(estimate, replicates).lower_bound(0.95) > 0

    assert sum(declared_better(0.0, seed) for seed in range(200)) <= 16
    assert all(declared_better(0.1, seed) for seed in range(20))


def test_the_bootstrap_gathers_its_rows_in_blocks_to_the_same_replicates(gaussian, monkeypatch):
    real = metrics.gaussian(gaussian)
    champion, challenger = (x.astype(np.float32) for x in _paired_features(0.2, seed=3, n=3000))
    whole = metrics.fid_gain_replicates(real, champion, challenger, replicates=20)
    monkeypatch.setattr(metrics, "RESAMPLE_BLOCK", 7)
    np.testing.assert_allclose(metrics.fid_gain_replicates(real, champion, challenger, replicates=20), whole,
                               rtol=1e-4, atol=1e-6)


def test_the_bootstrap_holds_a_few_bytes_a_sample_beyond_its_inputs():
    """A promotion's head-to-head at the largest `samples` (1,000,000) must fit the promote task's 4 GiB
    beside both generators' features (512 bytes a sample each). The bootstrap used to copy both sides'
    features, centred, and gather the drawn rows of each whole: about 1,700 more bytes a sample (1.7 GB
    at the largest). Now it holds its resampling counts (about 30 bytes a sample) and blocks of rows."""
    import tracemalloc

    rng = np.random.default_rng(0)
    real = metrics.gaussian(rng.normal(size=(2000, 128)))

    def peak_bytes(n: int) -> int:
        champion = rng.normal(size=(n, 128)).astype(np.float32)
        challenger = champion + np.float32(0.1)
        tracemalloc.start()
        try:
            metrics.fid_gain_replicates(real, champion, challenger, replicates=2)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak_bytes(50_000), peak_bytes(200_000)  # both past one block of drawn rows
    assert (large - small) / 150_000 < 64, (small, large)
    assert large < 64 * 2**20, large


def test_paired_features_must_have_one_shape(gaussian):
    with pytest.raises(ValueError, match="one shape"):
        metrics.fid_gain_replicates(metrics.gaussian(gaussian), gaussian[:100], gaussian[:99])


def _previous_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3):
    """The formulation the blocked one replaced: float64 distances of all queries to all N members at
    once. Returns (precision, recall, real radii, fake radii)."""
    def squared(a, b):
        return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)

    def radii(x):
        return np.partition(squared(x, x), k, axis=1)[:, k]

    def covered(queries, members, member_radii):
        return float((squared(queries, members) <= member_radii[None, :]).any(1).mean())

    real, fake = real.astype(np.float64), fake.astype(np.float64)
    real_radii, fake_radii = radii(real), radii(fake)
    return covered(fake, real, real_radii), covered(real, fake, fake_radii), real_radii, fake_radii


def _features_like_the_classifiers(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """(n, 128) non-negative features with a norm far above their spread, as a ReLU layer's are."""
    rng = np.random.default_rng(seed)
    return (np.maximum(rng.normal(size=(n, 128)) + 0.5 + shift, 0) * 3).astype(np.float32)


@pytest.mark.parametrize("case", ["gaussian", "relu features", "moved", "collapsed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_precision_and_recall_equal_the_all_at_once_formulation(case, dtype, gaussian, monkeypatch):
    # small tiles, so that every set spans several of them in both directions, the last one ragged
    monkeypatch.setattr(metrics, "ROW_BLOCK", 64)
    monkeypatch.setattr(metrics, "COLUMN_BLOCK", 100)
    real, fake = {
        "gaussian": lambda: (gaussian[:1500], gaussian[1500:2700]),
        "relu features": lambda: (_features_like_the_classifiers(1500, 1),
                                  _features_like_the_classifiers(1200, 2)),
        "moved": lambda: (_features_like_the_classifiers(1500, 1),
                          _features_like_the_classifiers(1200, 2, shift=0.2)),
        "collapsed": lambda: (gaussian[:1500], np.repeat(gaussian[:1], 300, 0)),
    }[case]()
    real, fake = real.astype(dtype), fake.astype(dtype)
    precision, recall, real_radii, fake_radii = _previous_precision_recall(real, fake)
    np.testing.assert_allclose(metrics._kth_neighbour_distance(real, 3), real_radii, rtol=1e-4)
    np.testing.assert_allclose(metrics._kth_neighbour_distance(fake, 3), fake_radii, rtol=1e-4, atol=1e-6)
    blocked = metrics.precision_recall(real, fake)
    # a point on a radius may fall either side of it in float32: one point at most
    assert blocked == pytest.approx((precision, recall), abs=1.01 / min(len(real), len(fake)))
    assert 0.0 < precision and (recall < 0.01 if case == "collapsed" else 0.05 < recall)


def test_blocked_gaussian_and_classifier_score_equal_numpys_whole_array_ones(monkeypatch):
    monkeypatch.setattr(metrics, "ROW_BLOCK", 64)
    features = _features_like_the_classifiers(1000, 3)
    mean, cov = metrics.gaussian(features)
    np.testing.assert_allclose(mean, features.astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12)
    logits = np.random.default_rng(4).normal(size=(1000, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    clipped = np.clip(probs, 1e-12, 1.0)
    previous = np.exp((clipped * (np.log(clipped) - np.log(clipped.mean(0, keepdims=True)))).sum(1).mean())
    assert metrics.classifier_score(probs.astype(np.float32)) == pytest.approx(previous, rel=1e-6)
    assert metrics.classifier_score(probs) == pytest.approx(previous, rel=1e-12)


# Scores N synthetic samples as an evaluation does (evaluation.score_features: FID, KID, precision and
# recall, class coverage) and prints how far the process's peak resident memory rose while it did; the
# features and probabilities are made in blocks first, so the peak before is theirs.
_SCORE_AND_MEASURE = """
import json, resource, sys
import numpy as np
from training import evaluation

n, rng = int(sys.argv[1]), np.random.default_rng(0)
def rows(count, width, make):
    out = np.empty((count, width), np.float32)
    for start in range(0, count, 4096):
        out[start:start + 4096] = make(min(4096, count - start))
    return out
def features(count):
    return rows(count, 128, lambda b: np.maximum(rng.normal(size=(b, 128)) + 0.5, 0) * 3)
def probabilities(b):
    e = np.exp(rng.normal(size=(b, 10)) * 3)
    return e / e.sum(1, keepdims=True)
real, fake, probs = features(10_000).astype(np.float64), features(n), rows(n, 10, probabilities)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
evaluation.score_features(fake, probs, real)
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024))
"""


def _peak_growth_of_scoring(n: int) -> int:
    done = subprocess.run([sys.executable, "-c", _SCORE_AND_MEASURE, str(n)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_scoring_holds_the_same_bounded_memory_at_any_number_of_samples():
    """The all-at-once formulation held 2 x 2048 x N float64 distances and float64 copies of the
    features: its peak rose by 1 GB at N = 20,000 (measured), by 33 GB at the maximum 1,000,000 samples.
    Blocked, scoring holds about 90 MB beyond its inputs, and 30,000 samples take no more of it than
    10,000 (but the few bytes a sample it keeps aside)."""
    small, large = _peak_growth_of_scoring(10_000), _peak_growth_of_scoring(30_000)
    mb = 2**20
    assert small < 160 * mb and large < 160 * mb, (small / mb, large / mb)
    assert large - small < 32 * mb, (small / mb, large / mb)
