"""A tiny Infernet-compatible container service on the Python standard library.

`serve(handle, stream=None)` listens on 0.0.0.0:3000 (or $PORT). `POST /service_output` takes
`{source, destination, data, requires_proof}` and answers `handle(body)` as JSON; a request
with `destination == 2` (STREAM) is answered with `stream(body)`'s chunks when given. `GET /`
answers 200 (the node's readiness probe). HTTP/1.1 keep-alive, TCP_NODELAY, one thread per
connection. A handler raising ValueError answers 400 with {"error": …}; anything else 500.
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STREAM = 2


class Raw:
    """Return this from a handler to answer with bytes that are not JSON."""

    def __init__(self, body, content_type="text/plain"):
        self.body = body if isinstance(body, bytes) else str(body).encode()
        self.content_type = content_type


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    handle_fn = None
    stream_fn = None

    def log_message(self, fmt, *args):  # keep container logs quiet under load
        pass

    def _send(self, status, body):
        if isinstance(body, Raw):
            raw, content_type = body.body, body.content_type
        else:
            raw, content_type = json.dumps(body, separators=(",", ":")).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        self._send(200, {"status": "ok"})

    def do_POST(self):
        if self.path.rstrip("/") != "/service_output":
            self._send(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            self._send(400, {"error": f"bad request: {exc}"})
            return
        if body.get("destination") == STREAM and type(self).stream_fn is not None:
            self._stream(body)
            return
        try:
            self._send(200, type(self).handle_fn(body))
        except ValueError as exc:
            self._send(400, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001
            self._send(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _stream(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in type(self).stream_fn(body):
            raw = piece.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen() backlog; must be set before the socket listens


def serve(handle, stream=None):
    _Handler.handle_fn = staticmethod(handle)
    _Handler.stream_fn = staticmethod(stream) if stream else None
    # As PID 1 the process gets no default SIGTERM action: exit at once when the node stops us.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    port = int(os.environ.get("PORT", "3000"))
    server = _Server(("0.0.0.0", port), _Handler)
    print(f"listening on :{port}", file=sys.stderr, flush=True)
    server.serve_forever()
