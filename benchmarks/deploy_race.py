"""Race deploys of one model against one InferenceService, many times in a row: when the last of them
ends, the registry's serving tags must say what the service serves. Each round moves `champion` to
version A and starts `mnist-gan deploy`, moves it to version B a moment later and starts another (the
shape of a deploy racing a rollback, or the follower racing a pipeline's deploy step); then compares the
service's storageUri with the versions tagged `serving.inferenceservice`.

The Kubernetes API (and KServe's controller) is the recording stand-in of the tests
(tests/support/kube_api.py: no Kubernetes API server runs here), answering Ready after a few reads, as a
cluster does after a moment. The registry is real: sqlite, or the server MLFLOW_TRACKING_URI names.

    python -m benchmarks.deploy_race --rounds 30
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import rounds

SERVICE = "mnist-gan"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deploy-race-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    from mlflow import MlflowClient

    from tests.support.kube_api import KubeApi, write_kubeconfig
    from training import kserve
    from training.deploy import SERVING_TAG, storage_uri

    client = MlflowClient()
    experiment = client.create_experiment(f"deploy-race-{int(time.time())}",
                                          artifact_location="mlflow-artifacts:/race")
    api, failures, started = KubeApi(reconcile_after=5), [], time.perf_counter()
    with api.serve() as host:
        write_kubeconfig(work / "kubeconfig", host)
        env = {**os.environ, "KUBECONFIG": str(work / "kubeconfig")}
        for round_ in range(1, args.rounds + 1):
            name = f"race-{round_:03d}"
            client.create_registered_model(name)
            for _ in range(2):
                model = client.create_logged_model(experiment, name="generator")
                client.create_model_version(name, f"models:/{model.model_id}", model_id=model.model_id)
            files = {v: storage_uri(client.get_model_version_download_uri(name, v), "s3://mlflow-artifacts")
                     for v in ("1", "2")}
            deploy = [sys.executable, "-m", "training.cli", "deploy", "--name", name, "--inference-service",
                      SERVICE, "--timeout", "60"]
            racers = []
            for version in ("1", "2"):
                client.set_registered_model_alias(name, "champion", version)
                racers.append(subprocess.Popen(deploy, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True))
                # the first has read the champion (a process start, ~3 s) before it moves; in about
                # half the rounds the second patch lands while the first deploy waits for Ready (~10 s)
                time.sleep(random.uniform(3, 9))
            said = [(r.wait(), r.communicate()[1].strip()) for r in racers]
            served = kserve.served_storage_uri(api.objects.get(("team-a", SERVICE)))
            tagged = {str(v.version) for v in client.search_model_versions(f"name='{name}'")
                      if v.tags.get(SERVING_TAG) == f"team-a/{SERVICE}"}
            true = tagged == {v for v, uri in files.items() if uri == served}
            refused = sum(code != 0 for code, _ in said)
            if not true or any(code and "changed by another deploy" not in err for code, err in said):
                failures.append({"round": round_, "served": served, "tagged": sorted(tagged), "said": said})
            serving = next((v for v, uri in files.items() if uri == served), "?")
            why = "".join(f" [{err.splitlines()[-1][:160]}]" for code, err in said if code)
            print(f"round {round_}: serves version {serving}, tagged {sorted(tagged)}, {refused} deploy(s) "
                  f"told they were overtaken{why}"
                  f"{'' if true else ', TAGS WRONG'}", flush=True)
    rounds.finish(args.rounds, failures, started)


if __name__ == "__main__":
    main()
