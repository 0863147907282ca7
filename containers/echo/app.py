"""echo: the identity workload. Its output is its input `data`, so it fits anywhere in a chain.

With ECHO_HOSTNAME=1 (env) the output is {"data": <input data>, "hostname": <this container's
hostname>} instead, so a test can see which of a service's tasks answered.

With PROOFS=1 (env), a request with `requires_proof` is answered in the Infernet node's
five-key form: raw_input and raw_output are the input (hex, as the chain sends it), and the proof
is sha256 of the input bytes, so a test can see a proof travel to a verifier.
"""

import hashlib
import os
import socket

from service import serve

WITH_HOSTNAME = os.environ.get("ECHO_HOSTNAME", "").strip().lower() in ("1", "true", "yes", "on")
HOSTNAME = socket.gethostname()
PROOFS = os.environ.get("PROOFS", "").strip().lower() in ("1", "true", "yes", "on")


def _bytes(data):
    text = data if isinstance(data, str) else repr(data)
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        return text.encode()


def handle(body):
    if PROOFS and body.get("requires_proof"):
        raw = _bytes(body.get("data"))
        return {"raw_input": raw.hex(), "processed_input": "", "raw_output": raw.hex(), "processed_output": "",
                "proof": hashlib.sha256(raw).hexdigest()}
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
