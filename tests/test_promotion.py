"""Promotion: the rule on its own (enough classes covered, FID must improve, classes must not be lost, N
must match), then its acts on a real registry: gate, dry run, rollback, every path refusing a collapsed
generator, a stricter rule, racing promotions and the lock."""

from __future__ import annotations

import pytest

from tests.support.two_generators import champion, cli_process, evaluation_run, version_tags
from training.config import JobConfig
from training.promotion import PromotionRule

DEFAULT = PromotionRule.of(JobConfig())

CHAMPION = {"fid": 50.0, "classes_covered": 10.0, "samples": 10000.0}


def test_first_model_becomes_champion():
    assert DEFAULT.decide(CHAMPION, None)[0]


def test_lower_fid_with_all_classes_is_promoted():
    promote, reason = DEFAULT.decide({**CHAMPION, "fid": 40.0}, CHAMPION)
    assert promote and "FID 40.000 vs champion 50.000" in reason


def test_higher_fid_or_lost_classes_are_refused_with_the_reason():
    promote, reason = DEFAULT.decide({**CHAMPION, "fid": 60.0}, CHAMPION)
    assert not promote and "needs > 0" in reason
    lenient_floor = PromotionRule(0.0, 0, min_classes_covered=0)
    promote, reason = lenient_floor.decide({**CHAMPION, "fid": 10.0, "classes_covered": 9.0}, CHAMPION)
    assert not promote and "classes covered 9 vs champion 10" in reason and "FID" not in reason


def test_thresholds_are_configurable():
    better = {**CHAMPION, "fid": 45.0, "classes_covered": 9.0}
    assert not PromotionRule(10.0, max_classes_lost=0, min_classes_covered=9).decide(better, CHAMPION)[0]
    assert PromotionRule(0.0, max_classes_lost=1, min_classes_covered=9).decide(better, CHAMPION)[0]
    assert not PromotionRule(0.0, max_classes_lost=1, min_classes_covered=10).decide(better, None)[0]


def test_a_generator_covering_too_few_classes_is_never_promoted_champion_or_not():
    collapsed = {**CHAMPION, "fid": 1.0, "classes_covered": 1.0}
    for champion_now in (None, CHAMPION):
        promote, reason = DEFAULT.decide(collapsed, champion_now)
        assert not promote and reason == "1 digit classes covered, needs 10 to be promoted at all " \
                                          "(min_classes_covered)"
    assert PromotionRule(0.0, 0, min_classes_covered=1).decide(collapsed, None)[0]


def test_a_rule_out_of_the_job_parameters_bounds_is_refused():
    from training.config import ConfigError

    with pytest.raises(ConfigError, match=r"min_classes_covered must be in \[0, 10\] \(got 11\)"):
        PromotionRule(0.0, 0, 11)
    with pytest.raises(ConfigError, match="min_fid_gain"):
        PromotionRule(-1.0, 0, 10)


def test_evaluations_on_different_sample_counts_are_not_compared():
    promote, reason = DEFAULT.decide({**CHAMPION, "fid": 1.0, "samples": 2000.0}, CHAMPION)
    assert not promote and "not comparable" in reason


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_promotion_refuses_a_worse_challenger_accepts_a_better_one_and_rolls_back(lab):
    name = "gate-test"
    register = ("register", "--name", name, "--training-run-id")
    lab.cli(*register, lab.trained_run, "--evaluation-run-id", evaluation_run(lab, 1000.0))
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

    lab.cli(*register, lab.trained_run, "--evaluation-run-id", evaluation_run(lab, 2000.0))
    refused = lab.cli("promote", "--name", name).stdout
    assert "keep the champion (version 2), refuse 3" in refused and champion(lab, name) == "2"
    tags = version_tags(lab, name, "3")
    assert tags["promotion.decision"] == "refused" and "FID 2000.000" in tags["promotion.reason"]

    lab.cli("rollback", "--name", name)
    assert champion(lab, name) == "1"
    failed = lab.cli("rollback", "--name", name, expect=1)
    assert "nothing to roll back to" in failed.stderr


COLLAPSED_REFUSED = "1 digit classes covered, needs 10 to be promoted at all (min_classes_covered)"


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
@pytest.mark.parametrize("with_champion", [False, True], ids=["no champion", "a champion"])
def test_no_path_makes_the_collapsed_generator_champion(lab, with_champion):
    """`min_classes_covered` is part of the one promotion rule every path asks: `mnist-gan promote`, the
    end of `main` and of a sweep (`jobs.register_and_promote`, the very call both make after training),
    and the pipeline's `evaluation-gate` and `promote` tasks (their component functions, run here in
    this process against the lab's registry, as their containers would). The collapsed generator
    covers 1 class: refused by each, with the reason in one line, whether or not a champion exists."""
    import json

    import mlflow

    from components import gan
    from training import jobs, summaries
    from training.config import JobConfig

    def model(path: str) -> str:
        name = f"collapsed-{path}" + ("-with-champion" if with_champion else "")
        if with_champion:
            lab.champion_of_the_trained_generator(name)
        return name

    def register_collapsed(name: str) -> str:
        out = lab.cli("register", "--name", name, "--training-run-id", lab.collapsed_run,
                      "--evaluation-run-id", lab.collapsed_eval).stdout
        return out.split("version ")[1].split()[0]

    def champion_stays(name: str) -> bool:
        champion_now = lab.client.get_registered_model(name).aliases.get("champion")
        return champion_now == (1 if with_champion else None)

    name = model("cli")
    register_collapsed(name)
    said = lab.cli("promote", "--name", name).stdout.splitlines()
    assert len(said) == 1 and COLLAPSED_REFUSED in said[0], said
    assert champion_stays(name)

    mlflow.set_tracking_uri(lab.uri)
    with mlflow.start_run(experiment_id=mlflow.set_experiment("mnist-gan").experiment_id) as parent:
        name = model("main-and-sweep")
        _, promoted = jobs.register_and_promote(lab.collapsed_run, lab.collapsed_eval,
                                                JobConfig(model_name=name), parent.info.run_id)
        said = summaries.promoted_lines(promoted)
        assert len(said) == 1 and COLLAPSED_REFUSED in said[0], said
        assert champion_stays(name)

        name = model("pipeline")
        version = register_collapsed(name)
        rule = {"min_fid_gain": 0.0, "max_classes_lost": 0, "min_classes_covered": 10}
        assert gan.evaluation_gate.python_func(evaluation_run_id=lab.collapsed_eval, **rule) is False
        promoted = gan.promote.python_func(parent_run_id=parent.info.run_id, model_name=name,
                                           version=version, **rule)
        decision = json.loads(promoted.decision)
        assert not promoted.promoted and not decision["promoted"] and COLLAPSED_REFUSED in decision["reason"]
        assert champion_stays(name)


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_a_stricter_rule_refuses_what_the_default_accepts(lab):
    name = "strict-test"
    for evaluation in (evaluation_run(lab, 1000.0), lab.trained_eval):
        lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
                "--evaluation-run-id", evaluation)
        lab.cli("promote", "--name", name, "--min-fid-gain", "100000")
    assert champion(lab, name) == "1"
    assert "needs > 100000" in version_tags(lab, name, "2")["promotion.reason"]
    assert "would promote" in lab.cli("promote", "--name", name, "--dry-run").stdout


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
