"""House rule: a subsystem's tables are named only inside its own package.

The pruner and the metrics sampler used to name the gateway's, the registry's, the CRE's and
the chain's tables in SQL strings, so renaming a table meant editing the bottom and side layers.
Now each subsystem yields its expiry rules and sample parts from its lifespan (node/subsystem.py);
this test keeps it so. It reads every string literal under node/ (the tables are the ones the
migrations create), and fails for a table named, in SQL or as a bare table name (`jobs`: in SQL
only, the word is everywhere), outside the package its prefix belongs to."""

from __future__ import annotations

import ast
import re
from pathlib import Path

NODE = Path(__file__).resolve().parent.parent / "node"
OWNERS = {"gw_": "gateway", "reg_": "registry", "cre_": "cre", "chain_": "chain", "jobs": "jobs"}
CREATE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
SQL_NAME = r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE|EXISTS)\s+{}\b"


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _owner(table: str) -> str | None:
    return next((pkg for prefix, pkg in OWNERS.items() if table == prefix or
                 (prefix.endswith("_") and table.startswith(prefix))), None)


def _tables() -> dict[str, str]:
    """Every table a migration under node/ creates, with the package its prefix belongs to."""
    tables = {}
    for path in NODE.rglob("*.py"):
        for _, text in _strings(path):
            for name in CREATE.findall(text):
                if (owner := _owner(name)) is not None:
                    tables[name] = owner
    return tables


def violations(root: Path = NODE) -> list[str]:
    tables = _tables()
    found = []
    for path in sorted(root.rglob("*.py")):
        package = path.relative_to(root).parts[0]
        for line, text in _strings(path):
            for table, owner in tables.items():
                if package == owner:
                    continue
                if (text == table and table != "jobs") or re.search(SQL_NAME.format(re.escape(table)), text, re.IGNORECASE):
                    found.append(f"node/{path.relative_to(root)}:{line} names {table} (owned by node/{owner}/)")
    return found


def test_the_migrations_create_tables_of_every_subsystem_so_the_guard_has_something_to_check():
    owners = set(_tables().values())
    assert owners == {"gateway", "registry", "cre", "chain", "jobs"}


def test_no_subsystem_table_is_named_outside_its_own_package():
    assert violations() == []
