"""How the node reaches one configured container: its address or addresses (a Swarm service's
tasks, taken in turn), its concurrency limit, headers and who may use it; and whether a call
dropped before any answer may be retried (node/jobs/client.py decides which failures are)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class ContainerEndpoint:
    """How the orchestrator reaches one configured container."""

    id: str
    url: str  # base URL; the node POSTs to {url}/service_output
    external: bool = True
    timeout: float = 180.0
    concurrency: int = 64
    bearer: str | None = None
    generates_proofs: bool = False
    allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    description: str = ""
    image: str = ""
    # Retry a call whose connection was dropped before any answer, not only one refused at
    # connect: for Swarm tasks behind Docker's port proxy, where a dead task looks like that.
    retry_dropped: bool = False
    idempotent: bool = False  # safe to run again after a crash interrupted it

    def __post_init__(self) -> None:
        self.semaphore = asyncio.Semaphore(self.concurrency)
        self.headers = {"Content-Type": "application/json"}
        if self.bearer:
            self.headers["Authorization"] = f"Bearer {self.bearer}"
        self._turn = 0
        self.set_urls([self.url])

    def set_urls(self, urls: Sequence[str]) -> None:
        """Where calls go: one address, or the addresses of a service's tasks, taken in turn.
        An empty list (every task down for a moment) keeps the last known addresses."""
        if not urls:
            return
        self._service_urls = tuple(f"{u}/service_output" for u in urls)
        self.url = urls[0]

    def next_service_url(self, avoid: str | None = None) -> str:
        """The next address in turn (not `avoid`, the one that just failed, when there are others)."""
        urls = self._service_urls
        if len(urls) == 1:
            return urls[0]
        self._turn += 1
        url = urls[self._turn % len(urls)]
        if url == avoid:
            self._turn += 1
            url = urls[self._turn % len(urls)]
        return url

    def allows(self, ip: str | None) -> bool:
        if not self.allowed_networks:
            return True
        if ip is None:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self.allowed_networks)


class ContainerFailure(Exception):
    pass
