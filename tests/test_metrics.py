"""The metric math on small arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_paired_features_must_have_one_shape(gaussian):
    with pytest.raises(ValueError, match="one shape"):
        metrics.fid_gain_replicates(metrics.gaussian(gaussian), gaussian[:100], gaussian[:99])
