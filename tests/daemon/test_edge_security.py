"""What an outsider can do to the HTTP edge, tried as an outsider would (issue #22): stall the
event loop with a body the JSON pre-scan chokes on, hide that body in a compressed request,
hold connections open with a slow body, reach private addresses through a webhook, and pass
for the operator from behind a reverse proxy. Each test performs the attack and asserts it
fails; the node here runs as its own process (no containers), as a user meets it."""

from __future__ import annotations

import gzip
import socket
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


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    proc = NodeProcess(tmp_path_factory.mktemp("limited"), [], extra={
        "manage_containers": False,
        "server": {"body_timeout": 3, "max_connections_per_ip": 4, "header_timeout": 5}})
    proc.start(60)
    yield proc
    proc.stop()


def _trickle(port: int, chunk: bytes, every: float, length: int = 100_000, give_up: float = 10) -> tuple[bytes, float]:
    """POST /api/jobs declaring `length` bytes, then send `chunk` every `every` seconds until
    the node answers or closes. Returns (what the node sent, seconds until then). A client
    still sending when the node closes may get a reset instead of the answer (the kernel's
    doing: data arrived after the close); that is returned as b"reset"."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    started = time.monotonic()
    received = b""
    try:
        sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n{" % length)
        sock.settimeout(every)
        while time.monotonic() - started < give_up:
            try:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
            except socket.timeout:
                pass
            except ConnectionResetError:
                return received or b"reset", time.monotonic() - started
            try:
                sock.sendall(chunk)
            except OSError:
                break
        return received, time.monotonic() - started
    finally:
        sock.close()


def test_a_body_trickled_a_byte_at_a_time_is_refused_with_408_and_the_connection_closed(edge):
    received, took = _trickle(edge.port, b" ", every=0.3)  # the defaults: at least 1024 bytes/s after 2 s
    assert received.startswith(b"HTTP/1.1 408 "), received[:300]
    assert b"slower than 1024 bytes/s" in received and b"Connection: close" in received
    assert took < 5, f"the node waited {took:.1f}s for a body arriving at 3 bytes/s"
    assert edge.http().get("/health").status == 200


def test_a_body_sent_slowly_but_above_the_minimum_rate_is_read_whole(edge):
    body = b'{"containers": ["none"], "data": "' + b"x" * 9000 + b'"}'
    sock = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
    try:
        sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 600):  # 3,000 bytes/s for 3 s
            sock.sendall(body[i:i + 600])
            time.sleep(0.2)
        answer = sock.recv(65536)
    finally:
        sock.close()
    assert b"Container not supported" in answer, answer[:300]  # parsed: the body arrived whole


def test_a_body_sent_steadily_but_never_finished_is_refused_at_the_body_timeout(limited):
    received, took = _trickle(limited.port, b" " * 2048, every=0.1, length=50_000_000)  # 20 KB/s, 40 min
    assert received == b"reset" or (received.startswith(b"HTTP/1.1 408 ") and b"not complete within 3s" in received), \
        received[:300]
    assert 2.5 < took < 8  # body_timeout is 3 s; the client would go on for 10


def test_one_address_cannot_hold_more_than_max_connections_per_ip(limited):
    held = [socket.create_connection(("127.0.0.1", limited.port), timeout=5) for _ in range(4)]
    try:
        extra = socket.create_connection(("127.0.0.1", limited.port), timeout=5)
        answer = extra.recv(4096)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 429 "), answer
        assert b"Too many connections from this address" in answer
        assert Http(limited.port, source="127.0.0.2").get("/health").status == 200  # another client is served
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # the closed connections are given back
        try:
            if limited.http().get("/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the address stayed over its cap after closing its connections"
        time.sleep(0.1)


def test_a_connection_that_never_sends_a_byte_is_closed_at_the_header_timeout(limited):
    sock = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
    started = time.monotonic()
    try:
        assert sock.recv(1) == b""
        assert 4 < time.monotonic() - started < 8  # header_timeout is 5 s
    finally:
        sock.close()


# -- who the client is: proxies, the operator, IPv6 -------------------------------------------


def test_behind_an_undeclared_proxy_a_forwarded_request_does_not_pass_for_the_operator(edge):
    assert edge.http().get("/api/node/status").status == 200  # the operator on the host, directly
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        value = "for=203.0.113.9" if header == "Forwarded" else "203.0.113.9"
        resp = edge.http().get("/api/node/status", headers={header: value})
        assert resp.status == 403, (header, resp.body)
        assert edge.http().get("/metrics", headers={header: value}).status == 403


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    proc = NodeProcess(tmp_path_factory.mktemp("proxied"), [], extra={
        "manage_containers": False,
        "server": {"trusted_proxies": ["127.0.0.1/32"], "admin_token": "operator-token",
                   "rate_limit": {"num_requests": 3, "period": 60}}})
    proc.start(60)
    yield proc
    proc.stop()


def _via_proxy(node: NodeProcess, client: str, path: str = "/info", source: str = "127.0.0.1", **kw) -> Response:
    headers = {"X-Forwarded-For": client, **kw.pop("headers", {})}
    return Http(node.port, source=source).request(kw.pop("method", "GET"), path, headers=headers, **kw)


def test_with_a_trusted_proxy_on_the_host_the_operator_endpoints_need_the_token(proxied):
    for forwarded in ("203.0.113.9", "127.0.0.1"):  # an outsider, or a local client, through the proxy
        assert _via_proxy(proxied, forwarded, "/api/node/status").status == 401
    assert proxied.http().get("/api/node/status").status == 401  # loopback is the proxy's address now
    resp = _via_proxy(proxied, "203.0.113.9", "/api/node/status", headers={"Authorization": "Bearer operator-token"})
    assert resp.status == 200


def test_the_operator_token_counts_only_sent_as_a_bearer_token(proxied):
    headers = ("operator-token", "Basic operator-token", "Bearer  operator-token")  # one parser, one form
    for client, header in enumerate(headers, start=20):  # a client each: the route's rate limit is 3
        resp = _via_proxy(proxied, f"203.0.113.{client}", "/api/node/status", headers={"Authorization": header})
        assert resp.status == 401, header


def test_rate_limits_count_the_client_a_trusted_proxy_names_and_ignore_the_header_from_others(proxied):
    for _ in range(3):
        assert _via_proxy(proxied, "198.51.100.7", "/health").status == 200
    assert _via_proxy(proxied, "198.51.100.7", "/health").status == 429
    # A client cannot pick its own bucket by writing the header itself: the proxy appends.
    assert _via_proxy(proxied, "192.0.2.1, 198.51.100.7", "/health").status == 429
    assert _via_proxy(proxied, "198.51.100.8", "/health").status == 200  # another client behind the proxy
    # From an address that is not a proxy, the header is ignored: every request is 127.0.0.3's.
    answers = [_via_proxy(proxied, f"198.51.100.{i}", "/health", source="127.0.0.3").status for i in range(20, 24)]
    assert answers == [200, 200, 200, 429]


def test_ipv6_clients_are_rate_limited_per_64_not_per_address(proxied):
    for address in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:fffe"):  # one /64
        assert _via_proxy(proxied, address, "/health").status == 200
    assert _via_proxy(proxied, "2001:db8:1:2:abcd::9", "/health").status == 429
    assert _via_proxy(proxied, "2001:db8:1:3::1", "/health").status == 200  # the next /64 is someone else


def test_a_status_report_relayed_by_a_trusted_proxy_is_judged_by_the_real_client(proxied):
    report = {"id": "relayed-1", "status": "success", "containers": ["x"], "data": {}}
    resp = _via_proxy(proxied, "203.0.113.5", "/api/status", method="PUT", body=report)
    assert resp.status == 403, resp.body  # the proxy is loopback; the client behind it is not a container


def test_the_client_address_is_decided_once_from_peer_and_trusted_forwarding():
    from multidict import CIMultiDict

    from node.server.clients import ClientAddresses, limit_key

    def resolve(peer: str, *xff: str, proxies=("10.0.0.0/8",)):
        return ClientAddresses(proxies).resolve(peer, CIMultiDict([("X-Forwarded-For", v) for v in xff]))

    assert resolve("192.0.2.1", "198.51.100.1").ip == "192.0.2.1"  # not a proxy: header ignored
    assert resolve("192.0.2.1", "198.51.100.1").direct is False  # ... and not direct either
    assert resolve("192.0.2.1").direct is True
    assert resolve("10.0.0.2", "6.6.6.6, 198.51.100.1").ip == "198.51.100.1"  # rightmost untrusted
    assert resolve("10.0.0.2", "198.51.100.1, 10.0.0.9").ip == "198.51.100.1"  # through two proxies
    assert resolve("10.0.0.2", "198.51.100.1", "10.0.0.9").ip == "198.51.100.1"  # header given twice
    assert resolve("10.0.0.2", "6.6.6.6, garbage, 10.0.0.9").ip == "10.0.0.9"  # unreadable: stop there
    assert resolve("10.0.0.2").ip == "10.0.0.2"  # a proxy that names nobody is the client
    assert resolve("::ffff:192.0.2.7").ip == "192.0.2.7"
    assert resolve("10.0.0.2", "[2001:db8::1]").ip == "10.0.0.2"  # bracketed forms are not addresses
    assert limit_key("2001:db8:1:2::1") == limit_key("2001:db8:1:2:ffff::") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("::ffff:192.0.2.7") == limit_key("192.0.2.7") == "192.0.2.7"


# -- webhook egress: only explicitly global unicast ------------------------------------------

NOT_GLOBAL = {
    "IPv4-compatible loopback": "::7f00:1",
    "IPv4-compatible public (deprecated form)": "::808:808",
    "SIIT-translated loopback": "::ffff:0:7f00:1",
    "IPv4-mapped loopback": "::ffff:127.0.0.1",
    "IPv4-mapped metadata": "::ffff:169.254.169.254",
    "NAT64 of a private address": "64:ff9b::a00:1",
    "local-use NAT64": "64:ff9b:1::808:808",
    "6to4 of a private address": "2002:c0a8:101::1",
    "Teredo": "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "site-local": "fec0::1",
    "unique local": "fd00:ec2::254",
    "link-local": "fe80::1",
    "multicast": "ff02::1",
    "global multicast": "ff0e::1",
    "documentation": "2001:db8::1",
    "documentation (3fff::/20)": "3fff::1",
    "discard-only": "100::1",
    "unspecified": "::",
    "loopback": "::1",
    "outside 2000::/3": "4000::1",
    "IPv4 documentation": "203.0.113.7",
    "IPv4 shared address space": "100.64.0.1",
    "IPv4 benchmarking": "198.18.0.1",
    "IPv4 broadcast": "255.255.255.255",
}
GLOBAL = ["8.8.8.8", "2606:4700:4700::1111", "2001:4860:4860::8888", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("form", NOT_GLOBAL)
async def test_a_webhook_to_an_address_that_is_not_global_unicast_is_refused(form):
    from node.server.egress import EgressDenied, EgressPolicy

    address = NOT_GLOBAL[form]

    async def lookup(host: str, port: int) -> list[str]:
        return [address]

    policy = EgressPolicy([], lookup=lookup)
    assert not policy.address_allowed(address)
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(EgressDenied):
        await policy.check_url(f"http://{host}/hook")  # as a literal in the URL
    with pytest.raises(EgressDenied):
        await policy.check_url("http://hook.example.com/hook")  # as the name's DNS answer


async def test_global_unicast_webhooks_stay_allowed_and_the_operator_can_allow_a_private_network():
    from node.server.egress import EgressPolicy

    for address in GLOBAL:
        assert EgressPolicy([]).address_allowed(address), address
    allowed = EgressPolicy(["127.0.0.0/8"])
    assert allowed.address_allowed("::ffff:127.0.0.1") and allowed.address_allowed("127.0.0.1")
    assert not allowed.address_allowed("10.0.0.1")


@pytest.mark.parametrize("server, field", [
    ({"body_timeout": 0}, "server.body_timeout"),
    ({"body_min_rate": -1}, "server.body_min_rate"),
    ({"max_connections_per_ip": -1}, "server.max_connections_per_ip"),
    ({"max_connections_per_ip": "many"}, "server.max_connections_per_ip"),
    ({"trusted_proxies": ["nginx"]}, "server.trusted_proxies.0"),
    ({"trusted_proxies": "127.0.0.1/32"}, "server.trusted_proxies"),
])
def test_the_edge_limits_are_validated_naming_the_key(server, field):
    from node.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as err:
        parse_config({"server": server})
    assert field in str(err.value)


def test_the_edge_limits_have_their_documented_defaults():
    from node.config import parse_config

    server = parse_config({}).server
    assert (server.body_timeout, server.body_min_rate, server.max_connections_per_ip, server.trusted_proxies) == \
        (60.0, 1024, 256, [])
