"""Shared by the CRE WASM tests: the npm toolchain (installed once, idempotently, as
scripts/setup.sh does), a local price server, and a raw-JS program builder for host-contract tests
(the plugin's globals called directly, without the SDK, so a test can break the contract on purpose)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from node.cre.wasm.host import Program, WasmEngine
from node.cre.wasm.toolchain import BuildError, Toolchain

WORKFLOWS = Path(__file__).parent
PRICE_FEED = WORKFLOWS / "price_feed.ts"


def toolchain() -> Toolchain:
    chain = Toolchain()
    try:
        chain.install(log=lambda line: None)
    except BuildError as exc:
        pytest.fail(f"the CRE toolchain is not installed and cannot be: {exc} (run scripts/setup.sh)")
    return chain


class PriceServer:
    """A local HTTP server answering every GET with `body`; counts the requests it saw."""

    def __init__(self, body: bytes = b"123.5", status: int = 200) -> None:
        outer = self
        self.hits = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.hits += 1
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/price"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def raw_program(engine: WasmEngine, chain: Toolchain, js: str) -> Program:
    return engine.program_from_bytecode(engine.compile_js(engine.plugin(chain.plugin_path), js.encode()))


def js_bytes(data: bytes) -> str:
    return f"new Uint8Array([{','.join(str(b) for b in data)}])"
