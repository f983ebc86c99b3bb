"""The descriptions of the runs a person opens first (`mlflow.note.content`: Markdown, at the top of a run's
page in MLflow's UI): what `main`, a sweep and a promotion made and decided, the scores it was decided on
and links to the reports and runs; why a job's parent run failed. `write` is the one place a note is set.

Links are routes relative to the UI's address (`#/experiments/...`), so a note reads the same on any
server that shows it.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from typing import TYPE_CHECKING

from training.mlflow_env import TRAINING_VIEW, ui_route
from training.redaction import error_text, redacted

if TYPE_CHECKING:
    from training.jobs import MainResult, Promoted, SweepResult
    from training.promotion import Decision

NOTE_TAG = "mlflow.note.content"
LONGEST = 5000  # characters of a tag value every MLflow store keeps (tracking.MAX_TAG)
# main's scores when there was no champion to score head to head
EVALUATION = {"fid": "FID", "kid": "KID", "classes_covered": "classes covered", "precision": "precision",
              "recall": "recall"}
RANKED = 10  # rows of a sweep's ranking in its note; all of them are in its sweep/ranking.csv


def write(paragraphs: list[str]) -> None:
    """The active run's description: Markdown paragraphs (empty ones left out), any URL in them
    redacted."""
    import mlflow

    mlflow.set_tag(NOTE_TAG, redacted("\n\n".join(filter(None, paragraphs)))[:LONGEST])


def describe_main(done: MainResult) -> None:
    """main's parent run: the version registered, promoted or not and why, the scores (head to head with
    the champion when there was one, else the evaluation's against real images), the reports, the runs."""
    evaluation, promoted = done.evaluated.evaluation, done.promoted
    measured = [] if promoted.decision.head_to_head else [
        f"On {evaluation.n:,} samples (real images in brackets): " + " · ".join(
            f"{label} {_number(evaluation.metrics[k])} ({_number(evaluation.reference[k])})"
            for k, label in EVALUATION.items())]
    write([*_decided(promoted.name, promoted.decision, registered=True), *measured,
           _links([("evaluation report", done.evaluated.run_id, "report/report.html"),
                   *_decision_report(promoted)],
                  {"train": done.trained.run_id, "evaluate": done.evaluated.run_id,
                   "promote": promoted.run_id},
                  (promoted.name, done.version))])


def describe_sweep(done: SweepResult) -> None:
    """A sweep's parent run: the winner, what became of it (as main's says), the ranking, the reports."""
    rows, winner = done.ranking.rows, done.ranking.winner
    finished = sum(row["status"] == "finished" for row in rows)
    columns = [k for k in rows[0] if k not in ("training_run_id", "error", "winner", "status")]
    ranking = _table([*columns, "status"], [[*(_number(row[k]) for k in columns),
                                             "**winner**" if row["winner"] else row["status"]]
                                            for row in rows[:RANKED]])
    more = f", {len(rows) - RANKED} more in sweep/ranking.csv" if len(rows) > RANKED else ""
    write([f"**Sweep of {len(rows)} trials, {finished} finished: trial {winner.trial.index} wins.**",
           *_decided(done.model_name, done.promoted.decision, registered=True),
           f"Ranking{more}:\n\n{ranking}",
           _links([("ranking", done.run_id, "sweep/ranking.csv"),
                   ("FID by parameter", done.run_id, "sweep/fid_by_parameter.png"),
                   ("winner's evaluation report", winner.evaluation_run_id, "report/report.html"),
                   *_decision_report(done.promoted)],
                  {"winner's training": winner.training_run_id,
                   "winner's evaluation": winner.evaluation_run_id, "promote": done.promoted.run_id},
                  (done.model_name, done.version))])


def describe_promotion(name: str, decision: Decision) -> None:
    """The active promote run: the decision, why, the head-to-head's scores and its picture."""
    import mlflow

    run_id = mlflow.active_run().info.run_id
    reports = [("head-to-head report", run_id, "report/decision.html")] if decision.head_to_head else []
    write([*_decided(name, decision, registered=False), _links(reports, {}, None)])


@contextlib.contextmanager
def failure_noted(job: str):
    """A job's parent run (active): if the body raises, its description says so and why."""
    try:
        yield
    except Exception as err:
        write([f"**{job} failed**: {error_text(err)}",
               "Its child runs show how far it got (a step that failed holds the same `error` tag)."])
        raise


def _decided(name: str, decision: Decision, registered: bool) -> list[str]:
    """The verdict in bold, why, and the head-to-head's scores when there was a champion to score with it."""
    version = f"{name} version {decision.challenger}: " + ("registered and " if registered else "")
    if decision.promote:
        verdict = f"**{version}promoted to champion.**" + (f" It replaces version {decision.champion}."
                                                          if decision.champion else "")
    elif decision.champion:
        verdict = f"**{version}not promoted.** Version {decision.champion} stays champion."
    else:
        verdict = f"**{version}not promoted.** There is no champion yet."
    scores = decision.scores()
    if not scores:
        return [verdict, f"Why: {decision.reason}"]
    number = {key: _number(value) for key, value in scores.items()}
    measured = (f"Head to head on {scores['samples']:,.0f} samples, version {decision.challenger} vs "
                f"champion version {decision.champion}: FID {number['fid']} vs {number['champion_fid']} · "
                f"classes covered {number['classes_covered']} vs {number['champion_classes_covered']} · "
                f"FID gain {scores['fid_gain']:.3f}, at least {scores['fid_gain_lower']:.3f} with "
                f"{scores['confidence']:.0%} confidence")
    return [verdict, f"Why: {decision.reason}", measured]


def _decision_report(promoted: Promoted) -> list[tuple[str, str, str]]:
    """The head-to-head's picture, on the promote run, when there was a champion to score."""
    if promoted.decision.head_to_head is None or promoted.run_id is None:
        return []
    return [("head-to-head report", promoted.run_id, "report/decision.html")]


def _links(reports: list[tuple[str, str, str]], runs: dict[str, str | None],
           model: tuple[str, str] | None) -> str:
    """Lines of links: the reports (artifacts, shown in their run's Artifacts tab), runs, the version."""
    experiment = _experiment_id()
    to_reports = [f"[{text}]({ui_route(experiment, run, path)})" for text, run, path in reports]
    to_runs = [f"[{text}]({ui_route(experiment, run)})" for text, run in runs.items() if run]
    lines = [*(["Reports: " + " · ".join(to_reports)] if to_reports else []),
             *(["Runs: " + " · ".join(to_runs)] if to_runs else [])]
    if model:
        name, version = model
        lines.append(f"Model: [{name} version {version}](#/models/{urllib.parse.quote(name, safe='')}"
                     f"/versions/{version}?{TRAINING_VIEW})")
    return "  \n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] + ["---:"] * (len(header) - 1), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _experiment_id() -> str:
    import mlflow

    return mlflow.active_run().info.experiment_id
