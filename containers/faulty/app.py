"""faulty: a fault-injection workload, for checking how a node and its clients handle failing
links. `data.mode` picks the behaviour:

- "ok" (default): answers {"ok": true, "data": data}
- "http500": answers HTTP 500 with a JSON body
- "nonjson": answers 200 with a body that is not JSON
- "sleep": sleeps `data.seconds` (default 30) before answering
- "crash": the process exits with status 3 (the container stops)
"""

import os
import time

from service import Raw, serve


def handle(body):
    data = body.get("data")
    mode = data.get("mode", "ok") if isinstance(data, dict) else "ok"
    if mode == "http500":
        raise RuntimeError("injected failure")
    if mode == "nonjson":
        return Raw("this is not json")
    if mode == "sleep":
        time.sleep(float(data.get("seconds", 30)))
    if mode == "crash":
        os._exit(3)
    return {"ok": True, "data": data}


if __name__ == "__main__":
    serve(handle)
