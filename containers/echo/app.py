"""echo: the identity workload. Its output is its input `data`, so it fits anywhere in a chain.

With ECHO_HOSTNAME=1 (env) the output is {"data": <input data>, "hostname": <this container's
hostname>} instead, so a test can see which of a service's tasks answered.
"""

import os
import socket

from service import serve

WITH_HOSTNAME = os.environ.get("ECHO_HOSTNAME", "").strip().lower() in ("1", "true", "yes", "on")
HOSTNAME = socket.gethostname()


def handle(body):
    if WITH_HOSTNAME:
        return {"data": body.get("data"), "hostname": HOSTNAME}
    return body.get("data")


def stream(body):
    import json

    text = json.dumps(body.get("data"))
    for start in range(0, len(text), 16):
        yield text[start : start + 16]


if __name__ == "__main__":
    serve(handle, stream)
