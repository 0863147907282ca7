"""A node running in this process (its own event loop in a thread, so tests stay synchronous
and a browser or CLI can talk to it), and a stand-in container service."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from node.app import Node
from node.config import load_config
from tests.helpers import Http


class FakeContainer:
    """POST /service_output: echoes `data` back, or answers 500 when `data` is {"fail": true}
    (or always, with `broken`)."""

    def __init__(self, broken: bool = False) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._send(200, {"ok": True})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                data = body.get("data")
                if broken or (isinstance(data, dict) and data.get("fail")):
                    self._send(500, {"error": "asked to fail"})
                else:
                    self._send(200, data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ThreadNode:
    """`Node` from a config dict, served from a background thread's event loop."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        base = {"server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1},
                "storage": {"path": "node.db"}, "manage_containers": False, "startup_wait": 10,
                "gateway": {"enabled": False}, "observe": {"interval": 0.5}}
        for key, value in config.items():
            base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(base))
        self.node = Node(load_config(self.config_path))
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ThreadNode:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.node.start(), self.loop).result(60)
        # Let `node-daemon status --config` find the port the node picked.
        raw = yaml.safe_load(self.config_path.read_text())
        raw["server"]["port"] = self.node.port
        self.config_path.write_text(yaml.safe_dump(raw))
        return self

    @property
    def port(self) -> int:
        assert self.node.port is not None
        return self.node.port

    def http(self) -> Http:
        return Http(self.port)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
