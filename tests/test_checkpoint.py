"""Checkpoints as a resumed job reads them: every damage to the newest checkpoint's files (a cut write,
flipped bytes, an emptied or overwritten file) ends in the previous intact checkpoint, said in one line,
or in a one-line CheckpointError when none is intact; never in another exception (property-based)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.corruption import Corruption, corruptions
from training import checkpoint
from training.checkpoint import CheckpointError, NoIntactCheckpoint

EXAMPLES = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
STEPS = (4, 8)  # the previous checkpoint and the newest
KINDS = ("json", "npz")  # a checkpoint's manifest and its arrays


def _state(step: int) -> dict[str, np.ndarray]:
    return {"weights": np.arange(12, dtype=np.float32).reshape(3, 4) + step, "step": np.array(step)}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A folder with two checkpoints as save() writes them, their meta holding floats, lists and text."""
    directory = tmp_path_factory.mktemp("checkpoints")
    for step in STEPS:
        checkpoint.save(directory, _state(step), {"global_step": step, "epoch": step / 4, "run_id": "r1",
                                                  "history": {"d_loss": [[2, 0.5], [step, 0.25]]}})
    return directory


def _copy(written: Path, into: str) -> Path:
    return Path(shutil.copytree(written, Path(into) / "run"))


def _file(directory: Path, step: int, kind: str) -> Path:
    return directory / f"ckpt-{step:09d}.{kind}"


def _damage(path: Path, corruption: Corruption) -> bool:
    """Apply `corruption`; whether what the file says changed (a manifest's JSON content, an npz's bytes)."""
    before = path.read_bytes()
    path.write_bytes(corruption.apply(before))
    return _meaning(path.read_bytes(), path.suffix) != _meaning(before, path.suffix)


def _meaning(data: bytes, suffix: str):
    if suffix == ".npz":
        return data
    try:
        return json.dumps(json.loads(data), sort_keys=True)
    except (ValueError, RecursionError):
        return None


def _load(directory: Path, capsys) -> tuple[int | None, list[str], CheckpointError | None]:
    """The step load_latest restored (None if it refused), the lines it printed, and its refusal."""
    capsys.readouterr()
    try:
        state, manifest = checkpoint.load_latest(directory, _state(0))
    except CheckpointError as refused:
        return None, capsys.readouterr().out.splitlines(), refused
    step = manifest["global_step"]
    np.testing.assert_array_equal(np.asarray(state["weights"]), _state(step)["weights"])
    assert manifest["history"] == {"d_loss": [[2, 0.5], [step, 0.25]]}, "the manifest as it was written"
    return step, capsys.readouterr().out.splitlines(), None


@EXAMPLES
@given(kind=st.sampled_from(KINDS), corruption=corruptions())
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_in_one_line(written, capsys, kind,
                                                                                corruption):
    with tempfile.TemporaryDirectory() as scratch:
        directory = _copy(written, scratch)
        changed = _damage(_file(directory, STEPS[1], kind), corruption)
        step, said, refused = _load(directory, capsys)
        assert refused is None, f"the previous checkpoint is intact, yet: {refused}"
        if not changed:  # e.g. a newline flipped to a space in the manifest: the same content
            assert step == STEPS[1] and said == []
            return
        assert step == STEPS[0], "a changed checkpoint is never used"
        assert len(said) == 1 and said[0].startswith(f"checkpoint: {directory}: skipped ckpt-000000008.json")
        assert said[0].endswith("using ckpt-000000004.json instead")


@EXAMPLES
@given(damages=st.tuples(st.sampled_from(KINDS), corruptions(), st.sampled_from(KINDS), corruptions()))
def test_with_every_checkpoint_damaged_resume_is_refused_in_one_line(written, capsys, damages):
    previous_kind, previous, newest_kind, newest = damages
    with tempfile.TemporaryDirectory() as scratch:
        directory = _copy(written, scratch)
        previous_changed = _damage(_file(directory, STEPS[0], previous_kind), previous)
        newest_changed = _damage(_file(directory, STEPS[1], newest_kind), newest)
        step, said, refused = _load(directory, capsys)
        if not newest_changed:
            assert step == STEPS[1]
        elif not previous_changed:
            assert step == STEPS[0] and len(said) == 1
        else:
            assert isinstance(refused, NoIntactCheckpoint) and said == []
            message = str(refused)
            assert "\n" not in message and message.startswith(f"no intact checkpoint in {directory} (")
            assert "ckpt-000000008.json: " in message and "ckpt-000000004.json: " in message
            with pytest.raises(ValueError, match="no intact checkpoint"):  # the pre-flight's reading
                checkpoint.latest_manifest(directory)


def test_a_manifest_edited_to_other_valid_values_is_not_used(written, tmp_path, capsys):
    """The .npz carries the digest of its manifest's content: a change that keeps the JSON valid (a
    flipped digit of global_step) is caught, not trained on."""
    directory = _copy(written, str(tmp_path))
    newest = _file(directory, STEPS[1], "json")
    newest.write_text(newest.read_text().replace('"global_step": 8', '"global_step": 9'))
    step, said, _ = _load(directory, capsys)
    assert step == STEPS[0] and "the manifest was altered after it was written" in said[0]


def test_checkpoints_written_before_manifests_carried_a_digest_still_load(written, tmp_path, capsys):
    directory = _copy(written, str(tmp_path))
    for step in STEPS:  # as the previous version wrote them: no digest entry in the .npz
        arrays, manifest_path = _file(directory, step, "npz"), _file(directory, step, "json")
        with np.load(arrays) as npz:
            np.savez(arrays, **{k: npz[k] for k in npz.files if k != checkpoint.MANIFEST_DIGEST})
        manifest = json.loads(manifest_path.read_text())
        manifest_path.write_text(json.dumps({**manifest, "sha256": checkpoint.file_sha256(arrays)}))
    step, said, _ = _load(directory, capsys)
    assert step == STEPS[1] and said == []


def test_a_folder_without_checkpoints_has_no_latest_manifest_and_nothing_to_load(tmp_path):
    assert checkpoint.latest_manifest(tmp_path) is None
    with pytest.raises(CheckpointError, match=f"no intact checkpoint in {tmp_path}$"):
        checkpoint.load_latest(tmp_path, _state(0))


def test_saving_after_a_fallback_keeps_the_checkpoint_fallen_back_on_and_drops_the_damaged_one(written,
                                                                                              tmp_path):
    """A damaged newest checkpoint (one written at a preemption, say, off the save interval) must not
    outlive the intact one resume fell back on: the next save keeps the two newest intact ones."""
    directory = _copy(written, str(tmp_path))
    damaged = _file(directory, STEPS[1], "npz")
    damaged.write_bytes(damaged.read_bytes()[:-7])
    checkpoint.save(directory, _state(6), {"global_step": 6})
    assert sorted(p.name for p in directory.glob("ckpt-*")) == [
        "ckpt-000000004.json", "ckpt-000000004.npz", "ckpt-000000006.json", "ckpt-000000006.npz"]
    checkpoint.save(directory, _state(10), {"global_step": 10})
    assert sorted(p.name for p in directory.glob("ckpt-*.json")) == ["ckpt-000000006.json",
                                                                     "ckpt-000000010.json"]


def test_a_checkpoint_keeps_no_credential_of_the_data_url(tmp_path):
    """Checkpoints live on volumes other people and pods read; `data` may change on resume, so the
    manifest needs only its redacted form."""
    from training.config import TrainConfig
    from training.loop import _RunState

    url = "https://al:s3cret-Hq7@example.org/mnist.npz?X-Amz-Signature=f00d"
    config = TrainConfig(data=url, preset="tiny")
    _RunState(config, tmp_path, 60_000, _state(1)).save(_state(1), 0, 1, None)
    (manifest,) = tmp_path.glob("ckpt-*.json")
    assert json.loads(manifest.read_text())["config"]["data"] == "https://example.org/mnist.npz?X-Amz-Signature=REDACTED"
    assert "s3cret" not in manifest.read_text() and "f00d" not in manifest.read_text()
