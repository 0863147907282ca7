#!/usr/bin/env python3
"""Benchmark: the JSON depth pre-scan (node/server/safejson.py) before and after issue #22.

The old pre-scan stripped strings with a pattern whose closing quote was required; on an
unterminated string of escaped quotes that is quadratic. The new pattern's closing quote is
optional, so it cannot fail and rescan. This script times both on *valid* bodies of several
shapes and sizes (the request path must not get slower), side by side in one run, then the
pathological body once each (the old one on a small size only: it is quadratic).

The old scan is kept here only as the baseline: a copy of the code as it was.

    .venv/bin/python scripts/bench_safejson.py [--repeat 5] [--max-mb 4]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.server import safejson  # noqa: E402

# -- the baseline: the pre-scan as it was before issue #22 ------------------------------------
_OLD_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def old_depth_exceeds(raw: bytes, limit: int) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _OLD_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


# -- bodies -------------------------------------------------------------------------------------

def job(size: int) -> bytes:
    """A job request: one object with a large string payload (few brackets: the fast path)."""
    return json.dumps({"containers": ["echo"], "data": {"prompt": "x" * size}}).encode()


def records(size: int) -> bytes:
    """A batch-like list of small objects with short strings and escapes (many brackets)."""
    item = {"containers": ["echo", "upper"], "data": {"text": 'say "hi"\\n', "n": 12, "tags": ["a", "b"]}}
    one = len(json.dumps(item)) + 2
    return json.dumps([item] * max(1, size // one)).encode()


def nested(size: int) -> bytes:
    """Objects and arrays nested 61 deep (under the limit), repeated: the full scan."""
    value: object = {"k": "v"}
    for _ in range(30):
        value = {"a": [value]}
    one = len(json.dumps(value)) + 1
    return json.dumps([value] * max(1, size // one)).encode()


def escaped(size: int) -> bytes:
    """Many strings full of escapes (unicode and quotes) in an array."""
    s = 'q\\"u\\u00e9\\\\' * 4
    one = len(s) + 3
    return ("[" + ",".join(f'["{s}"]' for _ in range(max(1, size // one))) + "]").encode()


SHAPES = {"job": job, "records": records, "nested": nested, "escaped": escaped}


def timed(fn, raw: bytes, repeat: int) -> float:
    """Median milliseconds of `fn(raw, 64)` over `repeat` runs."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(raw, 64)
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def side_by_side(raw: bytes, repeat: int) -> tuple[float, float]:
    """Median milliseconds of the old and the new pre-scan, runs interleaved so that a busy
    machine slows both alike."""
    old, new = [], []
    for _ in range(repeat):
        old.append(timed(old_depth_exceeds, raw, 1))
        new.append(timed(safejson.depth_exceeds, raw, 1))
    return statistics.median(old), statistics.median(new)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-mb", type=float, default=4)
    args = parser.parse_args()
    sizes = [s for s in (1024, 64 * 1024, 1024 * 1024, 4 * 1024 * 1024, 16 * 1024 * 1024)
             if s <= args.max_mb * 1024 * 1024]
    print(f"valid bodies, depth pre-scan, median of {args.repeat} (ms); loads = the whole json parse with the "
          "new pre-scan, for scale")
    print(f"{'shape':8} {'size':>9} {'old ms':>9} {'new ms':>9} {'new/old':>8} {'loads ms':>9}")
    for name, make in SHAPES.items():
        for size in sizes:
            raw = make(size)
            assert old_depth_exceeds(raw, 64) is safejson.depth_exceeds(raw, 64) is False, name
            old, new = side_by_side(raw, args.repeat)
            whole = timed(safejson.loads, raw, args.repeat)
            print(f"{name:8} {len(raw):>9} {old:>9.3f} {new:>9.3f} {new / old if old else 1:>8.2f} {whole:>9.2f}")
    print("\npathological: '[' * 70 + '\"' + '\\\\\"' * n (an unterminated string of escaped quotes)")
    for n in (5_000, 10_000, 40_000, 500_000):
        raw = b"[" * 70 + b'"' + b'\\"' * n
        old = f"{timed(old_depth_exceeds, raw, 1):.1f} ms" if n <= 10_000 else "skipped (quadratic)"
        print(f"n={n:>7} ({len(raw):>8} bytes): old {old}, new {timed(safejson.depth_exceeds, raw, 1):.2f} ms")


if __name__ == "__main__":
    main()
