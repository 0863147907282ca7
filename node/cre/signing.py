"""`stableJsonBody` and the request HMAC of seed 000, shared by the server and the client helper.

stableJsonBody(value) is JavaScript's canonical JSON (node/cre/jsjson.py), because the party on
the other side of the bridge is a CRE workflow written in JS/TS:
  * objects: keys sorted as `Object.keys(o).sort()` sorts them (UTF-16 code units), recursively;
    arrays keep their order;
  * no insignificant whitespace (`,` and `:` separators only);
  * strings as JSON.stringify escapes them, non-ASCII characters kept as UTF-8 (not `\\uXXXX`);
  * numbers as JSON.stringify writes them: `1` for `1.0`, `1e-7`, `1e+21`, `10000000000000000`;
  * the result is encoded as UTF-8. A request without a body signs the empty string.
Integers beyond ±2^53, NaN/Infinity and lone surrogates have no JavaScript form: `body_string`
raises `NotJsSafe` naming the field (the bridge answers 400, not a signature mismatch).

signature = hex(HMAC-SHA256(key, f"{timestamp}.{nonce}.{stableJsonBody}")), where `timestamp`
is Unix epoch milliseconds as a decimal string and `key` is CRE_RUNTIME_HMAC_SECRET when set,
else the bearer API key.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from node.cre.jsjson import NotJsSafe, stringify

__all__ = ["NotJsSafe", "body_string", "sign", "sign_text", "verify", "verify_text"]


def body_string(body: Any | None) -> str:
    return "" if body is None else stringify(body)


def sign_text(key: str, timestamp: str, nonce: str, text: str) -> str:
    """The signature over an already computed stableJsonBody."""
    message = f"{timestamp}.{nonce}.{text}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(key: str, timestamp: str, nonce: str, body: Any | None) -> str:
    return sign_text(key, timestamp, nonce, body_string(body))


def verify_text(key: str, timestamp: str, nonce: str, text: str, signature: str) -> bool:
    return hmac.compare_digest(sign_text(key, timestamp, nonce, text).encode(), signature.lower().encode())


def verify(key: str, timestamp: str, nonce: str, body: Any | None, signature: str) -> bool:
    return verify_text(key, timestamp, nonce, body_string(body), signature)
