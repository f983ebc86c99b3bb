"""The promotion rule on its own: FID must improve, classes must not be lost, N must match."""

from __future__ import annotations

from training.promotion import PromotionRule

CHAMPION = {"fid": 50.0, "classes_covered": 10.0, "samples": 10000.0}


def test_first_model_becomes_champion():
    assert PromotionRule().decide(CHAMPION, None)[0]


def test_lower_fid_with_all_classes_is_promoted():
    promote, reason = PromotionRule().decide({**CHAMPION, "fid": 40.0}, CHAMPION)
    assert promote and "FID 40.000 vs champion 50.000" in reason


def test_higher_fid_or_lost_classes_are_refused_with_the_reason():
    promote, reason = PromotionRule().decide({**CHAMPION, "fid": 60.0}, CHAMPION)
    assert not promote and "needs > 0" in reason
    promote, reason = PromotionRule().decide({**CHAMPION, "fid": 10.0, "classes_covered": 9.0}, CHAMPION)
    assert not promote and "classes covered 9 vs champion 10" in reason and "FID" not in reason


def test_thresholds_are_configurable():
    better = {**CHAMPION, "fid": 45.0, "classes_covered": 9.0}
    assert not PromotionRule(min_fid_gain=10.0).decide(better, CHAMPION)[0]
    assert PromotionRule(max_classes_lost=1).decide(better, CHAMPION)[0]


def test_evaluations_on_different_sample_counts_are_not_compared():
    promote, reason = PromotionRule().decide({**CHAMPION, "fid": 1.0, "samples": 2000.0}, CHAMPION)
    assert not promote and "not comparable" in reason
