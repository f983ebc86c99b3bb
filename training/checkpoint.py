"""Atomic training checkpoints: the whole state as one .npz plus a JSON manifest holding its sha256.

A checkpoint counts only when its manifest exists and the .npz matches the manifest's digest, so a
half-written or corrupted latest checkpoint is skipped in favour of the previous good one. Training
that stops early says what its checkpoints hold: Preempted (resumable), NonFiniteLoss (the bad weights
were never saved). Keras is imported only to write or restore a checkpoint: the CLI and the pre-flight
checks import this module without it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from training.data import file_sha256

KEEP = 2  # checkpoints kept on disk: the newest and one to fall back on


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not fit the model being trained."""


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
    arrays = _atomic_write(stem.with_suffix(".npz"),
                           lambda f: np.savez(f, **{f"leaf_{i:04d}": a for i, a in enumerate(leaves)}))
    manifest = {**meta, "arrays": arrays.name, "sha256": file_sha256(arrays), "leaves": len(leaves)}
    _atomic_write(stem.with_suffix(".json"), lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    _prune(directory)
    return arrays


def load_latest(directory: Path, template) -> tuple[Any, dict[str, Any]]:
    """Restore the newest intact checkpoint into the structure of `template` (a state nest)."""
    problems = []
    for manifest_path in sorted(directory.glob("ckpt-*.json"), reverse=True):
        try:
            manifest = json.loads(manifest_path.read_text())
            arrays = directory / manifest["arrays"]
            if file_sha256(arrays) != manifest["sha256"]:
                raise ValueError("sha256 mismatch")
            with np.load(arrays, allow_pickle=False) as npz:
                leaves = [npz[f"leaf_{i:04d}"] for i in range(manifest["leaves"])]
        except (OSError, ValueError, KeyError) as err:
            problems.append(f"{manifest_path.name}: {err}")
            continue
        return _restore(template, leaves, manifest_path), manifest
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise CheckpointError(f"no intact checkpoint in {directory}{detail}")


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


def _prune(directory: Path) -> None:
    for manifest in sorted(directory.glob("ckpt-*.json"))[:-KEEP]:
        manifest.unlink()
        manifest.with_suffix(".npz").unlink(missing_ok=True)


def latest_manifest(directory: Path) -> dict[str, Any] | None:
    """The newest manifest's content in one run's folder (no integrity check)."""
    manifests = sorted(directory.glob("ckpt-*.json"))
    return json.loads(manifests[-1].read_text()) if manifests else None


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
