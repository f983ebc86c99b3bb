"""Recognisable fake credentials for the environment of a job, and a scan that none of them (nor their
base64 forms, nor the basic-auth header of user and password) was written anywhere. The user name
itself is not a secret: MLflow records it as the runs' user."""

from __future__ import annotations

import base64
from pathlib import Path

USERNAME = {"MLFLOW_TRACKING_USERNAME": "fake-mlflow-user-K3p9"}  # an identity, which MLflow records
FAKE_SECRETS = {
    "AWS_SESSION_TOKEN": "FAKE-aws-session-token-7Hq2",
    "MLFLOW_TRACKING_PASSWORD": "FAKE-mlflow-password-x8Vd",
    "MLFLOW_TRACKING_TOKEN": "FAKE-mlflow-token-Qz41",
    "KF_PIPELINES_TOKEN": "FAKE-kfp-token-Lm05",
    "GITHUB_TOKEN": "FAKE-github-token-Wt66",
}


def forms(secrets: list[str]) -> list[bytes]:
    encoded = [s.encode() for s in secrets]
    basic = base64.b64encode(f"{USERNAME['MLFLOW_TRACKING_USERNAME']}:"
                             f"{FAKE_SECRETS['MLFLOW_TRACKING_PASSWORD']}".encode())
    return encoded + [base64.b64encode(s) for s in encoded] + [basic]


def leaks(places: list[Path | bytes | str], secrets: list[str]) -> list[str]:
    """Where any form of any secret appears: files (folders searched recursively) or text/bytes."""
    found, needles = [], forms(secrets)
    for place in places:
        if isinstance(place, Path):
            files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
            blobs = [(str(p), p.read_bytes()) for p in files]
        else:
            blobs = [("output", place.encode() if isinstance(place, str) else place)]
        found += [f"{name}: {needle[:12]!r}..." for name, blob in blobs for needle in needles
                  if needle in blob]
    return found
