"""What an outsider can do to the HTTP edge, tried as an outsider would (issue #22): stall the
event loop with a body the JSON pre-scan chokes on, hide that body in a compressed request,
hold connections open with a slow body, reach private addresses through a webhook, and pass
for the operator from behind a reverse proxy. Each test performs the attack and asserts it
fails; the node here runs as its own process (no containers), as a user meets it."""

from __future__ import annotations

import gzip
import threading
import time

import pytest

from tests.helpers import Http, NodeProcess, Response

UNTERMINATED = b"[" * 70 + b'"' + b'\\"' * 40000  # 80 KB: the body


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    proc = NodeProcess(tmp_path_factory.mktemp("edge"), [], extra={"manage_containers": False})
    proc.start(60)
    yield proc
    proc.stop()


def _health_while(node: NodeProcess, attack) -> tuple[float, list[Response]]:
    """Send `attack()` from one client and, while it is in flight, time another client's
    GET /health. Returns (seconds /health took, the attack's answers)."""
    answers: list[Response] = []
    thread = threading.Thread(target=lambda: answers.append(attack()), daemon=True)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    try:
        assert node.http().get("/health", timeout=10).status == 200
    except TimeoutError:
        pass  # reported by the elapsed time below
    took = time.monotonic() - started
    thread.join(60)
    return took, answers


def test_an_unterminated_string_of_escaped_quotes_does_not_stall_other_clients(edge):
    took, answers = _health_while(edge, lambda: edge.http().post("/api/jobs", raw=UNTERMINATED, timeout=60))
    assert took < 1.0, f"GET /health waited {took:.1f}s while the pre-scan ran"
    assert answers and answers[0].status == 400, answers


def test_a_gzipped_request_body_is_refused_with_415_and_never_inflated(edge):
    packed = gzip.compress(UNTERMINATED)  # 80 KB inflated from a few hundred bytes on the wire
    took, answers = _health_while(edge, lambda: edge.http().post(
        "/api/jobs", raw=packed, headers={"Content-Encoding": "gzip"}, timeout=60))
    assert took < 1.0, f"GET /health waited {took:.1f}s while the body was inflated and scanned"
    assert answers and answers[0].status == 415, answers
    assert "Content-Encoding" in answers[0].json["error"]


def test_a_gzip_bomb_is_refused_before_it_is_inflated(edge):
    bomb = gzip.compress(b"[" * (64 * 1024 * 1024), 9)  # 64 MB of brackets in ~64 KB
    started = time.monotonic()
    resp = edge.http().post("/api/jobs", raw=bomb, headers={"Content-Encoding": "gzip"}, timeout=30)
    assert resp.status == 415 and time.monotonic() - started < 2.0
    for encoding in ("deflate", "br", "x-custom"):
        resp = edge.http().post("/api/jobs", raw=b"{}", headers={"Content-Encoding": encoding})
        assert resp.status == 415, (encoding, resp.body)
    resp = edge.http().post("/api/jobs", {"containers": ["none"], "data": {}}, headers={"Content-Encoding": "identity"})
    assert resp.status != 415, resp.body


def test_nan_and_infinity_literals_in_a_request_body_are_a_400_naming_the_literal(edge):
    for literal in ("NaN", "Infinity", "-Infinity"):
        resp = edge.http().post("/api/jobs", raw=b'{"containers": ["none"], "data": {"x": %s}}' % literal.encode())
        assert resp.status == 400 and resp.json["error"] == f"Request body: {literal} is not a JSON value " \
            "(numbers must be finite)", resp.body
    resp = edge.http().post("/api/jobs", raw=b'{"containers": ["none"], "data": {"x": "NaN", "y": 1.5}}')
    assert resp.json["error"] == "Container not supported", resp.body  # parsed: "NaN" and 1.5 are fine
