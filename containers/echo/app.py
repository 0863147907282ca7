"""echo: the identity workload. Its output is its input `data`, so it fits anywhere in a chain."""

from service import serve


def handle(body):
    return body.get("data")


def stream(body):
    import json

    text = json.dumps(body.get("data"))
    for start in range(0, len(text), 16):
        yield text[start : start + 16]


if __name__ == "__main__":
    serve(handle, stream)
