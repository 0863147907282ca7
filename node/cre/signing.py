"""`stableJsonBody` and the request HMAC of seed 000, shared by the server and the client helper.

stableJsonBody(value):
  * objects: keys sorted by Unicode code point, recursively; arrays keep their order;
  * no insignificant whitespace (`,` and `:` separators only);
  * strings as JSON escapes them, non-ASCII characters kept as UTF-8 (not `\\uXXXX`);
  * numbers: integers as integers; a float with an integral value is written as an integer
    (`1.0` -> `1`, as JavaScript's JSON.stringify writes it); other floats by Python's shortest
    round-trip repr;
  * the result is encoded as UTF-8. A request without a body signs the empty string.

signature = hex(HMAC-SHA256(key, f"{timestamp}.{nonce}.{stableJsonBody}")), where `timestamp`
is Unix epoch milliseconds as a decimal string and `key` is CRE_RUNTIME_HMAC_SECRET when set,
else the bearer API key.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from node.canonical import stable_json


def body_string(body: Any | None) -> str:
    return "" if body is None else stable_json(body)


def sign(key: str, timestamp: str, nonce: str, body: Any | None) -> str:
    message = f"{timestamp}.{nonce}.{body_string(body)}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def verify(key: str, timestamp: str, nonce: str, body: Any | None, signature: str) -> bool:
    return hmac.compare_digest(sign(key, timestamp, nonce, body), signature.lower())
