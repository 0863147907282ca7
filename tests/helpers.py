"""Test helpers: a tiny JSON HTTP client (with a chosen source address, to act as different
clients) and a real node process started from a config file."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from node.containers.manager import free_port as pick_port

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free port below the kernel's ephemeral range: polling a port that nothing listens on yet
    can otherwise "self-connect" (the client's own ephemeral port equals the target) and read back
    its own request."""
    return pick_port()


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    def __init__(self, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> None:
        self.host, self.port, self.source = host, port, source

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout, source_address=(self.source, 0))
        try:
            payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("PUT", path, body, **kw)

    def submit(self, containers: list[str], data: Any, **kw: Any) -> str:
        resp = self.post("/api/jobs", {"containers": containers, "data": data}, **kw)
        assert resp.status == 200, resp.body
        return resp.json["id"]

    def wait_job(self, job_id: str, timeout: float = 30, intermediate: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        query = f"/api/jobs?id={job_id}" + ("&intermediate=true" if intermediate else "")
        while True:
            resp = self.get(query)
            assert resp.status == 200, resp.body
            if resp.json and resp.json[0]["status"] != "running":
                return resp.json[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still running after {timeout}s: {resp.json}")
            time.sleep(0.05)


def container_entry(cid: str, workload: str, **extra: Any) -> dict[str, Any]:
    """A config entry for one of the shipped workloads, built from containers/."""
    return {
        "id": cid,
        "image": f"node-local/{workload}:latest",
        "build": {"context": str(REPO / "containers"), "dockerfile": f"{workload}/Dockerfile"},
        **extra,
    }


@dataclass
class NodeProcess:
    """A real node: `python -m node run --config …` in a subprocess."""

    workdir: Path
    containers: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:6]}-")
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "config.yaml"
        self.log_path = self.workdir / "node.log"
        self.write_config()

    def write_config(self) -> None:
        config: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": self.port, "shutdown_grace": 3},
            "storage": {"path": str(self.workdir / "node.db")},
            "docker": {"name_prefix": self.prefix, "monitor_interval": 0.5},
            "startup_wait": 30,
            "containers": self.containers,
            "log": {"level": "INFO"},
        }
        for key, value in self.extra.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config_path.write_text(yaml.safe_dump(config))

    def start_background(self) -> NodeProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--config", str(self.config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def start(self, timeout: float = 120) -> NodeProcess:
        """Start and wait until the node is healthy (its containers answer)."""
        self.start_background()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http().get("/health", timeout=1).status == 200:
                    return self
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        raise AssertionError(f"node did not answer within {timeout}s:\n{self.log()}")

    def http(self, source: str = "127.0.0.1") -> Http:
        return Http(self.port, source)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def remove_containers(self) -> None:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^{self.prefix}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def workload_process(name: str) -> tuple[subprocess.Popen, str]:
    """One of the shipped workloads (containers/<name>/app.py) as a plain process on a free
    port, for tests that need a real container service without Docker: (process, its URL)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / f"containers/{name}/app.py")],
                            env={**os.environ, "PORT": str(port), "PYTHONPATH": str(REPO / "containers/_lib")},
                            stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def sdk_signed(api_key: str, secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    """Seed 002's request signature, written independently of the node: X-API-Key,
    X-Signature-Timestamp and hex(HMAC-SHA256(secret, f"{ts}:{api_key}:{sha256_hex(body)}"))."""
    ts = int(time.time()) if ts is None else ts
    message = f"{ts}:{api_key}:{hashlib.sha256(body).hexdigest()}".encode()
    return {"X-API-Key": api_key, "X-Signature-Timestamp": str(ts),
            "X-Signature": hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}
