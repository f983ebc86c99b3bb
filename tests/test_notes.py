"""What the description of a run says, as MLflow's UI shows it at the top of the run's page: the
decision, why, the scores it was made on and links into the UI (main's whole path in a browser:
tests/test_mlflow_ui.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from training import notes
from training.promotion import Decision, PromotionRule

RULE = PromotionRule(min_fid_gain=0.0, max_classes_lost=0, min_classes_covered=10, confidence=0.95)
VIEW = "?workflowType=machine_learning"


@pytest.fixture
def written(monkeypatch):
    """The paragraphs of the description a job writes, on its active run (p3, in experiment 7)."""
    import mlflow

    tags = {}
    monkeypatch.setattr(mlflow, "set_tag", tags.__setitem__)
    monkeypatch.setattr(mlflow, "active_run",
                        lambda: SimpleNamespace(info=SimpleNamespace(run_id="p3", experiment_id="7")))
    return lambda: tags[notes.NOTE_TAG].split("\n\n")


def head_to_head(fid: float, champion_fid: float, lower: float):
    gain = SimpleNamespace(estimate=champion_fid - fid, lower_bound=lambda confidence: lower,
                           p_value=lambda min_gain: 0.01)
    return SimpleNamespace(challenger={"fid": fid, "classes_covered": 10.0}, gain=gain, samples=10_000,
                           champion={"fid": champion_fid, "classes_covered": 10.0}, seconds=40.0)


def main_result(decision: Decision, promote_run: str | None = "p9") -> SimpleNamespace:
    metrics = {"fid": 32.68, "kid": 0.021, "classes_covered": 10.0, "precision": 0.71, "recall": 0.52}
    real = {"fid": 0.65, "kid": 0.0, "classes_covered": 10.0, "precision": 0.86, "recall": 0.9}
    evaluation = SimpleNamespace(metrics=metrics, reference=real, n=10_000)
    return SimpleNamespace(trained=SimpleNamespace(run_id="t1"), version=decision.challenger,
                           evaluated=SimpleNamespace(run_id="e1", evaluation=evaluation),
                           promoted=SimpleNamespace(name="m", decision=decision, run_id=promote_run))


def test_mains_first_model_is_described_with_its_evaluation_against_real_images(written):
    reason = "no champion yet: the first evaluated model becomes champion; 10 classes covered (needs 10)"
    notes.describe_main(main_result(Decision(True, reason, "1", None, rule=RULE)))
    verdict, why, scores, links = written()
    assert verdict == "**m version 1: registered and promoted to champion.**"
    assert why.startswith("Why: no champion yet")
    assert scores == ("On 10,000 samples (real images in brackets): FID 32.68 (0.65) · "
                      "KID 0.021 (0) · classes covered 10 (10) · precision 0.71 (0.86) · recall 0.52 (0.9)")
    assert links.split("  \n") == [
        f"Reports: [evaluation report](#/experiments/7/runs/e1/artifacts/report/report.html{VIEW})",
        (f"Runs: [train](#/experiments/7/runs/t1{VIEW}) · [evaluate](#/experiments/7/runs/e1{VIEW}) · "
         f"[promote](#/experiments/7/runs/p9{VIEW})"),
        f"Model: [m version 1](#/models/m/versions/1{VIEW})"]


def test_a_challenger_scored_against_the_champion_is_described_by_the_head_to_head(written):
    reason = "FID 25.812 vs champion 25.904 head to head (gain 0.092, at least -0.105 ...)"
    notes.describe_main(main_result(Decision(False, reason, "5", "4", head_to_head(25.812, 25.904, -0.105),
                                             RULE)))
    verdict, why, scores, links = written()
    assert verdict == "**m version 5: registered and not promoted.** Version 4 stays champion."
    assert why == f"Why: {reason}"
    assert scores == ("Head to head on 10,000 samples, version 5 vs champion version 4: FID 25.81 vs 25.9 · "
                      "classes covered 10 vs 10 · FID gain 0.092, at least -0.105 with 95% confidence")
    assert "[head-to-head report](#/experiments/7/runs/p9/artifacts/report/decision.html" in links


def test_a_promote_run_says_what_it_decided_and_links_its_picture(written):
    notes.describe_promotion("m", Decision(True, "better", "3", "2", head_to_head(20.0, 25.0, 4.0), RULE))
    assert written()[0] == "**m version 3: promoted to champion.** It replaces version 2."
    assert written()[-1] == ("Reports: [head-to-head report]"
                             f"(#/experiments/7/runs/p3/artifacts/report/decision.html{VIEW})")
    notes.describe_promotion("m", Decision(False, "2 digit classes covered, needs 10", "3", None, rule=RULE))
    assert written() == ["**m version 3: not promoted.** There is no champion yet.",
                         "Why: 2 digit classes covered, needs 10"]


def test_a_sweep_is_described_by_its_ranking_and_what_became_of_the_winner(written):
    winner = SimpleNamespace(trial=SimpleNamespace(index=2), training_run_id="t2", evaluation_run_id="e2")
    rows = [{"rank": 1, "trial": 2, "learning_rate": 0.001, "fid": 31.5, "classes_covered": 10.0,
             "status": "finished", "winner": True, "training_run_id": "t2", "error": ""},
            {"rank": None, "trial": 1, "learning_rate": 0.01, "fid": None, "classes_covered": None,
             "status": "failed", "winner": False, "training_run_id": None, "error": "NonFiniteLoss"}]
    promoted = SimpleNamespace(decision=Decision(True, "why", "3", None, rule=RULE), run_id="p1")
    done = SimpleNamespace(run_id="s1", ranking=SimpleNamespace(rows=rows, winner=winner), model_name="m",
                           version="3", promoted=promoted)
    notes.describe_sweep(done)
    written = written()
    assert written[0] == "**Sweep of 2 trials, 1 finished: trial 2 wins.**"
    assert written[1] == "**m version 3: registered and promoted to champion.**"
    ranking = written[written.index("Ranking:") + 1].splitlines()
    assert ranking == ["| rank | trial | learning_rate | fid | classes_covered | status |",
                           "| --- | ---: | ---: | ---: | ---: | ---: |",
                           "| 1 | 2 | 0.001 | 31.5 | 10 | **winner** |",
                           "| - | 1 | 0.01 | - | - | failed |"]
    assert "[ranking](#/experiments/7/runs/s1/artifacts/sweep/ranking.csv" in written[-1]


def test_a_job_that_fails_says_so_on_its_parent_and_still_fails(written):
    with pytest.raises(RuntimeError), notes.failure_noted("main"):
        raise RuntimeError("evaluation diverged")
    assert written()[0] == "**main failed**: RuntimeError: evaluation diverged"
