"""Custom resources checked against their CustomResourceDefinitions, strictly: an unknown field is refused,
as `kubectl apply` (field validation Strict) refuses it, where the API server would otherwise drop it.

The CRDs come from a folder named by $MNIST_GAN_KSERVE_CRDS (KServe v0.20.0's `config/crd/full/`); they
are not part of this repository."""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

CRDS = "MNIST_GAN_KSERVE_CRDS"


def crd_folder() -> Path:
    """The folder $MNIST_GAN_KSERVE_CRDS names, or a skip of the calling test when there is none."""
    given = os.environ.get(CRDS)
    if not given or not Path(given).is_dir():
        pytest.skip(f"KServe's CRDs are not here: set {CRDS} to a copy of config/crd/full/ of KServe v0.20.0"
                    + (f" ({given} is not a folder)" if given else ""))
    return Path(given)


def strict(schema: dict) -> dict:
    """A copy of an OpenAPI v3 `schema` where every object that lists its properties allows no others,
    unless it says otherwise (`additionalProperties`, `x-kubernetes-preserve-unknown-fields`)."""
    schema = copy.copy(schema)
    if "properties" in schema:
        schema["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    for keyword in ("allOf", "anyOf", "oneOf"):
        if keyword in schema:
            schema[keyword] = [strict(sub) for sub in schema[keyword]]
    return schema


@functools.cache
def _validators(folder: Path) -> dict[tuple[str, str], jsonschema.Validator]:
    """(apiVersion, kind) -> a strict validator, for every version of every CRD in `folder`."""
    validators = {}
    for path in sorted(folder.glob("*.y*ml")):
        for crd in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                loose = version["schema"]["openAPIV3Schema"]
                schema = strict(loose)
                if "metadata" in loose["properties"]:  # described loosely: the API server checks it
                    schema["properties"]["metadata"] = loose["properties"]["metadata"]
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                validators[key] = jsonschema.Draft4Validator(schema)
    return validators


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top)"


def _explain(error: jsonschema.ValidationError) -> list[str]:
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = error.schema.get("properties", {})
        prefix = f"{_where(error)}." if error.absolute_path else ""
        return [f"{prefix}{name}: unknown field" for name in error.instance if name not in known]
    return [f"{_where(error)}: {error.message}"]


def refusals(manifest: dict, folder: Path) -> list[str]:
    """Why the API server would refuse `manifest` under the CRDs in `folder`, one line a bad field, each
    starting with the field's path (`spec.predictor.model.storageURI: unknown field`); [] if none.
    Raises LookupError if no CRD in `folder` defines the manifest's apiVersion and kind."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    validator = _validators(folder.resolve()).get(key)
    if validator is None:
        raise LookupError(f"no CRD in {folder} defines apiVersion {key[0]}, kind {key[1]}")
    errors = sorted(validator.iter_errors(manifest), key=lambda error: list(map(str, error.absolute_path)))
    return [line for error in errors for line in _explain(error)]
