"""JSON from outside the node, parsed without risk to the process.

CPython's JSON decoder recurses in C once per nesting level and only stops at the interpreter's
recursion limit. One of our dependencies (py_ecc, pulled in by eth-account) raises that limit
to 100,000 on import, so `[[[[…` 100,000 deep overflowed the C stack and killed the node. Two
defences, both here:

- `pin_recursion_limit()` imports py_ecc early (so its side effect has happened) and then sets
  a sane limit, once, at process start;
- `loads()` refuses a document nested deeper than a configured depth (default 64) before the
  decoder sees it, with an error that names the limit.

The depth check costs two `bytes.count` calls for ordinary input; only a document with more
brackets than the limit is scanned (strings removed by one regex, the brackets summed in C).
"""

from __future__ import annotations

import json
import re
import sys
from contextvars import ContextVar
from itertools import accumulate
from typing import Any

DEFAULT_MAX_DEPTH = 64
SANE_RECURSION_LIMIT = 3000

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


# The limit for the request being handled: the HTTP middleware sets it from
# server.max_json_depth, so every handler and WebSocket loop that parses JSON gets it.
max_depth_var: ContextVar[int] = ContextVar("max_json_depth", default=DEFAULT_MAX_DEPTH)


class JsonTooDeep(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels (the node's limit is {limit})")
        self.limit = limit


def depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether the JSON text `raw` nests arrays/objects deeper than `limit`."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def loads(raw: bytes | str, max_depth: int | None = None) -> Any:
    """`json.loads`, refusing (JsonTooDeep, a ValueError) documents deeper than `max_depth`
    (default: the limit of the request being handled)."""
    if max_depth is None:
        max_depth = max_depth_var.get()
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if depth_exceeds(data, max_depth):
        raise JsonTooDeep(max_depth)
    try:
        return json.loads(raw)
    except RecursionError:  # cannot happen under the depth limit; never let it escape as a 500
        raise JsonTooDeep(max_depth) from None


def pin_recursion_limit(limit: int = SANE_RECURSION_LIMIT) -> None:
    """Let dependencies that raise the recursion limit on import do so now, then set it back."""
    try:
        import py_ecc  # noqa: F401 - imported for its side effect on the recursion limit
    except ImportError:
        pass
    sys.setrecursionlimit(limit)
