"""The node's master key is a top-level `master_key_path` (node/secrets.py): a node without the
gateway keeps its key there, and configs written when the key was `gateway.master_key_path`
still load, saying so once."""

from __future__ import annotations

import io
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from node.cli import main as cli_main
from node.config import ConfigError, parse_config, read_config
from node.secrets import SecretBox


def test_a_cre_only_node_seals_its_secrets_with_the_top_level_master_key_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "master_key_path": "keys/cre.key", "storage": {"path": "node.db"},
        "gateway": {"enabled": False}, "registry": {"enabled": False}}))
    assert read_config(path).config.master_key_path == str(tmp_path / "keys" / "cre.key")
    monkeypatch.setattr(sys, "stdin", io.StringIO("value"))
    with ThreadPoolExecutor(1) as pool:  # the command runs its own event loop, as from a shell
        code = pool.submit(cli_main, ["cre", "secrets", "set", "wf", "API_KEY", "--config", str(path)]).result()
    assert code == 0, capsys.readouterr().err
    assert f"sealed with {tmp_path / 'keys' / 'cre.key'}" in capsys.readouterr().out
    assert not (tmp_path / "node.key").exists()
    SecretBox.from_file(tmp_path / "keys" / "cre.key")  # created, 32 bytes
    assert (tmp_path / "keys" / "cre.key").stat().st_mode & 0o777 == 0o600


def test_the_old_gateway_master_key_path_still_loads_as_master_key_path_and_logs_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = parse_config({"gateway": {"master_key_path": "/keys/old.key", "enabled": True}})
    assert config.master_key_path == "/keys/old.key"
    assert config.gateway.enabled
    [line] = [r for r in caplog.records if r.getMessage() == "config.deprecated"]
    assert "gateway.master_key_path" in line._fields["note"]  # type: ignore[attr-defined]
    assert parse_config({"gateway": {"master_key_path": "/k", "enabled": True},
                         "master_key_path": "/k"}).master_key_path == "/k"  # both, the same: fine


def test_read_config_resolves_the_old_key_against_the_file_and_reports_it_once(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("gateway:\n  master_key_path: node.key\n")
    loaded = read_config(path)
    assert loaded.config.master_key_path == str(tmp_path / "node.key")
    assert loaded.deprecated == ("gateway.master_key_path is deprecated: read as master_key_path",)
    path.write_text("master_key_path: node.key\n")
    assert read_config(path).deprecated == ()


def test_gateway_and_top_level_master_key_paths_that_differ_are_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"master_key_path": "/keys/a.key", "gateway": {"master_key_path": "/keys/b.key"}})
    assert "gateway.master_key_path" in str(refused.value) and "and master_key_path" in str(refused.value)
    assert "/keys/a.key" in str(refused.value) and "/keys/b.key" in str(refused.value)


def test_check_config_says_which_key_is_deprecated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("gateway:\n  master_key_path: node.key\n")
    assert cli_main(["check-config", "--config", str(path)]) == 0
    assert "deprecated: gateway.master_key_path is deprecated: read as master_key_path" in capsys.readouterr().out
