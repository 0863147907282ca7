"""Canonical JSON for the task registry and content hashes: the form the registry's relayer
signs and hashes (`registry/signatures.py`: execution digests, the trigger in a signed
message), the CRE store's idempotency hashes (`cre/store.py` content_hash) and the size limit of
proposal data (`registry/models.py`).

Not every signature in the node: CRE request signatures are over JavaScript's canonical JSON
(`cre/jsjson.py`, which also refuses values JavaScript cannot carry), and the governance
gateway's SDK signatures are over the raw request body bytes (`gateway/crypto.py`).

Object keys sorted by code point, recursively; arrays in order; no insignificant whitespace;
non-ASCII kept as UTF-8; an integral float written as an integer (`1.0` -> `1`, as JavaScript's
JSON.stringify writes it)."""

from __future__ import annotations

import json
import math
from typing import Any


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def stable_json(value: Any) -> str:
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
