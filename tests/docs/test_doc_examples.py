"""The documentation's examples, run against a real node so they cannot rot.

An example is marked in a page of docs/ by `<!-- example -->` (or `<!-- example 401 -->` for the
status it expects) and is either a `bash` block holding one `curl` followed by a `json` or
`text` block with the answer, or a `python` block run as a script. The answer is compared by
shape: the same keys at every level, `…` in a string for any text, `{…}` / `[…]` for any object or
list, any number where a number is shown, a one-item list for "every item looks like this".
`<name>` in a request is the `name` of an earlier answer on the same page; `localhost:4000` is the
node under test.

The node is a real process (`python -m node run`) on a config like the shipped one, its `echo`
and `upper` containers the shipped container programs run as local processes (no Docker: the
examples are about the API, and this keeps them fast)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, Http, NodeProcess, free_port

DOCS = REPO / "docs"
MARK = re.compile(r"^<!-- example(?: (\d{3}))? -->\s*$")
FENCE = re.compile(r"^```(\w*)")
ANY_DICT, ANY_LIST = "\x00any-object", "\x00any-list"
CRE_KEY = "docs-example-key"
# The registry example's oracle and relayer: anvil's public test accounts 7 and 8.
ORACLE = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"
RELAYER = "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f"


@dataclass
class Example:
    page: str
    line: int
    status: int | None
    kind: str  # "curl" or "python"
    source: str
    answer_kind: str = ""
    answer: str = ""

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def _fences(lines: list[str], start: int) -> tuple[str, str, int]:
    """The fenced block starting at or after `start`: (language, text, index after it)."""
    i = start
    while i < len(lines) and not FENCE.match(lines[i]):
        if lines[i].strip():
            raise ValueError(f"line {i + 1}: expected a fenced block, got {lines[i]!r}")
        i += 1
    if i == len(lines):
        raise ValueError(f"line {start + 1}: no fenced block follows")
    lang = FENCE.match(lines[i]).group(1)
    j = i + 1
    while j < len(lines) and not lines[j].startswith("```"):
        j += 1
    return lang, "\n".join(lines[i + 1:j]), j + 1


def examples(page: Path) -> list[Example]:
    lines = page.read_text().split("\n")
    found: list[Example] = []
    name = str(page.relative_to(DOCS))
    for i, line in enumerate(lines):
        mark = MARK.match(line)
        if not mark:
            continue
        status = int(mark.group(1)) if mark.group(1) else None
        lang, text, after = _fences(lines, i + 1)
        if lang == "python":
            found.append(Example(name, i + 1, status, "python", text))
        elif lang == "bash":
            answer_kind, answer, _ = _fences(lines, after)
            assert answer_kind in ("json", "text"), f"{name}:{i + 1}: answer must be json or text"
            found.append(Example(name, i + 1, status, "curl", text.strip(), answer_kind, answer))
        else:
            raise AssertionError(f"{name}:{i + 1}: an example is a bash or python block, not {lang!r}")
    return found


PAGES = sorted(p for p in DOCS.rglob("*.md") if examples(p))


# -- the answer's shape ---------------------------------------------------------------------------


def expected_json(text: str) -> Any:
    text = text.replace("{…}", json.dumps(ANY_DICT)).replace("[…]", json.dumps(ANY_LIST))
    return json.loads(text)


def mismatch(expected: Any, actual: Any, path: str = "$") -> str | None:
    """Why `actual` does not have the shape of `expected`, or None."""
    if expected == ANY_DICT:
        return None if isinstance(actual, dict) else f"{path}: expected an object, got {actual!r}"
    if expected == ANY_LIST:
        return None if isinstance(actual, list) else f"{path}: expected a list, got {actual!r}"
    if isinstance(expected, str):
        if not isinstance(actual, str):
            return f"{path}: expected a string, got {actual!r}"
        pattern = ".*".join(re.escape(part) for part in expected.split("…"))
        return None if re.fullmatch(pattern, actual, re.S) else f"{path}: {actual!r} does not match {expected!r}"
    if isinstance(expected, bool) or expected is None:
        return None if actual is expected else f"{path}: expected {expected!r}, got {actual!r}"
    if isinstance(expected, (int, float)):
        ok = isinstance(actual, (int, float)) and not isinstance(actual, bool)
        return None if ok else f"{path}: expected a number, got {actual!r}"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {actual!r}"
        if set(expected) != set(actual):
            return (f"{path}: keys differ: documented but absent {sorted(set(expected) - set(actual))}, "
                    f"answered but undocumented {sorted(set(actual) - set(expected))}")
        for key in expected:
            if (why := mismatch(expected[key], actual[key], f"{path}.{key}")) is not None:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected a list, got {actual!r}"
        if len(expected) == 1:
            if not actual:
                return f"{path}: expected items, got an empty list"
            pairs = [(expected[0], item) for item in actual]
        elif len(expected) != len(actual):
            return f"{path}: expected {len(expected)} items, got {len(actual)}"
        else:
            pairs = list(zip(expected, actual))
        for n, (exp, act) in enumerate(pairs):
            if (why := mismatch(exp, act, f"{path}[{n}]")) is not None:
                return why
        return None
    raise AssertionError(f"{path}: cannot compare {expected!r}")


def text_mismatch(expected: str, actual: str) -> str | None:
    want, got = expected.strip("\n").split("\n"), actual.strip("\n").split("\n")
    if len(want) != len(got):
        return f"expected {len(want)} lines, got {len(got)}: {actual!r}"
    for n, (exp, act) in enumerate(zip(want, got)):
        if (why := mismatch(exp, act, f"line {n + 1}")) is not None:
            return why
    return None


def test_shape_comparison_catches_a_missing_key_an_extra_key_and_a_wrong_value():
    assert mismatch(expected_json('{"id": "…", "n": 1}'), {"id": "x", "n": 7}) is None
    assert "absent ['n']" in mismatch({"id": "…", "n": 1}, {"id": "x"})
    assert "undocumented ['extra']" in mismatch({"id": "…"}, {"id": "x", "extra": 1})
    assert "does not match" in mismatch({"status": "success"}, {"status": "failed"})
    assert mismatch(expected_json('{"a": {…}, "b": […]}'), {"a": {"x": 1}, "b": []}) is None
    assert "expected a number" in mismatch([{"n": 1}], [{"n": 1}, {"n": "2"}])


# -- running them ---------------------------------------------------------------------------------


def curl(command: str, port: int) -> tuple[str, str, dict[str, str], bytes | None]:
    args = shlex.split(command)
    assert args[0] == "curl", f"not a curl command: {command}"
    method, url, headers, data = None, None, {}, None
    it = iter(args[1:])
    for arg in it:
        if arg in ("-s", "-S", "-sS"):
            continue
        if arg == "-X":
            method = next(it)
        elif arg == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = next(it).encode()
        elif not arg.startswith("-"):
            url = arg
        else:
            raise AssertionError(f"curl option {arg} is not understood by the example runner")
    assert url is not None and url.startswith("localhost:4000/"), f"examples call localhost:4000: {command}"
    return method or ("POST" if data is not None else "GET"), url[len("localhost:4000"):], headers, data


def substitute(text: str, found: dict[str, Any]) -> str:
    def one(m: re.Match) -> str:
        assert m.group(1) in found, f"<{m.group(1)}> names no value of an earlier answer"
        return str(found[m.group(1)])
    return re.sub(r"<([a-z_A-Z]+)>", one, text)


def remember(value: Any, found: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (str, int)) and not isinstance(item, bool):
                found[key] = item
            remember(item, found)
    elif isinstance(value, list):
        for item in value:
            remember(item, found)


def run_curl(example: Example, http: Http, found: dict[str, Any]) -> None:
    method, path, headers, data = curl(substitute(example.source, found), http.port)
    resp = http.request(method, path, raw=data, headers=headers)
    if example.status is not None:
        assert resp.status == example.status, f"{example.where()}: status {resp.status}: {resp.body[:500]!r}"
    else:
        assert 200 <= resp.status < 300, f"{example.where()}: status {resp.status}: {resp.body[:500]!r}"
    if example.answer_kind == "json":
        actual = json.loads(resp.body)
        why = mismatch(expected_json(example.answer), actual)
        remember(actual, found)
    else:
        why = text_mismatch(example.answer, resp.body.decode())
        first = resp.body.decode().split("\n", 1)[0]
        found.setdefault("id", first)
    assert why is None, f"{example.where()}: the answer is not the documented one: {why}\nanswer: {resp.body[:800]!r}"


def run_python(example: Example, port: int) -> None:
    if example.status is not None:
        raise AssertionError(f"{example.where()}: a python example asserts its own answers")
    source = example.source.replace("localhost:4000", f"127.0.0.1:{port}")
    done = subprocess.run([sys.executable, "-c", source], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, f"{example.where()}: the example failed:\n{done.stdout}\n{done.stderr}"


class Service:
    """One of the shipped container programs (containers/<name>/app.py), run as a local process."""

    def __init__(self, name: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "containers" / name / "app.py")], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO / "containers" / "_lib"), "PORT": str(self.port), **(env or {})})
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def docs_node(tmp_path_factory):
    services = {"echo": Service("echo"), "upper": Service("transform", {"MODE": "upper"})}
    workdir = tmp_path_factory.mktemp("docs")
    node = NodeProcess(workdir, [{"id": cid, "url": s.url, "description": cid} for cid, s in services.items()], extra={
        "manage_containers": False,
        "cre": {"enabled": True, "api_key": CRE_KEY, "actions": {"notify": {"containers": ["echo"]}}},
        "registry": {"enabled": True, "chain_id": 1, "oracles": [ORACLE], "relayers": [RELAYER]},
        "gateway": {"enabled": True}, "master_key_path": str(workdir / "node.key"),
    })
    try:
        node.start(timeout=60)
        yield node
    finally:
        node.stop()
        for service in services.values():
            service.stop()


def test_every_example_marker_is_followed_by_a_runnable_example():
    total = sum(len(examples(p)) for p in DOCS.rglob("*.md"))
    assert total >= 10, f"only {total} documented examples found"


@pytest.mark.docker  # a real node process (no Docker engine needed: the outer ring's definition)
@pytest.mark.parametrize("doc_page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_the_examples_of_the_page_answer_as_documented(doc_page: Path, docs_node):
    http, found = docs_node.http(), {}
    for example in examples(doc_page):
        if example.kind == "curl":
            run_curl(example, http, found)
        else:
            run_python(example, docs_node.port)
