"""Promotion: the rule on its own (enough classes covered, FID better beyond noise head to head, classes
not lost), then its acts on a real registry: the head-to-head recorded, dry run, rollback and its
stickiness, every path refusing a collapsed generator, a stricter rule, racing promotions and the lock."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.support.two_generators import SAMPLES, champion, cli_process, evaluation_run, version_tags
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
    lenient_floor = rule(min_classes_covered=0)
    promote, reason = lenient_floor.decide({**CHAMPION, "fid": 10.0, "classes_covered": 9.0}, CHAMPION)
    assert not promote and "classes covered 9 vs champion 10" in reason and "FID" not in reason


def rule(min_fid_gain: float = 0.0, max_classes_lost: int = 0, min_classes_covered: int = 10,
         confidence: float = 0.95) -> PromotionRule:
    return PromotionRule(min_fid_gain, max_classes_lost, min_classes_covered, confidence)


def test_thresholds_are_configurable():
    better = {**CHAMPION, "fid": 45.0, "classes_covered": 9.0}
    assert not rule(10.0, max_classes_lost=0, min_classes_covered=9).decide(better, CHAMPION)[0]
    assert rule(0.0, max_classes_lost=1, min_classes_covered=9).decide(better, CHAMPION)[0]
    assert not rule(0.0, max_classes_lost=1, min_classes_covered=10).decide(better, None)[0]


def test_head_to_head_the_fid_must_be_better_beyond_noise_at_the_rules_confidence():
    """Against a champion scored head to head, the bound of the gain decides, not the gain itself."""
    import numpy as np

    from training.metrics import FidGain

    challenger = {"fid": 49.0, "classes_covered": 10.0}
    noisy = FidGain(1.0, 1.0 + np.linspace(-2, 2, 401))  # gain 1, give or take 2
    promote, reason = rule().decide(challenger, CHAMPION, noisy)
    assert not promote
    assert "head to head (gain 1.000, at least -0.906 with 95% confidence, needs > 0)" in reason
    sure = FidGain(1.0, 1.0 + np.linspace(-0.1, 0.1, 401))
    assert rule().decide(challenger, CHAMPION, sure)[0]
    assert not rule(min_fid_gain=0.95).decide(challenger, CHAMPION, sure)[0], "the bound clears the margin"
    assert rule(confidence=0.5).decide(challenger, CHAMPION, noisy)[0], "at 50 %, the estimate itself"


def test_a_generator_covering_too_few_classes_is_never_promoted_champion_or_not():
    collapsed = {**CHAMPION, "fid": 1.0, "classes_covered": 1.0}
    for champion_now in (None, CHAMPION):
        promote, reason = DEFAULT.decide(collapsed, champion_now)
        assert not promote and reason == "1 digit classes covered, needs 10 to be promoted at all " \
                                          "(min_classes_covered)"
    assert rule(min_classes_covered=1).decide(collapsed, None)[0]


def test_a_rule_out_of_the_job_parameters_bounds_is_refused():
    from training.config import ConfigError

    with pytest.raises(ConfigError, match=r"min_classes_covered must be in \[0, 10\] \(got 11\)"):
        PromotionRule(0.0, 0, 11, 0.95)
    with pytest.raises(ConfigError, match="min_fid_gain"):
        PromotionRule(-1.0, 0, 10, 0.95)


def test_evaluations_on_different_sample_counts_are_not_compared():
    promote, reason = DEFAULT.decide({**CHAMPION, "fid": 1.0, "samples": 2000.0}, CHAMPION)
    assert not promote and "not comparable" in reason


def _head_to_head_tags(tags: dict[str, str]) -> dict[str, float]:
    return {key.removeprefix("promotion."): float(tags[key]) for key in (
        "promotion.fid", "promotion.champion_fid", "promotion.fid_gain", "promotion.fid_gain_lower",
        "promotion.p_value", "promotion.confidence", "promotion.samples")}


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_promotion_refuses_a_worse_challenger_accepts_a_better_one_and_rolls_back(lab):
    """Decided head to head: the scores and the interval are recorded on the version and on the promote
    run, with the picture of both generators from the same latents."""
    name = "gate-test"
    assert lab.register(name, "worse") == "1"
    first = lab.promote("--name", name).stdout
    assert "no champion yet" in first and champion(lab, name) == "1"

    lab.register(name, "trained")
    dry = lab.promote("--name", name, "--dry-run").stdout
    assert "(dry run): would promote" in dry and champion(lab, name) == "1"
    assert "promotion.decision" not in version_tags(lab, name, "2")
    lab.promote("--name", name)
    assert champion(lab, name) == "2"
    tags = version_tags(lab, name, "2")
    assert tags["promotion.decision"] == "promoted" and tags["promotion.previous_champion"] == "1"
    assert tags["training_run_id"] == lab.trained_run and tags["preset"] == "cpu"
    assert float(tags["eval.fid"]) == lab.client.get_run(lab.trained_eval).data.metrics["fid"]
    scores = _head_to_head_tags(tags)
    assert scores["fid_gain"] == pytest.approx(scores["champion_fid"] - scores["fid"], abs=1e-3)
    assert 0 < scores["fid_gain_lower"] < scores["fid_gain"] and scores["p_value"] < 0.05
    assert (scores["confidence"], scores["samples"], tags["promotion.champion_version"]) == (0.95, 2000, "1")
    run = lab.client.search_runs([lab.client.get_run(lab.trained_eval).info.experiment_id],
                                 f"tags.challenger_version = '2' and tags.registered_model = '{name}'")[0]
    assert run.info.run_name == "promote" and run.data.tags["promoted"] == "true"
    assert run.data.metrics["fid_gain_lower"] == pytest.approx(scores["fid_gain_lower"], rel=1e-4)
    assert run.data.params["evaluator_sha256"] == tags["promotion.evaluator_sha256"]
    pictured = {f.path for f in lab.client.list_artifacts(run.info.run_id, "report")}
    assert pictured == {"report/decision.png", "report/decision.md", "report/decision.html"}

    lab.register(name, "worse")
    refused = lab.promote("--name", name).stdout
    assert "keep the champion (version 2), refuse gate-test version 3" in refused
    assert champion(lab, name) == "2"
    tags = version_tags(lab, name, "3")
    assert tags["promotion.decision"] == "refused" and "head to head" in tags["promotion.reason"]
    assert float(tags["promotion.fid_gain"]) < 0

    lab.cli("rollback", "--name", name)
    assert champion(lab, name) == "1"
    failed = lab.cli("rollback", "--name", name, expect=1)
    assert "nothing to roll back to" in failed.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_a_rolled_back_version_is_promoted_again_only_by_a_person_naming_it(lab, tmp_path, tracking_to):
    """After `rollback` (v2 -> v1), a plain promote (the challenger is still v2), and the pipeline's
    promote task given v2, refuse it naming the rollback; `promote --version 2` re-promotes it (the
    rule still applies) and records that it did."""
    from components import gan

    name = "rollback-sticks"
    lab.register(name, "worse")
    lab.promote("--name", name)
    lab.register(name, "trained")
    lab.promote("--name", name)
    lab.cli("rollback", "--name", name)
    assert champion(lab, name) == "1"

    plain = lab.promote("--name", name).stdout
    assert "version 2 was rolled back" in plain and "promote --version 2" in plain
    assert champion(lab, name) == "1"
    refused = version_tags(lab, name, "2")
    assert "was rolled back" in refused["promotion.reason"]
    assert "promotion.fid_gain" not in refused, "the earlier head-to-head's scores are not this decision's"
    tracking_to(lab.uri)
    parent = lab.client.create_run(lab.client.get_run(lab.trained_eval).info.experiment_id).info.run_id
    task = gan.promote.python_func(parent_run_id=parent, model_name=name, version="2", samples=int(SAMPLES),
                                   **PIPELINE_RULE, **pipeline_inputs(lab, tmp_path))
    assert not task.promoted and "was rolled back" in task.decision and champion(lab, name) == "1"

    again = lab.promote("--name", name, "--version", "2").stdout
    assert "promote rollback-sticks version 2 to champion" in again and champion(lab, name) == "2"
    reinstated = version_tags(lab, name, "2")
    assert "explicit promote --version" in reinstated["promotion.reinstated"]
    assert float(reinstated["promotion.fid_gain_lower"]) > 0
    assert reinstated["promotion.champion_version"] == "1"


PIPELINE_RULE = {"min_fid_gain": 0.0, "max_classes_lost": 0, "min_classes_covered": 10, "confidence": 0.95}


def pipeline_inputs(lab, directory) -> dict:
    """The promote task's artifacts: the dataset and the classifier folder the pipeline's own step writes."""
    from training import jobs

    jobs.train_classifier(str(lab.mnist_path), str(directory / "classifier"))  # from the cache the lab filled
    return {"dataset": SimpleNamespace(path=str(lab.mnist_path)),
            "classifier": SimpleNamespace(path=str(directory / "classifier"))}


COLLAPSED_REFUSED = "1 digit classes covered, needs 10 to be promoted at all (min_classes_covered)"


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
@pytest.mark.parametrize("with_champion", [False, True], ids=["no champion", "a champion"])
def test_no_path_makes_the_collapsed_generator_champion(lab, with_champion, tmp_path, tracking_to):
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

    def champion_stays(name: str) -> bool:
        champion_now = lab.client.get_registered_model(name).aliases.get("champion")
        return champion_now == (1 if with_champion else None)

    name = model("cli")
    lab.register(name, "collapsed")
    said = lab.promote("--name", name).stdout.splitlines()
    assert len(said) == 1 and COLLAPSED_REFUSED in said[0], said
    assert champion_stays(name)

    tracking_to(lab.uri)
    with mlflow.start_run(experiment_id=mlflow.set_experiment("mnist-gan").experiment_id) as parent:
        name = model("main-and-sweep")
        _, promoted = jobs.register_and_promote(lab.collapsed_run, lab.collapsed_eval,
                                                JobConfig(model_name=name, samples=int(SAMPLES)),
                                                str(lab.mnist_path), parent.info.run_id)
        said = summaries.promoted_lines(promoted)
        assert len(said) == 1 and COLLAPSED_REFUSED in said[0], said
        assert champion_stays(name)

        name = model("pipeline")
        version = lab.register(name, "collapsed")
        assert gan.evaluation_gate.python_func(evaluation_run_id=lab.collapsed_eval, **PIPELINE_RULE) is False
        promoted = gan.promote.python_func(parent_run_id=parent.info.run_id, model_name=name,
                                           version=version, samples=int(SAMPLES), **PIPELINE_RULE,
                                           **pipeline_inputs(lab, tmp_path))
        decision = json.loads(promoted.decision)
        assert not promoted.promoted and not decision["promoted"] and COLLAPSED_REFUSED in decision["reason"]
        assert champion_stays(name)


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_a_stricter_rule_refuses_what_the_default_accepts(lab):
    name = "strict-test"
    for kind in ("worse", "trained"):
        lab.register(name, kind)
        lab.promote("--name", name, "--min-fid-gain", "100000")
    assert champion(lab, name) == "1"
    assert "needs > 100000" in version_tags(lab, name, "2")["promotion.reason"]
    assert "would promote" in lab.promote("--name", name, "--dry-run").stdout
    certain = lab.promote("--name", name, "--dry-run", "--confidence", "1", expect=2)
    assert "confidence must be" in certain.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_racing_promotions_end_with_the_champion_the_rule_picks(lab):
    name = "race-test"
    for kind in ("worse", "slightly_worse", "trained"):  # versions 1, 2 and 3, each better than the last
        lab.register(name, kind)
    lab.promote("--name", name, "--version", "1")
    racers = [cli_process(lab, "promote", "--name", name, "--version", v, "--data", str(lab.mnist_path),
                          "--samples", SAMPLES) for v in ("2", "3")]
    for racer in racers:
        _, err = racer.communicate(timeout=300)
        assert racer.returncode == 0, err[-3000:]
    # whichever went first, version 3 (the trained generator) must end as champion: it beats 1 and 2
    assert champion(lab, name) == "3"
    second = version_tags(lab, name, "2")
    lost_to_3 = (second["promotion.decision"] == "refused" and second["promotion.champion_version"] == "3"
                 and "head to head" in second["promotion.reason"])
    superseded_by_3 = version_tags(lab, name, "3")["promotion.previous_champion"] == "2"
    assert lost_to_3 or superseded_by_3, "the loser's decision and reason are recorded"
    assert name + ".promotion-lock" not in [m.name for m in lab.client.search_registered_models()]


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_a_promotion_waits_for_the_lock_another_holds(lab):
    from training.promotion_lock import promotion_lock

    name = "lock-test"
    lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
            "--evaluation-run-id", lab.trained_eval)
    with promotion_lock(lab.client, name):
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


@pytest.mark.slow
def test_a_registry_that_cannot_say_who_is_champion_moves_nothing(tmp_path):
    """The registry answers 503 to every read of the model (a stand-in in front of a real MLflow server
    injects it and forwards every other request): promote must not read that as "no champion yet". It
    exits 1 with one line; the champion, the challenger's tags and the lock are as before."""
    from mlflow import MlflowClient

    from infra.local_stack import mlflow_server
    from tests.conftest import run_cli
    from tests.support import recording_server

    name, requests = "flaky", []
    with mlflow_server(tmp_path / "mlflow") as uri:
        client = MlflowClient(uri)
        experiment = client.create_experiment("generators")
        client.create_registered_model(name)
        for _ in range(2):
            model = client.create_logged_model(experiment, name="generator")
            client.create_model_version(name, f"models:/{model.model_id}", model_id=model.model_id)
        client.set_registered_model_alias(name, "champion", "1")

        def answer(request):
            reads_the_model = request["query"].get("name") == [name]
            if request["path"].endswith("/registered-models/get") and reads_the_model:
                return 503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the registry is busy"}
            return recording_server.forward(uri, request)

        with recording_server.serve(answer, requests) as flaky:
            for args in (["--version", "2"], []):  # the champion's read fails; the challenger's
                result = run_cli(["promote", "--name", name, *args], tmp_path, MLFLOW_TRACKING_URI=flaky,
                                 MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
                said = result.stderr.strip().splitlines()
                assert result.returncode == 1 and len(said) == 1, result.stderr[-3000:]
                assert f"did not say which version of {name} is" in said[0]
                assert said[0].endswith("nothing was changed")
        assert client.get_registered_model(name).aliases == {"champion": "1"}  # (a string over REST)
        assert not [key for key in client.get_model_version(name, "2").tags if key.startswith("promotion.")]
        assert [m.name for m in client.search_registered_models()] == [name], "the lock was released"
        assert any(r["path"].endswith("/registered-models/delete") for r in requests), "(it was taken)"


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_a_dry_run_into_another_registry_writes_nothing_anywhere(lab, tmp_path):
    """`promote --dry-run --to-registry-uri` judges the challenger against the target's champion head to
    head, without copying it there, creating the target's store, or writing in the source."""
    from mlflow import MlflowClient

    name = "dry-run-target"
    lab.register(name, "worse")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    missing = lab.promote("--name", name, "--dry-run", "--to-registry-uri", target).stdout
    assert f"would promote {name}/1 (copied into {name}) to champion: no champion yet" in missing
    assert not (tmp_path / "target.db").exists(), "the dry run created the target's store"
    lab.promote("--name", name, "--to-registry-uri", target)  # the target's champion: the worse generator
    lab.register(name, "trained")
    source_runs = len(_every_run(lab.client))
    target_client = MlflowClient(target)
    before = (target_client.search_model_versions(f"name='{name}'"), _every_run(target_client))

    judged = lab.promote("--name", name, "--dry-run", "--to-registry-uri", target).stdout
    assert f"would promote {name}/2 (copied into {name}) to champion: FID" in judged
    assert "head to head" in judged
    after = (target_client.search_model_versions(f"name='{name}'"), _every_run(target_client))
    assert [len(b) for b in before] == [len(a) for a in after] == [1, 1]
    assert target_client.get_registered_model(name).aliases["champion"] == 1
    assert len(_every_run(lab.client)) == source_runs
    assert "promotion.decision" not in version_tags(lab, name, "2")


def _every_run(client) -> list:
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
@pytest.mark.xdist_group("lab")
def test_a_gain_only_on_paper_is_refused_head_to_head(lab):
    """A version whose recorded evaluation claims a lower FID than the champion's (another evaluator,
    other latents, or luck) but which is the same generator: head to head the gain is nothing, so it is
    refused; its recorded scores stay on it for people to read."""
    name = "paper-gain"
    lab.register(name, "trained")
    lab.promote("--name", name)
    recorded = lab.client.get_run(lab.trained_eval).data.metrics["fid"]
    lab.cli("register", "--name", name, "--training-run-id", lab.trained_run,
            "--evaluation-run-id", evaluation_run(lab, recorded - 0.5))
    refused = lab.promote("--name", name).stdout
    assert "keep the champion (version 1)" in refused and champion(lab, name) == "1"
    tags = version_tags(lab, name, "2")
    assert float(tags["eval.fid"]) == pytest.approx(recorded - 0.5)
    assert float(tags["promotion.fid_gain"]) == 0.0 and float(tags["promotion.fid_gain_lower"]) == 0.0
    assert "(gain 0.000, at least 0.000 with 95% confidence, needs > 0)" in tags["promotion.reason"]
