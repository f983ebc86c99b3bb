"""A real HTTP server on 127.0.0.1 that serves one file's bytes, for the data downloads' tests."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable


@contextlib.contextmanager
def serving(body: bytes, refusal: Callable[[http.server.BaseHTTPRequestHandler], int | None]):
    """Answers each GET with `body`, or with the HTTP error `refusal(request)` names (None: no error);
    yields the server's host:port."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = refusal(self)
            if code:
                self.send_error(code)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
