"""Who the client is: the one place that decides a request's client address.

Rate limits, job ownership, the container status networks and the operator check all act on
"the client's address", and each once read it its own way (`request.remote` in two places, a
helper in a third). Behind a reverse proxy on the host every request then came from loopback:
every client shared one rate limit and passed for the operator. Now `ClientAddresses`
(through the server's first middleware, node/server/http.py) decides it once per request and
every caller reads that (`client_of(request)`, or `client_ip` in node/server/http.py):

- the TCP peer is the client, unless the peer lies in `server.trusted_proxies`; then the
  client is the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (entries
  to the left of it were written by the client and prove nothing). Without trusted proxies
  the header is ignored: anyone can send it.
- the client is *direct* only when its connection comes straight from it: the peer is not a
  trusted proxy and the request carries no forwarding header (`X-Forwarded-For`,
  `Forwarded`, `X-Real-IP`). A request a proxy nobody declared relayed from loopback usually
  carries one, so it does not pass for a local operator.
- an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, from a dual-stack listener) is the IPv4
  address; limits key IPv6 clients by their /64 (`limit_key`), the block one subscriber gets,
  so rotating addresses inside it buys nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CLIENT = "client_address"
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def parse_ip(value: str | None) -> IPAddress | None:
    """An address from a peer name or a header entry (IPv4-mapped IPv6 as IPv4); None when
    it is not one."""
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def limit_key(ip: str | IPAddress | None) -> str:
    """What per-client limits count by: the IPv4 address, or the IPv6 address's /64."""
    if isinstance(ip, str) and ip and ":" not in ip:  # IPv4, as the client seam wrote it
        return ip
    address = parse_ip(ip) if isinstance(ip, str) or ip is None else ip
    if address is None:
        return "?"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class ClientAddress(NamedTuple):  # a tuple: built on every request, and cheap to build
    ip: str | None  # the client's address as the node believes it (None: not an IP, e.g. a Unix socket)
    peer: str | None  # the TCP peer's address
    direct: bool  # the peer is the client: no trusted proxy and no forwarding header


class ClientAddresses:
    """Decides each request's `ClientAddress` from its peer and, for trusted proxies only,
    `X-Forwarded-For` (which is ignored from anyone else: anyone can send it)."""

    def __init__(self, trusted_proxies: Iterable[str | IPNetwork] = ()) -> None:
        self.proxies = [ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in trusted_proxies]

    def is_proxy(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip in net for net in self.proxies if net.version == ip.version)

    def resolve(self, peer: str | None, headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> ClientAddress:
        if peer and ":" not in peer and not self.proxies:  # the common case, kept cheap: an IPv4 peer as is
            direct = not any(h in headers for h in FORWARDING_HEADERS)
            return ClientAddress(peer, peer, direct)
        peer_ip = parse_ip(peer)
        if not self.is_proxy(peer_ip):
            direct = not any(h in headers for h in FORWARDING_HEADERS)
            address = str(peer_ip) if peer_ip else None
            return ClientAddress(address, address, direct)
        client = peer_ip
        hops = [h for line in headers.getall("X-Forwarded-For", ()) for h in line.split(",")]
        for hop in reversed(hops):
            ip = parse_ip(hop)
            if ip is None:  # unreadable: the last hop we trust vouches for nothing further
                break
            client = ip
            if not self.is_proxy(ip):
                break
        return ClientAddress(str(client), str(peer_ip), False)

    def attach(self, request: web.Request) -> ClientAddress:
        """Decide `request`'s client, once: called first thing by the server's middleware."""
        client = request[CLIENT] = self.resolve(request.remote, request.headers)
        return client


def client_of(request: web.Request) -> ClientAddress:
    """The request's client, as the middleware decided it. A request that did not pass the
    middleware (a unit test's mocked request) is judged with no trusted proxies."""
    found = request.get(CLIENT)
    if found is None:
        found = request[CLIENT] = ClientAddresses().resolve(request.remote, request.headers)
    return found
