"""Evaluation: a collapsed generator scores worse than a trained one, real images score near the ideal,
the report is logged, and the metrics land on the generator's LoggedModel with the test split."""

from __future__ import annotations

from pathlib import Path

from tests.support.two_generators import USES_LAB
from training.metrics import HEADLINE, LOWER_IS_BETTER

pytestmark = USES_LAB


def test_a_collapsed_generator_scores_worse_than_a_trained_one(lab):
    trained = lab.client.get_run(lab.trained_eval).data.metrics
    collapsed = lab.client.get_run(lab.collapsed_eval).data.metrics
    assert collapsed["classes_covered"] == 1 and trained["classes_covered"] >= 9
    for name in HEADLINE:
        if name in ("precision", "classes_covered"):
            continue
        worse = (collapsed[name] > trained[name] if name in LOWER_IS_BETTER
                 else collapsed[name] < trained[name])
        assert worse, f"{name}: collapsed {collapsed[name]} vs trained {trained[name]}"
    # Precision measures fidelity only: one real digit repeated is perfectly "precise". Recall and
    # class coverage are what see the collapse.
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.01


def test_real_training_images_score_near_the_ideal(lab):
    reference = lab.client.get_run(lab.trained_eval).data.metrics
    assert reference["reference_fid"] < 5 and reference["reference_kid"] < 0.1
    assert reference["reference_classifier_score"] > 9.5 and reference["reference_classes_covered"] == 10
    assert reference["reference_precision"] > 0.8 and reference["reference_recall"] > 0.8
    assert reference["reference_kl_to_uniform"] < 0.01
    assert lab.client.get_run(lab.trained_eval).data.params["evaluator_test_accuracy"] >= "0.99"


def test_the_evaluation_report_is_logged(lab, tmp_path):
    report = Path(lab.client.download_artifacts(lab.trained_eval, "report", str(tmp_path)))
    assert {p.name for p in report.iterdir()} == {"grid.png", "neighbours.png", "histogram.png",
                                                   "report.md", "report.html"}
    markdown = (report / "report.md").read_text()
    assert "| fid |" in markdown and "![samples](grid.png)" in markdown
    assert "data:image/png;base64," in (report / "report.html").read_text()
    assert lab.client.get_run(lab.trained_run).data.tags["evaluation_run_id"] == lab.trained_eval
