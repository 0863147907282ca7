"""`node-daemon convert config.json`: the config.yaml equivalent to an Infernet config.json.

For operators who move over for good. The output is the same tree the node builds when it runs
the config.json itself (node/infernet_config.py), so both ways behave alike; every Infernet key
that has no place in it is named in the header, with what the node does instead.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from node.config import ConfigError, parse_config
from node.infernet_config import INFERNET_VERSION, InfernetFormError, read_infernet


def convert_infernet(path: Path) -> str:
    """The YAML text; raises ConfigError (naming the field) when the config would not run."""
    try:
        translation = read_infernet(path)
    except InfernetFormError as exc:
        raise ConfigError(str(exc)) from None
    parse_config(translation.data, str(path))  # the same checks as `run`
    header = [f"# config.yaml converted from {path.name} (Infernet node {INFERNET_VERSION} form) by node-daemon convert.",
              "# Any string may use ${VAR} or ${VAR:-default}; relative paths are relative to this file."]
    if translation.notes:
        header.append("# Not carried over (the node does this instead):")
        for note in translation.notes:
            header += textwrap.wrap(note, 96, initial_indent="#   - ", subsequent_indent="#     ")
    body = yaml.safe_dump(translation.data, sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(header) + "\n" + body
