"""config.yaml validation and `check-config`: bad input names the field, secrets stay secret."""

from __future__ import annotations

import subprocess
import sys

import pytest

from node.config import ConfigError, load_config, parse_config
from tests.helpers import REPO


def test_shipped_config_is_valid():
    config = load_config(REPO / "config.yaml", env={})
    assert [c.id for c in config.containers] == ["echo", "upper", "stats"]
    assert config.chain.enabled is False
    assert all(c.build is not None for c in config.containers), "the default config must not need a pull"


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError) as err:
        parse_config({"chain": {"enabeld": True}})
    assert "chain.enabeld" in str(err.value)


def test_bad_type_names_the_field():
    with pytest.raises(ConfigError) as err:
        parse_config({"containers": [{"id": "a", "image": "x", "port": "not-a-port"}]})
    assert "containers.0.port" in str(err.value)


def test_duplicate_ids_and_missing_image_are_refused():
    with pytest.raises(ConfigError, match="duplicate container id"):
        parse_config({"containers": [{"id": "a", "image": "x"}, {"id": "a", "image": "y"}]})
    with pytest.raises(ConfigError, match="needs image or build"):
        parse_config({"containers": [{"id": "a"}]})


def test_env_substitution_with_default_and_missing():
    config = parse_config({"server": {"port": "${P:-4100}"}, "storage": {"path": "${DB}"}}, env={"DB": "/tmp/x.db"})
    assert config.server.port == 4100 and config.storage.path == "/tmp/x.db"
    with pytest.raises(ConfigError, match="storage.path: environment variable NOPE is not set"):
        parse_config({"storage": {"path": "${NOPE}"}}, env={})


def test_secrets_never_appear_in_reprs():
    config = parse_config(
        {
            "docker": {"credentials": {"username": "u", "password": "${PW}"}},
            "containers": [{"id": "a", "image": "x", "bearer": "tok-123"}],
        },
        env={"PW": "hunter2"},
    )
    text = repr(config) + str(config.model_dump())
    assert "hunter2" not in text and "tok-123" not in text
    assert config.docker.credentials.password.get_secret_value() == "hunter2"


def test_chain_enabled_requires_its_settings():
    with pytest.raises(ConfigError, match="rpc_url"):
        parse_config({"chain": {"enabled": True}})


def test_allowed_ips_must_be_networks():
    with pytest.raises(ConfigError, match="containers.0.allowed_ips"):
        parse_config({"containers": [{"id": "a", "image": "x", "allowed_ips": ["not-an-ip"]}]})


def _check(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "node", "check-config", "--config", str(path)],
                          capture_output=True, text=True, cwd=REPO)


def test_check_config_cli(tmp_path):
    good = _check(tmp_path, "containers: [{id: a, image: x}]\n")
    assert good.returncode == 0 and "ok" in good.stdout
    bad = _check(tmp_path, "server: {port: 99999}\n")
    assert bad.returncode != 0 and "server.port" in bad.stderr
    broken = _check(tmp_path, "server: [\n")
    assert broken.returncode != 0 and "not valid YAML" in broken.stderr
