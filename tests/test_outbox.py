"""The outbox's journal on the embedded sqlite store: what a killed process left is sent on resume."""

from __future__ import annotations

import json

import mlflow

from training.outbox import Outbox


def test_a_journal_left_by_a_killed_process_is_sent_in_order_up_to_a_cut_line(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("outbox")).info.run_id
    journal = tmp_path / "run" / "tracking-journal.jsonl"
    journal.parent.mkdir()
    items = [{"key": "d_loss", "value": 0.5 + step, "step": step, "timestamp": 1000 + step}
             for step in (2, 4)]
    journal.write_text("".join(json.dumps(item) + "\n" for item in items) + '{"key": "d_lo')

    outbox = Outbox(run_id, journal, client)
    assert outbox.last_step("d_loss") == 4  # waiting in the journal counts as logged
    assert outbox.send() and journal.read_text() == ""
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "d_loss")] == [(2, 2.5), (4, 4.5)]
    outbox.metrics({"d_loss": 9.0}, step=6)
    assert [m.step for m in client.get_metric_history(run_id, "d_loss")] == [2, 4, 6]
