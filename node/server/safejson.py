"""JSON from outside the node, parsed without risk to the process.

CPython's JSON decoder recurses in C once per nesting level and only stops at the interpreter's
recursion limit. One of our dependencies (py_ecc, pulled in by eth-account) raises that limit
to 100,000 on import, so `[[[[…` 100,000 deep overflowed the C stack and killed the node. Two
defences, both here:

- `pin_recursion_limit()` imports py_ecc early (so its side effect has happened) and then sets
  a sane limit, once, at process start;
- `loads()` refuses a document nested deeper than a configured depth (default 64) before the
  decoder sees it, with an error that names the limit.

Parsing itself is orjson's (a fifth of the stdlib's cost) for what it reads exactly as the stdlib
does; the stdlib decides the rest: what orjson refuses (NaN and Infinity literals, `1e999`, lone
surrogates, UTF-16/32 input) and any document with 19 digits in a row, which orjson would turn
into a float where the stdlib keeps every digit of a 256-bit chain value. Both keep the last of
duplicate keys.

The depth check costs two `bytes.count` calls for ordinary input; only a document with more
brackets than the limit is scanned (strings removed by one regex, the brackets summed in C).

The scan is linear whatever the input, because the string pattern cannot fail: its closing
quote is optional, so an unterminated string is one match running to the end of the input.
(With a required closing quote, an unterminated string of escaped quotes made every `"` start
a match that ran to the end and failed: quadratic, 80 KB stalled the event loop for 27 s.)
A string cut short this way is invalid JSON, which the decoder then refuses; brackets after
its opening quote are inside it for the decoder too, so removing them hides no nesting.

`loads(..., strict=True)` (what request bodies get, through `http.parse_json`) also refuses
the literals `NaN`, `Infinity` and `-Infinity`: Python's decoder accepts them though JSON has
no such values, and an infinite amount reached arithmetic that raised (a 500) or compared
as larger than every budget. It costs nothing on other input: the decoder calls the hook
only for those literals. (A number too large for a float, `1e999`, still parses as
infinity; fields that need finite numbers say so in their models.)
"""

from __future__ import annotations

import json
import re
import sys
from contextvars import ContextVar
from itertools import accumulate
from typing import Any

import orjson

DEFAULT_MAX_DEPTH = 64
SANE_RECURSION_LIMIT = 3000

# A JSON string, or an unterminated one up to the end of the input (see the module docstring).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
# 19 digits in a row: a number orjson might read as a float (it keeps 64-bit integers only) where
# the stdlib keeps every digit (chain values are 256-bit); such documents go to the stdlib.
_LONG_NUMBER = re.compile(rb"\d{19}")


# The limit for the request being handled: the HTTP middleware sets it from
# server.max_json_depth, so every handler and WebSocket loop that parses JSON gets it.
max_depth_var: ContextVar[int] = ContextVar("max_json_depth", default=DEFAULT_MAX_DEPTH)


class NonStandardJson(ValueError):
    def __init__(self, literal: str) -> None:
        super().__init__(f"{literal} is not a JSON value (numbers must be finite)")
        self.literal = literal


def _refuse_constant(literal: str) -> Any:
    raise NonStandardJson(literal)


_STRICT = json.JSONDecoder(parse_constant=_refuse_constant)


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


def loads(raw: bytes | str, max_depth: int | None = None, *, strict: bool = False) -> Any:
    """`json.loads`, refusing (JsonTooDeep, a ValueError) documents deeper than `max_depth`
    (default: the limit of the request being handled), and with `strict` the literals NaN,
    Infinity and -Infinity (NonStandardJson, a ValueError)."""
    if max_depth is None:
        max_depth = max_depth_var.get()
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if depth_exceeds(data, max_depth):
        raise JsonTooDeep(max_depth)
    if _LONG_NUMBER.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # NaN, 1e999, a lone surrogate, UTF-16: the stdlib decides (and says why)
    try:
        if strict:
            text = raw if isinstance(raw, str) else raw.decode(json.detect_encoding(raw), "surrogatepass")
            return _STRICT.decode(text)
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
