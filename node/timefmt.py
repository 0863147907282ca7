"""Timestamps as the APIs show them: ISO 8601 UTC."""

from __future__ import annotations

import time
from typing import overload


@overload
def iso_utc(ts: float, millis: bool = True) -> str: ...
@overload
def iso_utc(ts: None, millis: bool = True) -> None: ...
@overload
def iso_utc(ts: float | None, millis: bool = True) -> str | None: ...


def iso_utc(ts: float | None, millis: bool = True) -> str | None:
    """`2026-11-23T08:00:00.123Z` (or without the milliseconds); None stays None."""
    if ts is None:
        return None
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    return f"{base}.{int(ts % 1 * 1000):03d}Z" if millis else f"{base}Z"
