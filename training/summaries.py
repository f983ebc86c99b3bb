"""What a person reads after a command: the lines `mnist-gan` prints from what each job returned.

Nothing here computes or tracks; each function formats one job's result (training/jobs/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from training.data import Mnist
    from training.deploy import Deployed
    from training.jobs import Evaluated, MainResult, Promoted, SweepResult, Trained
    from training.sweep import Outcome


def trained_line(trained: Trained) -> str:
    from training.tracking import describe_generator

    result = trained.result
    best = f" (FID {result.best['fid']:.4g} on its curve)" if result.selected == "generator_best" else ""
    stop = {"max_minutes": " (its time budget, max_minutes, is spent)",
            "max_steps": " (max_steps reached)"}.get(result.stopped_by, "")
    return (f"train: run {trained.run_id}, {result.global_step} steps, {result.epochs_done} epoch(s){stop}; "
            f"exports {describe_generator(trained.exported())}{best}")


def evaluated_line(evaluated: Evaluated) -> str:
    from training.metrics import HEADLINE

    evaluation = evaluated.evaluation
    return f"evaluate: run {evaluated.run_id}, " + ", ".join(
        f"{k} {evaluation.metrics[k]:.4g} (reference {evaluation.reference[k]:.4g})" for k in HEADLINE)


def registered_line(name: str, version: str) -> str:
    return f"register: {name} version {version} is 'challenger'"


def promoted_lines(promoted: Promoted) -> list[str]:
    decision, would = promoted.decision, "would " if promoted.dry_run else ""
    challenger, lines = f"{promoted.name} version {decision.challenger}", []
    if promoted.copied_from and promoted.dry_run:  # nothing was copied: the source version was judged
        challenger = f"{promoted.copied_from} (copied into {promoted.name})"
    elif promoted.copied_from:
        lines = [f"promote: copied {promoted.copied_from} to {promoted.name}/{decision.challenger}"]
    if decision.promote:
        verdict = f"{would}promote {challenger} to champion"
    elif decision.champion:
        verdict = f"{would}keep the champion (version {decision.champion}), refuse {challenger}"
    else:
        verdict = f"{would}refuse {challenger} (no champion yet, none made)"
    return [*lines, f"promote{' (dry run)' if promoted.dry_run else ''}: {verdict}: {decision.reason}"]


def rollback_lines(name: str, demoted: str, restored: str, deployed: Deployed | None) -> list[str]:
    moved = f"rollback: {name} champion moved from version {demoted} back to {restored}"
    return [moved, *([deployed_line(deployed)] if deployed else [])]


def deployed_line(deployed: Deployed) -> str:
    share = (f", {deployed.canary_traffic_percent}% of the traffic (canary)"
             if deployed.canary_traffic_percent else "")
    if not deployed.applied:
        return (f"deploy: {deployed.model_name} version {deployed.version} already served at "
                f"InferenceService {deployed.service}{share}; the registry's serving tags now say so")
    moved = (f"; the champion moved to version {deployed.champion_now} meanwhile: deploy again (a follower "
             "does)" if deployed.champion_now else "")
    checked = f"; {deployed.checked}" if deployed.checked else ""
    return (f"deploy: {deployed.model_name} version {deployed.version} serves at InferenceService "
            f"{deployed.service} ({'created' if deployed.created else 'patched'}, Ready{share}); "
            f"storageUri {deployed.storage_uri}{checked}{moved}")


def sample_line(count: int, out: Path) -> str:
    return f"sample: {count} images -> {out} and {out.with_suffix('.png')}"


def data_lines(mnist: Mnist, target: Path) -> list[str]:
    counts = f"{len(mnist.x_train):,} training and {len(mnist.x_test):,} test images"
    return [f"data: {mnist.source} checked (sha256 {mnist.sha256[:16]}..., {counts}), written to {target}",
            f"data: train offline with --data {target} (mlflow run: -P data={target})"]


def main_lines(done: MainResult) -> list[str]:
    return [trained_line(done.trained), evaluated_line(done.evaluated),
            registered_line(done.promoted.name, done.version), *promoted_lines(done.promoted),
            *summary_lines(done)]


def summary_lines(done: MainResult) -> list[str]:
    """What a person acts on after `main`: the champion and why, the FID against real images, and where
    to look further (the experiment's training runs in MLflow's UI, main's page saying what it decided)."""
    import mlflow

    decision, name = done.promoted.decision, done.promoted.name
    champion = decision.challenger if decision.promote else decision.champion
    moved = f"{'moved to it' if decision.promote else 'not moved'} ({decision.reason})"
    evaluation = done.evaluated.evaluation
    uri = mlflow.get_tracking_uri()
    where = ([f"open {done.link}"] if uri.startswith(("http://", "https://"))
             else [f"mlflow ui --backend-store-uri {uri}", f"then open {done.link}"])
    fid = (f"FID {evaluation.metrics['fid']:.4g} on {evaluation.n:,} samples "
           f"(real images score {evaluation.reference['fid']:.4g})")
    return [f"main: done (run {done.run_id})",
            f"  champion: {name} version {champion}; alias 'champion' {moved}" if champion else
            f"  champion: none for {name}; version {decision.challenger} {moved}",
            f"  {fid}",
            f"  look further: {where[0]}", *(f"                {line}" for line in where[1:]),
            f"                report: runs:/{done.evaluated.run_id}/report/report.html",
            f"                serve: make serve MODEL_URI=models:/{name}@champion"]


def trial_line(outcome: Outcome, trials: int) -> str:
    """One trial of a sweep as it ends, while the others run."""
    what = ", ".join(f"{k}={v}" for k, v in outcome.trial.values.items())
    done = f"run {outcome.training_run_id}" if outcome.status == "finished" else outcome.error
    return f"sweep: trial {outcome.trial.index}/{trials} ({what}) {outcome.status}: {done}"


def sweep_lines(done: SweepResult) -> list[str]:
    columns = [k for k in done.ranking.rows[0] if k not in ("training_run_id", "error", "winner")]
    table = [columns] + [[_cell(row[k]) for k in columns] for row in done.ranking.rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["sweep: " + "  ".join(cell.rjust(width) for cell, width in zip(line, widths)).rstrip()
             + ("  <- winner" if i and done.ranking.rows[i - 1]["winner"] else "")
             for i, line in enumerate(table)]
    winner = done.ranking.winner
    lines += [f"sweep: trial {winner.trial.index} wins (run {winner.training_run_id})",
              registered_line(done.model_name, done.version)]
    lines += promoted_lines(done.promoted)
    return [*lines, f"sweep: run {done.run_id} done; the ranking is in its artifacts under sweep/"]


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
