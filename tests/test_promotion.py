"""Promotion: the rule on its own (FID must improve, classes must not be lost, N must match), then its
acts on a real registry: gate, dry run, rollback, a stricter rule, racing promotions and the lock."""

from __future__ import annotations

import pytest

from tests.lab import champion, cli_process, evaluation_run, version_tags
from training.config import JobConfig
from training.promotion import PromotionRule

DEFAULT = PromotionRule(JobConfig().min_fid_gain, JobConfig().max_classes_lost)

CHAMPION = {"fid": 50.0, "classes_covered": 10.0, "samples": 10000.0}


def test_first_model_becomes_champion():
    assert DEFAULT.decide(CHAMPION, None)[0]


def test_lower_fid_with_all_classes_is_promoted():
    promote, reason = DEFAULT.decide({**CHAMPION, "fid": 40.0}, CHAMPION)
    assert promote and "FID 40.000 vs champion 50.000" in reason


def test_higher_fid_or_lost_classes_are_refused_with_the_reason():
    promote, reason = DEFAULT.decide({**CHAMPION, "fid": 60.0}, CHAMPION)
    assert not promote and "needs > 0" in reason
    promote, reason = DEFAULT.decide({**CHAMPION, "fid": 10.0, "classes_covered": 9.0}, CHAMPION)
    assert not promote and "classes covered 9 vs champion 10" in reason and "FID" not in reason


def test_thresholds_are_configurable():
    better = {**CHAMPION, "fid": 45.0, "classes_covered": 9.0}
    assert not PromotionRule(min_fid_gain=10.0, max_classes_lost=0).decide(better, CHAMPION)[0]
    assert PromotionRule(min_fid_gain=0.0, max_classes_lost=1).decide(better, CHAMPION)[0]


def test_evaluations_on_different_sample_counts_are_not_compared():
    promote, reason = DEFAULT.decide({**CHAMPION, "fid": 1.0, "samples": 2000.0}, CHAMPION)
    assert not promote and "not comparable" in reason


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_promotion_refuses_a_worse_challenger_accepts_a_better_one_and_rolls_back(lab):
    name = "gate-test"
    register = ("register", "--name", name, "--training-run-id")
    lab.cli(*register, lab.collapsed_run, "--evaluation-run-id", lab.collapsed_eval)
    first = lab.cli("promote", "--name", name).stdout
    assert "no champion yet" in first and champion(lab, name) == "1"

    lab.cli(*register, lab.trained_run, "--evaluation-run-id", lab.trained_eval)
    dry = lab.cli("promote", "--name", name, "--dry-run").stdout
    assert "(dry run): would promote" in dry and champion(lab, name) == "1"
    assert "promotion.decision" not in version_tags(lab, name, "2")
    lab.cli("promote", "--name", name)
    assert champion(lab, name) == "2"
    tags = version_tags(lab, name, "2")
    assert tags["promotion.decision"] == "promoted" and tags["promotion.previous_champion"] == "1"
    assert tags["training_run_id"] == lab.trained_run and tags["preset"] == "cpu"
    assert float(tags["eval.fid"]) == lab.client.get_run(lab.trained_eval).data.metrics["fid"]

    lab.cli(*register, lab.collapsed_run, "--evaluation-run-id", lab.collapsed_eval)
    refused = lab.cli("promote", "--name", name).stdout
    assert "keep the champion" in refused and champion(lab, name) == "2"
    tags = version_tags(lab, name, "3")
    assert tags["promotion.decision"] == "refused" and "FID" in tags["promotion.reason"]

    lab.cli("rollback", "--name", name)
    assert champion(lab, name) == "1"
    failed = lab.cli("rollback", "--name", name, expect=1)
    assert "nothing to roll back to" in failed.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_a_stricter_rule_refuses_what_the_default_accepts(lab):
    name = "strict-test"
    for run, evaluation in ((lab.collapsed_run, lab.collapsed_eval), (lab.trained_run, lab.trained_eval)):
        lab.cli("register", "--name", name, "--training-run-id", run, "--evaluation-run-id", evaluation)
        lab.cli("promote", "--name", name, "--min-fid-gain", "100000")
    assert champion(lab, name) == "1"
    assert "needs > 100000" in version_tags(lab, name, "2")["promotion.reason"]


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_racing_promotions_end_with_the_champion_the_rule_picks(lab):
    name = "race-test"
    for fid in (100.0, 50.0, 40.0):  # versions 1, 2 and 3
        lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
                "--evaluation-run-id", evaluation_run(lab, fid))
    lab.cli("promote", "--name", name, "--version", "1")
    racers = [cli_process(lab, "promote", "--name", name, "--version", v) for v in ("2", "3")]
    for racer in racers:
        _, err = racer.communicate(timeout=300)
        assert racer.returncode == 0, err[-3000:]
    # whichever went first, version 3 (FID 40) must end as champion: it beats both 1 and 2
    assert champion(lab, name) == "3"
    second = version_tags(lab, name, "2")
    lost_to_3 = (second["promotion.decision"] == "refused"
                 and "FID 50.000 vs champion 40.000" in second["promotion.reason"])
    superseded_by_3 = version_tags(lab, name, "3")["promotion.previous_champion"] == "2"
    assert lost_to_3 or superseded_by_3, "the loser's decision and reason are recorded"
    assert name + ".promotion-lock" not in [m.name for m in lab.client.search_registered_models()]


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_a_promotion_waits_for_the_lock_another_holds(lab):
    from training import promotion

    name = "lock-test"
    lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
            "--evaluation-run-id", lab.trained_eval)
    with promotion.promotion_lock(lab.client, name):
        waiting = cli_process(lab, "promote", "--name", name)
        said = []  # until the promotion says it found the lock taken (or ends)
        while not said or not said[-1].startswith(f"promote: waiting for {name}.promotion-lock"):
            said.append(waiting.stderr.readline())
            assert said[-1], "".join(said)
        assert waiting.poll() is None, "promoted while another promotion held the lock"
        assert "champion" not in lab.client.get_registered_model(name).aliases, "promoted under the lock"
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err[-3000:]
    assert champion(lab, name) == "1"
