"""`node-daemon wallet` reads the node's own config.yaml, where chain.rpc_url may be one URL or a
list of them (failover): the tool, one short run, talks to the first."""

from __future__ import annotations

import argparse

import pytest
import yaml

from node.cli import main as cli_main
from node.tools.deploy import DeployError
from node.tools.paywallet import wallet_main
from tests.helpers import free_port


def test_the_wallet_tool_given_a_list_of_rpc_urls_connects_to_the_first(tmp_path):
    first, second = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"chain": {
        "enabled": True, "rpc_url": [first, second],
        "registry_address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "wallet": {"private_key": "0x" + "01" * 32}}}))
    args = argparse.Namespace(config=str(config), action="show", owner=None, token="0x" + "00" * 20, amount=None,
                              spender=None)
    with pytest.raises(DeployError) as caught:
        wallet_main(args, out=lambda line: None)
    assert str(caught.value).startswith(f"cannot reach the RPC at {first}:")


def test_wallet_with_a_config_that_does_not_validate_says_which_field_and_exits_2(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("chain:\n  enabled: maybe\n")
    assert cli_main(["wallet", "show", "--config", str(config)]) == 2  # it raised ConfigError, a traceback
    err = capsys.readouterr().err
    assert "chain.enabled" in err and "Traceback" not in err
