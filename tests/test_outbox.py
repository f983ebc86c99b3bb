"""The outbox's journal on the embedded sqlite store: what a killed process left is sent on resume, an
item that can never be sent is set aside instead of blocking the rest, an outage is waited out, and a
damaged journal is read without an exception (property-based)."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import mlflow
import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.corruption import corruptions
from training.outbox import Outbox, TrackingOutage


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


def _store(directory):
    """A real sqlite tracking store with its artifacts under `directory`, and a run on it."""
    client = mlflow.MlflowClient(f"sqlite:///{directory / 'mlflow.db'}")
    experiment = client.create_experiment("outbox", artifact_location=str(directory / "artifacts"))
    return client, client.create_run(experiment).info.run_id


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for entry in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return found


def _set_aside(journal) -> list[dict]:
    side = journal.with_name("tracking-journal.set-aside.jsonl")
    return [json.loads(line) for line in side.read_text().splitlines()] if side.exists() else []


def test_an_item_that_can_never_be_sent_is_set_aside_with_its_reason_and_the_rest_is_sent(
        tmp_path, monkeypatch, capsys):
    client, run_id = _store(tmp_path)
    monkeypatch.chdir(tmp_path)
    journal = tmp_path / "run" / "tracking-journal.jsonl"
    (journal.parent / "grids").mkdir(parents=True)
    for name in ("epoch_0002.png", "epoch_0003.png"):
        (journal.parent / "grids" / name).write_bytes(b"a grid")
    items = [_metric("d_loss", 2), _metric("bad*key", 2), _metric("d_loss", 4),
             {"file": "grids/epoch_0001.png", "artifact_path": "grids"},  # deleted meanwhile
             _metric("d_loss", 6), {"file": "grids/epoch_0002.png", "artifact_path": "grids"},
             {"file": "run/grids/epoch_0003.png", "artifact_path": "grids"}]  # as older versions wrote it
    journal.write_text("".join(json.dumps(item) + "\n" for item in items))

    Outbox(run_id, journal, client).close(wait_s=0)  # nothing to wait for: no outage

    assert [m.step for m in client.get_metric_history(run_id, "d_loss")] == [2, 4, 6]
    assert _artifacts(client, run_id) == ["grids/epoch_0002.png", "grids/epoch_0003.png"]
    assert journal.read_text() == ""
    refused, missing = _set_aside(journal)
    assert refused["item"] == items[1] and "INVALID_PARAMETER_VALUE" in refused["reason"]
    assert missing["item"] == items[3] and "grids/epoch_0001.png: no such file" in missing["reason"]
    said = [line for line in capsys.readouterr().out.splitlines() if "set aside" in line]
    assert len(said) == 1 and str(journal.with_name("tracking-journal.set-aside.jsonl")) in said[0]


def test_a_grid_journaled_in_one_working_folder_is_sent_from_another(tmp_path, monkeypatch):
    from infra.local_stack import free_port

    client, run_id = _store(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    second.mkdir()
    (first / "ckpt" / "run" / "grids").mkdir(parents=True)
    monkeypatch.chdir(first)
    grid = Path("ckpt/run/grids/epoch_0001.png")
    grid.write_bytes(b"a grid")
    down = Outbox(run_id, Path("ckpt/run/tracking-journal.jsonl"),
                  mlflow.MlflowClient(f"http://127.0.0.1:{free_port()}"))  # the server is down
    down.artifact(grid, "grids")
    assert len(down.pending) == 1 and _set_aside(first / "ckpt/run/tracking-journal.jsonl") == []

    monkeypatch.chdir(second)  # --resume from elsewhere, naming the folder another way
    assert Outbox(run_id, first / "ckpt" / "run" / "tracking-journal.jsonl", client).send()
    assert _artifacts(client, run_id) == ["grids/epoch_0001.png"]


@pytest.mark.parametrize("answer", [None, (503, "down for maintenance"), (502, "<html>bad gateway</html>"),
                                    (500, {"error_code": "INTERNAL_ERROR", "message": "database down"}),
                                    (429, {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}),
                                    (401, "credentials expired")],
                         ids=["refused", "503", "502", "500", "429", "401"])
def test_an_outage_keeps_every_item_for_later_and_sets_none_aside(tmp_path, answer):
    from infra.local_stack import free_port
    from tests.support.recording_server import serve

    journal = tmp_path / "run" / "tracking-journal.jsonl"
    (journal.parent / "grids").mkdir(parents=True)
    (journal.parent / "grids" / "epoch_0001.png").write_bytes(b"a grid")
    server = serve(lambda request: answer, []) if answer else contextlib.nullcontext(
        f"http://127.0.0.1:{free_port()}")
    with server as url:
        outbox = Outbox("0123456789abcdef", journal, mlflow.MlflowClient(url))
        outbox.metrics({"d_loss": 0.5}, step=2)
        outbox.artifact(journal.parent / "grids" / "epoch_0001.png", "grids")
        with pytest.raises(TrackingOutage, match="2 item\\(s\\) are kept in .*tracking-journal.jsonl"):
            outbox.close(wait_s=0.2, poll_s=0.05)
    assert len(journal.read_text().splitlines()) == 2 and _set_aside(journal) == []


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the property test's many runs (creating a store takes seconds)."""
    directory = tmp_path_factory.mktemp("store")
    return mlflow.MlflowClient(f"sqlite:///{directory / 'mlflow.db'}"), directory


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corruption=corruptions())
def test_a_damaged_journal_is_sent_or_set_aside_line_by_line_never_raising(store, capsys, corruption):
    """Whatever happened to the journal's bytes, a resumed job reads it without an exception: each
    complete line is sent or set aside with its reason (only an unfinished last line may be dropped),
    and what is left for later is nothing, the server being up."""
    client, directory = store
    experiment = client.get_experiment_by_name("journal") or client.get_experiment(
        client.create_experiment("journal", artifact_location=str(directory / "artifacts")))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    with tempfile.TemporaryDirectory() as scratch:
        journal = Path(scratch) / "tracking-journal.jsonl"
        (journal.parent / "grids").mkdir()
        (journal.parent / "grids" / "epoch_0001.png").write_bytes(b"a grid")
        items = [_metric(f"m{i}", 10 * i + 1) for i in range(4)]
        items.insert(2, {"file": "grids/epoch_0001.png", "artifact_path": "grids"})
        damaged = corruption.apply("".join(json.dumps(item) + "\n" for item in items).encode())
        journal.write_bytes(damaged)
        capsys.readouterr()

        outbox = Outbox(run_id, journal, client)
        assert outbox.send() and journal.read_text() == ""
        set_aside = _set_aside(journal)
        said = capsys.readouterr().out.splitlines()

    assert all(entry["reason"] for entry in set_aside)
    assert len([line for line in said if "set aside" in line]) == (1 if set_aside else 0), said
    assert not [line for line in said if "unreachable" in line]
    metrics = client.get_run(run_id).data.metrics
    sent = sum(len(client.get_metric_history(run_id, key)) for key in metrics) + len(
        _artifacts(client, run_id))
    *complete, unfinished = damaged.split(b"\n")
    lines = len([line for line in complete if line.strip()])
    assert lines <= sent + len(set_aside) <= lines + bool(unfinished.strip())


def _metric(key: str, step: int) -> dict:
    return {"key": key, "value": step + 0.5, "step": step, "timestamp": 1000 + step}
