"""The configuration reference is generated from the models (scripts/gen_config_docs.py) and
checked here, so it cannot drift: docs/config.md is what the generator writes today, and every
field of every config model, found by walking the models independently of the generator, has a
row with a meaning. `check-config --schema` prints the models' JSON Schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing

from pydantic import BaseModel

from node.config import NodeConfig
from tests.helpers import REPO

DOC = REPO / "docs" / "config.md"


def every_field(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        for sub, suffix in nested(field.annotation):
            paths += every_field(sub, f"{path}{suffix}.")
    return paths


def nested(annotation) -> list[tuple[type[BaseModel], str]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return [(m, "[]" + s) for m, s in nested(args[0])]
    if origin is dict:
        return [(m, ".<key>" + s) for m, s in nested(args[1])]
    return [m for a in args for m in nested(a)]


def test_docs_config_md_is_what_the_generator_writes_from_the_models_today():
    out = subprocess.run([sys.executable, "scripts/gen_config_docs.py", "--check"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + " (run: python scripts/gen_config_docs.py)"


def test_every_field_of_every_config_model_has_a_row_with_type_default_and_meaning():
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\| `([^`]+)` \| (.*?) \| `(.*?)` \| (.*?) \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = match.groups()[1:]
    fields = every_field(NodeConfig)
    assert len(fields) > 150
    missing = [f for f in fields if f not in rows]
    assert missing == [], missing
    undocumented = [f for f in fields if not rows[f][0].strip() or not rows[f][1] or not rows[f][3].strip()]
    assert undocumented == [], undocumented
    assert rows["server.port"][1] == "4000" and rows["server.auth_rate_limit.num_requests"][1] == "30"
    assert rows["containers[].timeout"][2] == "s"  # the unit, read from the meaning


def test_check_config_schema_prints_the_json_schema_of_config_yaml():
    out = subprocess.run([sys.executable, "-m", "node", "check-config", "--schema"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    assert {"server", "containers", "chain", "registry", "gateway", "cre"} <= schema["properties"].keys()
    assert schema["additionalProperties"] is False
