"""Chaos on the container tracking stack (the server image on PostgreSQL, artifacts in SeaweedFS): each
part killed with SIGKILL and restarted 30 s later (tests/support/chaos.py), during a training job and
during a promotion; then two pipelines started at once on one registry, in containers (kfp.local over
the engine). Each run either completes, with every metric step once, the champion the rule picked and
its files intact, or fails in one line with nothing half-done: no alias moved without its decision
recorded, no promotion lock left behind.

A tier of its own (`make chaos`, which CI runs after `make test`): about 15 minutes on 2 cores."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env, run_cli
from tests.support.chaos import PARTS, Outages
from tests.support.container_stack import HOSTS, tracking_stack
from tests.support.waiting import wait_for
from tests.test_reliability import _history
from training import registry
from training.promotion_lock import lock_name

pytestmark = [pytest.mark.chaos, pytest.mark.containers, pytest.mark.slow, pytest.mark.xdist_group("chaos")]
MODEL = "chaos-gan"
# 4,096 images in batches of 64 for 3 epochs: 192 steps, a metric every 2, a sample grid each epoch
TRAINING = ["--preset", "cpu", "--train-images", "4096", "--batch-size", "64", "--epochs", "3",
            "--log-every", "2", "--eval-every", "0"]
STEPS = 3 * 64
JOB = ["--model-name", MODEL, "--samples", "2000", "--min-classes-covered", "0"]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    """The stack, and the outages of its parts."""
    directory = tmp_path_factory.mktemp("chaos-stack")
    with tracking_stack(directory) as stack:
        outages = Outages(stack, directory / "s3")
        try:
            yield stack, outages
        finally:
            outages.close()


def as_admin(stack) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": stack.host_uri, "MLFLOW_TRACKING_USERNAME": stack.admin[0],
            "MLFLOW_TRACKING_PASSWORD": stack.admin[1]}


def steps(client, run_id: str, key: str = "d_loss") -> list[int]:
    return [step for step, _ in _history(client, run_id, key)]


def assert_champion_decided_and_intact(client, tmp_path: Path) -> str:
    """The champion carries the decision that crowned it, and its files match their checksum."""
    champion = registry.alias_version(client, MODEL, registry.CHAMPION)
    assert champion is not None
    tags = client.get_model_version(MODEL, champion).tags
    assert tags.get("promotion.decision") == "promoted", tags
    registry.download_generator(client, MODEL, champion, tmp_path / f"champion-{champion}")
    assert client.search_registered_models(f"name = '{lock_name(MODEL)}'") == [], "a lock left behind"
    return champion


def one_line_or_success(done: subprocess.CompletedProcess | subprocess.Popen, output: str, command: str):
    assert "Traceback" not in output, output[-3000:]
    if done.returncode != 0:
        last = output.strip().splitlines()[-1]
        assert last.startswith(f"mnist-gan {command}: "), output[-3000:]


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("part", PARTS)
def test_a_job_outlives_a_killed_part_of_the_stack_and_loses_no_metric(chaos, part, host_classifier, tmp_path,
                                                                      monkeypatch, mnist_path):
    """`mnist-gan main` against the stack; `part` killed once its first metrics are in, back 30 s later."""
    stack, outages = chaos
    client = stack.signed_in(monkeypatch)
    log = tmp_path / "main.log"
    args = [sys.executable, "-m", "training.cli", "main", "--data", str(mnist_path), *TRAINING, *JOB,
            "--checkpoint-dir", str(tmp_path / "ckpt")]
    with open(log, "w") as out:
        job = subprocess.Popen(args, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                               env=cli_env(tmp_path, **as_admin(stack)))
    try:
        run_id = wait_for(lambda: next((p.name for p in (tmp_path / "ckpt").glob("*") if p.is_dir()), None),
                          600, "training run", job, every_s=0.5)
        wait_for(lambda: len(steps(client, run_id)) >= 3, 600, "first metrics", job, every_s=0.5)
        with outages.down(part):
            time.sleep(5)
        assert job.wait(timeout=1500) == 0, log.read_text()[-4000:]
    finally:
        if job.poll() is None:
            job.kill()
    said = log.read_text()
    assert "Traceback" not in said and "View run" not in said, said[-4000:]
    assert steps(client, run_id) == list(range(2, STEPS + 1, 2)), "every metric step once"
    assert steps(client, run_id, "epoch_g_loss") == [1, 2, 3]
    assert len(client.list_artifacts(run_id, "grids")) == 3
    assert client.get_run(run_id).info.status == "FINISHED"
    champion = assert_champion_decided_and_intact(client, tmp_path)
    (version,) = [v for v in client.search_model_versions(f"name = '{MODEL}'") if v.run_id == run_id]
    decided = client.get_model_version(MODEL, version.version).tags
    assert decided.get("promotion.decision") in ("promoted", "refused"), decided
    assert (decided["promotion.decision"] == "promoted") == (champion == version.version)


@pytest.fixture
def two_versions(chaos, host_classifier, tmp_path, mnist_path, monkeypatch):
    """At least two registered versions of MODEL (the jobs above made them, or this makes them)."""
    stack, _ = chaos
    client = stack.signed_in(monkeypatch)
    while len(client.search_model_versions(f"name = '{MODEL}'")) < 2:
        made = run_cli(["main", "--data", str(mnist_path), *TRAINING, *JOB, "--checkpoint-dir",
                        str(tmp_path / "ckpt")], tmp_path, timeout=1500, **as_admin(stack))
        assert made.returncode == 0, made.stderr[-3000:]
    return client


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("part", PARTS)
def test_a_promotion_through_a_killed_part_of_the_stack_moves_nothing_half_done(chaos, part, two_versions,
                                                                                 tmp_path, mnist_path):
    """`mnist-gan promote` of a challenger; `part` killed once the promotion holds its lock, back 30 s
    later. It completes or fails in one line; the champion is always one whose decision is recorded;
    a promote after the outage decides and records."""
    stack, outages = chaos
    client = two_versions
    champion = registry.alias_version(client, MODEL, registry.CHAMPION)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    other = next(v.version for v in versions if v.version != champion)
    client.set_registered_model_alias(MODEL, registry.CHALLENGER, other)
    promote = ["promote", "--name", MODEL, "--samples", "2000", "--data", str(mnist_path)]
    command = [sys.executable, "-m", "training.cli", *promote]
    promoter = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=cli_env(tmp_path, **as_admin(stack)))
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(promoter.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: client.search_registered_models(f"name = '{lock_name(MODEL)}'") or promoter.poll()
                 is not None, 300, "promotion lock", every_s=0.5)
        with outages.down(part):
            time.sleep(2)
        promoter.wait(timeout=900)
    finally:
        if promoter.poll() is None:
            promoter.kill()
    reader.join(timeout=30)
    (tmp_path / "promote.log").write_text("".join(output))  # what it said, for a person to read
    one_line_or_success(promoter, "".join(output), "promote")
    now = registry.alias_version(client, MODEL, registry.CHAMPION)
    if now != champion:
        tags = client.get_model_version(MODEL, now).tags
        assert now == other and tags["promotion.previous_champion"] == champion, tags
    again = run_cli(promote, tmp_path, timeout=900, **as_admin(stack))
    assert again.returncode == 0, again.stderr[-3000:]
    assert client.get_model_version(MODEL, other).tags.get("promotion.decision") in ("promoted", "refused")
    assert_champion_decided_and_intact(client, tmp_path)


@pytest.mark.timeout(2700)
def test_two_pipelines_at_once_on_one_registry_each_decide_in_turn(chaos, host_classifier, tmp_path,
                                                                   monkeypatch, mnist_path):
    """Two whole pipelines in containers, started together against one registry: both finish, each
    version is decided under the lock, and the champion is one the rule crowned."""
    stack, _ = chaos
    client = stack.signed_in(monkeypatch)
    name = "chaos-pipelines"
    params = {"preset": "cpu", "train_images": 2048, "batch_size": 64, "log_every": 4, "epochs": 1,
              "samples": 500, "min_classes_covered": 0, "model_name": name, "data": str(mnist_path)}
    flags = [item for key, value in params.items() for item in ("-p", f"{key}={value}")]
    hosts = [item for host, ip in HOSTS.items() for item in ("--add-host", f"{host}:{ip}")]
    service = {**as_admin(stack), "MLFLOW_TRACKING_URI": stack.service_uri}
    runs = []
    for i in range(2):
        work = tmp_path / f"pipeline{i}"
        work.mkdir()
        runs.append(subprocess.Popen(
            [sys.executable, "-m", "training.cli", "pipeline", "run-local", "--runner", "docker", *hosts,
             *flags, "--pipeline-root", str(work / "root")], cwd=work, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=cli_env(work, **service)))
    outputs = [run.communicate(timeout=2400)[0] for run in runs]
    for run, said in zip(runs, outputs):
        assert run.returncode == 0, said[-4000:]
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 2
    for version in versions:
        assert version.tags.get("promotion.decision") in ("promoted", "refused"), version.tags
    champion = registry.alias_version(client, name, registry.CHAMPION)
    assert client.get_model_version(name, champion).tags["promotion.decision"] == "promoted"
    assert client.search_registered_models(f"name = '{lock_name(name)}'") == []
