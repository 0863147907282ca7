"""JSON as JavaScript writes it, canonically: the one byte form of every CRE signature.

Both ends of the CRE bridge are JavaScript or speak its number model: the app and the CRE
workflow (TypeScript) compute `stableJsonBody` with `JSON.stringify`, and Chainlink's gateway
hashes a trigger request as RFC 8785 JSON (JCS), whose numbers and strings are exactly
`JSON.stringify`'s. So one serialiser serves both:

  * object keys sorted by UTF-16 code units (`Object.keys(o).sort()`, RFC 8785 §3.2.3), recursively;
  * no whitespace; strings escaped as JSON.stringify does (`"`, `\\`, \\b \\f \\n \\r \\t, other
    control characters as lowercase \\u00xx; everything else, `<`, `>`, `&` and non-ASCII included,
    written as UTF-8);
  * numbers as ECMAScript Number::toString: `1e-7`, `1e+21`, `10000000000000000`, `0.1`, `1`
    for `1.0`, `0` for `-0`.

Values JavaScript cannot carry are refused (`NotJsSafe`, naming the field) instead of being
signed in a form the other side cannot reproduce: integers beyond ±2^53 (a JS number rounds
them; send big values as decimal strings, as the seeds do), NaN/Infinity, lone surrogates.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_SAFE = 2**53

class NotJsSafe(ValueError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


_SURROGATE = re.compile("[\ud800-\udfff]")
_encode_string = json.encoder.encode_basestring  # C: escapes exactly what JSON.stringify escapes


def _string(text: str, path: str) -> str:
    """JSON.stringify's string: `"` `\\` \\b \\f \\n \\r \\t, other controls as \\u00xx, the rest as is."""
    if _SURROGATE.search(text):
        raise NotJsSafe(path, "contains a lone UTF-16 surrogate (not valid Unicode text)")
    return _encode_string(text)


def number(value: float) -> str:
    """ECMAScript Number::toString(value) for a finite float (ECMA-262 §6.1.6.1.20)."""
    if value == 0:
        return "0"
    if value < 0:
        return "-" + number(-value)
    # repr gives the shortest digits that round-trip, as the ECMAScript algorithm requires.
    mantissa, _, exp = repr(value).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    point = len(whole) + (int(exp) if exp else 0) - (len(whole + frac) - len((whole + frac).lstrip("0")))
    digits = digits.rstrip("0")
    k, n = len(digits), point  # value = 0.d1d2…dk × 10^n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(e)}"


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _write(value: Any, path: str, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE:
            raise NotJsSafe(path, "integer beyond ±2^53 cannot be represented in JavaScript; "
                                  "send it as a decimal string")
        out.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise NotJsSafe(path, "NaN and Infinity are not JSON numbers")
        out.append(number(value))
    elif isinstance(value, str):
        out.append(_string(value, path))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, f"{path}[{index}]", out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        keys = sorted(value, key=str)
        if any(ch > "\uffff" for key in keys for ch in str(key)):  # code points and UTF-16 disagree
            keys.sort(key=lambda k: _utf16_key(str(k)))
        for index, key in enumerate(keys):
            if index:
                out.append(",")
            name = str(key)
            child = f"{path}.{name}" if path else name
            out.append(_string(name, child))
            out.append(":")
            _write(value[key], child, out)
        out.append("}")
    else:
        raise NotJsSafe(path, f"{type(value).__name__} is not a JSON value")


def stringify(value: Any, path: str = "") -> str:
    """The canonical JavaScript JSON text of a parsed JSON value; NotJsSafe names a bad field."""
    out: list[str] = []
    _write(value, path, out)
    return "".join(out)
