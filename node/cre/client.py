"""A tiny client helper for the CRE runtime bridge: signs requests the way the node checks them.

    from node.cre.client import signed_headers
    headers = signed_headers(body, api_key="…", hmac_secret="…")   # hmac_secret optional
    requests.post(f"{node}/api/cre/runtime/ingest", json=body, headers=headers)

Send the body as JSON; the node verifies the signature over stableJsonBody(body), so the byte
layout of what you send does not matter.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from node.cre.signing import sign


def signed_headers(
    body: Any | None,
    api_key: str,
    hmac_secret: str | None = None,
    *,
    timestamp_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    nonce = nonce or secrets.token_hex(16)
    return {
        "Authorization": f"Bearer {api_key}",
        "x-cre-timestamp": timestamp,
        "x-cre-nonce": nonce,
        "x-cre-signature": sign(hmac_secret or api_key, timestamp, nonce, body),
        "Content-Type": "application/json",
    }
