"""A local HTTP server that speaks the few KFP v2beta1 REST calls `kfp.Client` makes to submit and
wait for a run, and records every request for the test to check."""

from __future__ import annotations

from tests.support import recording_server


class KfpApi:
    def __init__(self, final_state: str = "SUCCEEDED"):
        self.requests: list[dict] = []
        self.final_state = final_state

    def answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        if path.endswith("/healthz"):
            return 200, {"multi_user": False}
        if path == "/apis/v2beta1/experiments" and method == "GET":
            return 200, {"experiments": [], "total_size": 0}
        if path == "/apis/v2beta1/experiments" and method == "POST":
            return 200, {"experiment_id": "exp-1", "display_name": body["display_name"],
                         "namespace": body.get("namespace", "")}
        if path == "/apis/v2beta1/runs" and method == "POST":
            return 200, {"run_id": "run-1", "display_name": body["display_name"], "state": "PENDING",
                         "experiment_id": body["experiment_id"]}
        if path == "/apis/v2beta1/runs/run-1":
            return 200, {"run_id": "run-1", "state": self.final_state, "display_name": "r"}
        return 404, {"error": f"no {method} {path}"}

    def serve(self):
        """Serve until the block ends; yields the base URL."""
        return recording_server.serve(lambda r: self.answer(r["method"], r["path"], r["body"]), self.requests)
