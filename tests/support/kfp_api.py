"""A local HTTP server that speaks the few KFP v2beta1 REST calls `kfp.Client` makes to submit and
wait for a run, and records every request for the test to check."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


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

    @contextlib.contextmanager
    def serve(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                url = urlparse(self.path)
                api.requests.append({"method": method, "path": url.path, "query": parse_qs(url.query),
                                     "headers": {k.lower(): v for k, v in self.headers.items()},
                                     "body": body})
                status, payload = api.answer(method, url.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
