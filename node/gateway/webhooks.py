"""Alert webhooks of the gateway: URLs that org admins supply, so every one goes through the
node's egress policy (node/server/egress.py) when it is registered and again when it is called.
Delivery is best effort: a failure is logged, never retried, never raised to the SDK call that
crossed the budget threshold."""

from __future__ import annotations

from typing import Any

import aiohttp

from node.errors import Invalid
from node.logs import get_logger
from node.server.egress import EgressDenied, EgressPolicy

log = get_logger(__name__)


class WebhookSender:
    def __init__(self, policy: EgressPolicy, timeout: float = 5.0) -> None:
        self.policy = policy
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def check(self, url: str, field: str = "url") -> None:
        """Invalid (400) naming `field` unless the URL may be called."""
        try:
            await self.policy.check_url(url)
        except EgressDenied as exc:
            raise Invalid(f"{field}: {exc}") from None

    async def send(self, channel_id: str, url: str, payload: dict[str, Any]) -> bool:
        if self._session is None:
            self._session = self.policy.session()
        try:
            status, _ = await self.policy.post_json(self._session, url, payload, self._timeout)
        except EgressDenied as exc:
            log.warning("gateway.webhook_refused", channel=channel_id, error=str(exc))
            return False
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("gateway.webhook_failed", channel=channel_id, error=str(exc))
            return False
        if status >= 300:
            log.warning("gateway.webhook_failed", channel=channel_id, status=status)
            return False
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
