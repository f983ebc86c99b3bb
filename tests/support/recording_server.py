"""A local HTTP server on 127.0.0.1 that records every request and answers each through a function: what
the stand-ins for remote APIs (kfp_api, kube_api) share."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# (request as recorded) -> (HTTP status, a JSON payload, or text sent as text/plain)
Answer = Callable[[dict], tuple[int, dict | str]]


@contextlib.contextmanager
def serve(answer: Answer, requests: list[dict]):
    """Serve until the block ends; each request is appended to `requests` as {method, path, query
    (parsed), headers (lower-case names), body (parsed JSON or None)}. Yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            url = urlparse(self.path)
            request = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                       "headers": {k.lower(): v for k, v in self.headers.items()},
                       "body": json.loads(raw) if raw else None}
            requests.append(request)
            status, payload = answer(request)
            text = isinstance(payload, str)
            data = payload.encode() if text else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _handle

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


def forward(base: str, request: dict) -> tuple[int, dict | str]:
    """Send a recorded request on to the real server at `base` and return its answer: what a stand-in
    that only injects faults answers for every request it leaves alone."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode

    query = f"?{urlencode(request['query'], doseq=True)}" if request["query"] else ""
    body = None if request["body"] is None else json.dumps(request["body"]).encode()
    outgoing = urllib.request.Request(f"{base}{request['path']}{query}", data=body, method=request["method"],
                                      headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(outgoing, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, raw.decode(errors="replace")
