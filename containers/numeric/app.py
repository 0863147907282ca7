"""numeric: statistics of every number found in `data` (nested lists and objects included).

Output: {"count", "sum", "mean", "min", "max", "values"}; `values` holds the numbers scaled by
FACTOR (env, default 1), so the output is itself valid input for another numeric link.
Booleans are not numbers; no number at all is a 400 error.
BURN_MS (env, default 0) makes every call first spin the CPU for that many milliseconds: a
CPU-bound workload for benchmarks (one container uses at most one core: one Python process).
"""

import os
import time

from service import serve

FACTOR = float(os.environ.get("FACTOR", "1"))
BURN_S = float(os.environ.get("BURN_MS", "0")) / 1000


def burn(seconds):
    end = time.thread_time() + seconds  # CPU time of this thread, not wall time
    while time.thread_time() < end:
        pass


def numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)


def handle(body):
    if BURN_S:
        burn(BURN_S)
    data = body.get("data")
    # A numeric link's own output: use its values only, not its statistics again.
    if isinstance(data, dict) and isinstance(data.get("values"), list) and "count" in data:
        data = data["values"]
    found = list(numbers(data))
    if not found:
        raise ValueError("no numbers in data")
    values = [v * FACTOR if FACTOR != 1 else v for v in found]
    total = sum(values)
    return {
        "count": len(values),
        "sum": total,
        "mean": total / len(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


if __name__ == "__main__":
    serve(handle)
