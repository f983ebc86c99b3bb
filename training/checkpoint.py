"""Atomic training checkpoints: the whole state as one .npz plus a JSON manifest holding its sha256.

A checkpoint counts only when it is intact: its manifest is a JSON object naming its .npz, the .npz
matches the manifest's sha256, and the manifest matches the digest of its own content that the .npz
carries (written first, so neither file can change unnoticed). A damaged latest checkpoint (half
written, truncated, flipped bytes) is skipped, said so in one line, in favour of the previous intact
one; with none intact, CheckpointError names each problem in one line. Training that stops early says
what its checkpoints hold: Preempted (resumable), NonFiniteLoss (the bad weights were never saved).
Keras is imported only to write or restore a checkpoint: the CLI and the pre-flight checks import this
module without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from training.data import file_sha256

KEEP = 2  # checkpoints kept on disk: the newest and one to fall back on
MANIFEST_DIGEST = "manifest_sha256"  # the .npz entry holding the digest of the manifest's content
# What save() adds to the caller's meta; a manifest without them is not one.
REQUIRED = {"arrays": str, "sha256": str, "leaves": int, "global_step": int}


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not fit the model being trained."""


class NoIntactCheckpoint(CheckpointError, ValueError):
    """A folder holds checkpoints but none is intact. Also a ValueError: the pre-flight checks leave an
    unreadable checkpoint to the job, which refuses it in one line."""


class Damaged(ValueError):
    """A checkpoint's files are not what save() wrote; the message says how."""


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; training stopped before checkpointing the bad weights."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was written and the run can be resumed."""


def save(directory: Path, state, meta: dict[str, Any]) -> Path:
    """Write state (a nest of tensors) and meta (JSON-able; must hold 'global_step')."""
    import keras  # imported here so that pre-flight checks (latest_manifest) stay light

    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"ckpt-{meta['global_step']:09d}"
    leaves = [np.asarray(keras.ops.convert_to_numpy(x)) for x in keras.tree.flatten(state)]
    manifest = {**meta, "arrays": stem.with_suffix(".npz").name, "leaves": len(leaves)}
    entries = {f"leaf_{i:04d}": a for i, a in enumerate(leaves)} | {
        MANIFEST_DIGEST: np.array(_content_digest(manifest))}
    arrays = _atomic_write(stem.with_suffix(".npz"), lambda f: np.savez(f, **entries))
    manifest["sha256"] = file_sha256(arrays)
    text = json.dumps(manifest, indent=1).encode()
    _prune(directory, _atomic_write(stem.with_suffix(".json"), lambda f: f.write(text)))
    return arrays


def load_latest(directory: Path, template, report: bool = True) -> tuple[Any, dict[str, Any]]:
    """Restore the newest intact checkpoint into the structure of `template` (a state nest); with
    `report`, one line names the newer ones skipped and why."""
    found = _first_intact(directory, report, lambda m: _leaves(directory / m["arrays"], m["leaves"]))
    if found is None:
        raise _none_intact(directory, [])
    manifest_path, manifest, leaves = found
    return _restore(template, leaves, manifest_path), manifest


def newest_intact(directory: Path, report: bool = True) -> dict[str, Any] | None:
    """The manifest of the newest intact checkpoint in one run's folder (None when the folder holds no
    checkpoint), its arrays not loaded; with `report`, one line names the newer ones skipped and why.
    NoIntactCheckpoint when none is intact."""
    found = _first_intact(directory, report, lambda manifest: None)
    return found[1] if found else None


def latest_manifest(directory: Path) -> dict[str, Any] | None:
    """The newest intact checkpoint's manifest (newest_intact), saying nothing of what it skipped: what
    the pre-flight checks and the job's set-up read before restore() says it."""
    return newest_intact(directory, report=False)


def _skipped_line(directory: Path, problems: list[str], used: Path) -> str:
    """What a fallback says: the checkpoints skipped, why, and the one used instead."""
    return f"checkpoint: {directory}: skipped {'; '.join(problems)}; using {used.name} instead"


def _first_intact(directory: Path, report: bool, load) -> tuple[Path, dict[str, Any], Any] | None:
    """(manifest file, manifest, load(manifest)) of the newest checkpoint that is intact and loads;
    None when there is no checkpoint; NoIntactCheckpoint, naming each problem, when none is."""
    problems = []
    for manifest_path in _newest_first(directory):
        try:
            manifest = _intact(manifest_path)
            loaded = load(manifest)
        except Damaged as err:
            problems.append(f"{manifest_path.name}: {err}")
            continue
        if problems and report:
            print(_skipped_line(directory, problems, manifest_path), flush=True)
        return manifest_path, manifest, loaded
    if problems:
        raise _none_intact(directory, problems)
    return None


def _newest_first(directory: Path) -> list[Path]:
    return sorted(directory.glob("ckpt-*.json"), reverse=True)


def _none_intact(directory: Path, problems: list[str]) -> NoIntactCheckpoint:
    detail = f" ({'; '.join(problems)})" if problems else ""
    return NoIntactCheckpoint(f"no intact checkpoint in {directory}{detail}")


def _intact(manifest_path: Path) -> dict[str, Any]:
    """The manifest at `manifest_path`, once it and its .npz are proved to be what save() wrote;
    Damaged saying what is wrong otherwise."""
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:  # a UnicodeDecodeError is a ValueError
        raise Damaged(f"unreadable manifest ({type(err).__name__})") from None
    _check_fields(manifest)
    arrays = manifest_path.parent / manifest["arrays"]
    try:
        digest = file_sha256(arrays)
    except (OSError, ValueError) as err:  # ValueError: a name with a NUL byte
        raise Damaged(f"{arrays.name}: {getattr(err, 'strerror', None) or err}") from None
    if digest != manifest["sha256"]:
        raise Damaged(f"{arrays.name} does not match the manifest's sha256")
    recorded = _recorded_content_digest(arrays)
    if recorded is not None and recorded != _content_digest(manifest):  # None: written before digests
        raise Damaged("the manifest was altered after it was written")
    return manifest


def _check_fields(manifest) -> None:
    if not isinstance(manifest, dict):
        raise Damaged(f"the manifest is a JSON {type(manifest).__name__}, not an object")
    for name, kind in REQUIRED.items():
        if type(manifest.get(name)) is not kind:
            raise Damaged(f"the manifest's {name} is missing or not a {kind.__name__}")
    if Path(manifest["arrays"]).name != manifest["arrays"] or not manifest["arrays"]:
        raise Damaged("the manifest's arrays must name a file beside it")
    if manifest["leaves"] < 0:
        raise Damaged("the manifest's leaves must be 0 or more")


def _content_digest(manifest: dict[str, Any]) -> str:
    """sha256 of everything in the manifest but the .npz's own digest, in one canonical spelling."""
    content = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _recorded_content_digest(arrays: Path) -> str | None:
    try:
        with np.load(arrays, allow_pickle=False) as npz:
            return str(npz[MANIFEST_DIGEST]) if MANIFEST_DIGEST in npz.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise Damaged(f"{arrays.name}: not a readable .npz ({type(err).__name__})") from None


def _leaves(arrays: Path, count: int) -> list[np.ndarray]:
    try:
        with np.load(arrays, allow_pickle=False) as npz:
            return [npz[f"leaf_{i:04d}"] for i in range(count)]
    except KeyError as err:
        raise Damaged(f"{arrays.name} lacks {err}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise Damaged(f"{arrays.name}: not a readable .npz ({type(err).__name__})") from None


def _restore(template, leaves: list[np.ndarray], source: Path):
    import keras

    expected = keras.tree.flatten(template)
    shapes_match = len(expected) == len(leaves) and all(
        tuple(keras.ops.shape(e)) == a.shape for e, a in zip(expected, leaves))
    if not shapes_match:
        raise CheckpointError(f"{source} was written for another model (preset or z_dim differ)")
    tensors = [keras.ops.convert_to_tensor(a, dtype=keras.backend.standardize_dtype(e.dtype))
               for e, a in zip(expected, leaves)]
    return keras.tree.pack_sequence_as(template, tensors)


def _atomic_write(target: Path, write) -> Path:
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as f:
        try:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            Path(f.name).unlink(missing_ok=True)
            raise
    os.replace(f.name, target)
    return target


def _prune(directory: Path, written: Path) -> None:
    """Keep the KEEP newest intact checkpoints and delete the rest: a damaged one, which resume skips,
    never takes the place of the one it would fall back on. `written`, just saved, is not read again."""
    kept = 0
    for manifest in _newest_first(directory):
        if kept < KEEP and (manifest == written or _is_intact(manifest)):
            kept += 1
            continue
        manifest.unlink()
        manifest.with_suffix(".npz").unlink(missing_ok=True)


def _is_intact(manifest_path: Path) -> bool:
    try:
        _intact(manifest_path)
    except Damaged:
        return False
    return True


def latest_run_dir(root: Path) -> Path | None:
    """The run folder under `root` (one per MLflow run) whose checkpoint was written last. `root` may
    end in a glob pattern (`checkpoints/*` searches one level deeper)."""
    manifests = root.parent.glob(f"{root.name}/*/ckpt-*.json") if root.parent.is_dir() else []
    newest = max(manifests, key=lambda p: p.stat().st_mtime_ns, default=None)
    return newest.parent if newest else None


def pipeline_run_dir(root: Path, pipeline_run: str, resume: bool) -> tuple[Path, bool]:
    """Where a pipeline's training task keeps its checkpoints, and whether it resumes: (folder, resume).

    One folder per pipeline run, root/kfp-<pipeline run>: when Kubeflow retries the task after a crash
    or a preemption (same pipeline run, same inputs), it finds its own checkpoint there and resumes it,
    in the same MLflow run, instead of starting over. With `resume` and no checkpoint of its own, it
    continues the newest checkpoint of an earlier pipeline run under `root` (storage that outlives the
    pod: the pipeline run's workspace, or a mounted volume).
    """
    own = root / f"kfp-{pipeline_run}"
    if latest_run_dir(own) is not None:
        return own, True
    if resume:
        earlier = latest_run_dir(root / "*")
        return (earlier.parent if earlier else own), True
    return own, False
