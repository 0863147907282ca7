"""transform: a text transform applied to every string in `data` (keys are kept).

MODE (env): upper (default), lower, reverse, title. Streams the transformed text of
`data["text"]` word by word when asked to stream.
"""

import os

from service import serve

MODES = {
    "upper": str.upper,
    "lower": str.lower,
    "reverse": lambda s: s[::-1],
    "title": str.title,
}
fn = MODES[os.environ.get("MODE", "upper")]


def transform(value):
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [transform(v) for v in value]
    if isinstance(value, dict):
        return {k: transform(v) for k, v in value.items()}
    return value


def handle(body):
    return transform(body.get("data"))


def stream(body):
    data = body.get("data")
    text = data.get("text", "") if isinstance(data, dict) else str(data)
    words = fn(text).split(" ")
    for index, word in enumerate(words):
        yield word if index == len(words) - 1 else word + " "


if __name__ == "__main__":
    serve(handle, stream)
