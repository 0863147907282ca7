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


# -- each subsystem's section: env fallbacks read once, at parse time; typos name the full path -----

A = "0x" + "ab" * 20
RUNTIME = {"rpc_url": "http://127.0.0.1:8545", "don_key": "0x" + "01" * 32, "api_key": "k", "forwarder_address": A,
           "sub0_address": A, "vault_address": A, "conditional_tokens_address": A, "usdc_address": A}


def test_the_seeds_environment_variables_fill_unset_keys_when_the_file_is_parsed(monkeypatch):
    monkeypatch.setenv("KEEPR_API_KEY", "from-the-process")  # not the env this parse is given
    env = {"KEEPR_API_KEY": "app-key", "CRE_RUNTIME_ENFORCE_HMAC": "yes", "CRE_RUNTIME_HMAC_SECRET": "hs",
           "CRE_TRIGGER_SIGNER_PRIVATE_KEY": "0x" + "02" * 32, "CRE_GATEWAY_URL": "http://gw",
           "CRE_BACKEND_API_KEY": "bk", "CRE_RUNTIME_ALLOWED_TRIGGER_WORKFLOW_IDS": "0x" + "AB" * 32 + ", ",
           "NULLRUN_HMAC_REQUIRED": "1", "NULLRUN_HMAC_MAX_AGE_SECS": "42"}
    config = parse_config({}, env=env)
    cre, gateway = config.cre, config.gateway
    assert cre.api_key.get_secret_value() == "app-key"
    assert cre.enforce_hmac is True and cre.allow_unsigned_when_hmac_configured is False
    assert cre.hmac_secret.get_secret_value() == "hs" and cre.backend_api_key.get_secret_value() == "bk"
    assert cre.trigger_private_key.get_secret_value() == "0x" + "02" * 32 and cre.gateway_url == "http://gw"
    assert cre.allowed_trigger_workflow_ids == ["ab" * 32]
    assert gateway.hmac_required is True and gateway.hmac_max_age == 42.0
    # a value in the file wins over the environment
    config = parse_config({"cre": {"api_key": "file-key", "enforce_hmac": False},
                           "gateway": {"hmac_required": False, "hmac_max_age": 7}}, env=env)
    assert config.cre.api_key.get_secret_value() == "file-key" and config.cre.enforce_hmac is False
    assert config.gateway.hmac_required is False and config.gateway.hmac_max_age == 7.0


def test_without_the_environment_variables_the_defaults_hold():
    config = parse_config({}, env={"NULLRUN_HMAC_MAX_AGE_SECS": "not-a-number"})
    assert config.cre.api_key is None and config.cre.gateway_url is None and config.cre.enforce_hmac is False
    assert config.cre.allowed_trigger_workflow_ids is None
    assert config.gateway.hmac_required is False and config.gateway.hmac_max_age == 300.0


def test_a_section_validated_on_its_own_reads_the_env_from_the_validation_context():
    from node.cre.config import CreConfig
    from node.gateway.config import GatewayConfig

    assert CreConfig.model_validate({}, context={"env": {"KEEPR_API_KEY": "x"}}).api_key.get_secret_value() == "x"
    assert CreConfig.model_validate({}, context={"env": {}}).api_key is None
    assert GatewayConfig.model_validate({}, context={"env": {"NULLRUN_HMAC_REQUIRED": "on"}}).hmac_required


def test_a_bad_workflow_id_in_the_environment_is_refused_at_load_naming_the_key():
    with pytest.raises(ConfigError, match="cre.allowed_trigger_workflow_ids: 'nope' is not a 64-hex workflow id"):
        parse_config({}, env={"CRE_RUNTIME_ALLOWED_TRIGGER_WORKFLOW_IDS": "nope"})


def test_a_typo_in_a_nested_subsystem_key_names_the_full_path():
    with pytest.raises(ConfigError) as err:
        parse_config({"cre": {"runtime": {**RUNTIME, "api_kye": "x"}}}, env={})
    assert "cre.runtime.api_kye: Extra inputs are not permitted" in str(err.value)
    provider = {"isuer": "https://issuer", "audiences": ["a"], "jwks_url": "https://issuer/jwks"}
    with pytest.raises(ConfigError) as err:
        parse_config({"gateway": {"oauth": {"providers": {"google": provider}}}}, env={})
    assert "gateway.oauth.providers.google.isuer: Extra inputs are not permitted" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"docker": {"swarm": {"conect_via": "mesh"}}}, env={})
    assert "docker.swarm.conect_via" in str(err.value)


def test_every_address_field_uses_the_one_address_rule():
    bad = "0x1234"
    cases = [
        ({"chain": {"coordinator_address": bad}}, "chain.coordinator_address"),
        ({"registry": {"oracles": [A, bad]}}, "registry.oracles.1"),
        ({"containers": [{"id": "a", "image": "x", "allowed_addresses": [bad]}]}, "containers.0.allowed_addresses.0"),
        ({"cre": {"runtime": {**RUNTIME, "vault_address": bad}}}, "cre.runtime.vault_address"),
    ]
    for data, where in cases:
        with pytest.raises(ConfigError) as err:
            parse_config(data, env={})
        assert f"{where}: '0x1234' is not a 0x-prefixed 20-byte address" in str(err.value)
    config = parse_config({"registry": {"oracles": [A.upper().replace("0X", "0x")]}}, env={})
    assert config.registry.oracles == [A]  # allow-lists are compared lower-cased
