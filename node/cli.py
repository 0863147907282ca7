"""Command line: `python -m node run --config config.yaml`, `check-config`, `convert` (an Infernet
config.json to our config.yaml), and the chain tools `deploy`, `request`, `wallet` and `devnet`
(node/chain/deploy.py, request.py, paywallet.py, devnet.py).

Without `--config`, `run` and `check-config` read `$INFERNET_CONFIG_PATH` (the Infernet node's
variable), else `config.yaml`, else `config.json` in the working directory: the node's image works
in /app, where Infernet operators mount their config.json."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from node import __version__
from node.config import ConfigError, LoadedConfig, read_config
from node.cre.wasm import cli as cre_cli
from node.logs import get_logger, setup_logging
from node.observe import cli as observe_cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="node-daemon",
        description="Node daemon: runs chained Docker container jobs behind an Infernet-compatible API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = ("config.yaml, or an Infernet config.json (default: $INFERNET_CONFIG_PATH, else config.yaml, "
                   "else config.json)")
    run = sub.add_parser("run", help="start the node and serve until SIGINT/SIGTERM")
    run.add_argument("--config", "-c", help=config_help)
    check = sub.add_parser("check-config", help="validate a config file and exit (non-zero if invalid)")
    check.add_argument("--config", "-c", help=config_help)
    check.add_argument("--schema", action="store_true",
                       help="print the JSON Schema of config.yaml instead (every key, type, default, meaning)")
    convert = sub.add_parser("convert", help="print the config.yaml equivalent to an Infernet config.json")
    convert.add_argument("infernet_config", help="path to the Infernet node's config.json")
    reload = sub.add_parser("reload", help="make a running node re-read its config file (as SIGHUP does) "
                                           "and apply what can apply without a restart")
    reload.add_argument("--config", "-c", help="the node's config, for its port (" + config_help.split("(")[1])
    reload.add_argument("--url", help="the node's URL (default: http://127.0.0.1:<server.port of the config>)")
    reload.add_argument("--token", help="server.admin_token, when the node is not on this machine")
    _chain_parsers(sub)
    observe_cli.add_commands(sub)
    cre_cli.add_commands(sub)
    return parser


def _chain_parsers(sub: argparse._SubParsersAction) -> None:
    key_help = "name of an environment variable, or a file, holding the private key (never the key itself)"
    deploy = sub.add_parser("deploy", help="deploy our contracts to an EVM chain (idempotent)")
    deploy.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain")
    deploy.add_argument("--key", required=True, help=key_help + "; the deployer pays the gas")
    deploy.add_argument("--what", choices=["infernet", "mocks", "cre", "all"], default="infernet",
                        help="infernet: Registry, Coordinator, Inbox, Reader, Fee, WalletFactory, ExampleConsumer; "
                             "mocks: MockToken, MockVerifier (test chains only); cre: the CRE market contracts and "
                             "CreForwarder (CRE workflows' WriteReport; prints cre.wasm.forwarders) "
                             "(default: %(default)s)")
    deploy.add_argument("--out", default="deployment.json",
                        help="addresses file, reused on the next run; the config snippet goes next to it "
                             "as .yaml (default: %(default)s)")
    deploy.add_argument("--don", help="DON address for the CRE contracts: the address of the key that signs reports "
                                      "(cre.wasm.don_key for CreForwarder) (default: the deployer)")
    deploy.add_argument("--consumer-signer", help="ExampleConsumer's delegated-subscription signer "
                                                  "(default: the deployer)")
    deploy.add_argument("--receipt-timeout", type=float, default=300.0, help="seconds per receipt")
    deploy.add_argument("--fee-bps", type=int, default=500,
                        help="protocol fee in basis points, charged on both sides of each payment; the fee "
                             "recipient is the deployer (default: %(default)s)")
    deploy.add_argument("--artifacts", help="directory of <Name>.json artifacts (abi, bytecode) to deploy instead "
                                            "of ours, for the names found there")

    request = sub.add_parser("request", help="create a subscription and follow it to its delivery")
    request.add_argument("--deployment", default="deployment.json", help="addresses file from deploy or devnet")
    request.add_argument("--rpc", help="JSON-RPC URL (default: the one in the addresses file)")
    request.add_argument("--key", required=True, help=key_help + "; for --delegated, the consumer's signer")
    request.add_argument("--containers", required=True, help="container chain, comma-separated (e.g. upper,echo)")
    request.add_argument("--input", default="", help="input: bytes for the consumer (as text); JSON data "
                                                     "for --delegated")
    request.add_argument("--redundancy", type=_positive, default=1, help="nodes that must answer each interval")
    request.add_argument("--frequency", type=_positive, default=1, help="number of intervals (1: one-shot)")
    request.add_argument("--period", type=_non_negative, default=0, help="seconds between intervals")
    request.add_argument("--delegated", action="store_true",
                         help="sign the subscription (EIP-712) and send it to a node's POST /api/jobs")
    request.add_argument("--node", default="http://127.0.0.1:4000",
                         help="node URL: --delegated sends there; --pay reads its payment wallet from its /info")
    request.add_argument("--pay", type=_positive, metavar="AMOUNT",
                         help="pay AMOUNT per delivery (the token's smallest unit; wei for ETH) from a Wallet the "
                              "tool makes for you through the WalletFactory and funds; not with --delegated")
    request.add_argument("--token", default="eth", metavar="ADDRESS|eth|mock",
                         help="--pay's token: eth (default), mock (the devnet's MockToken, minted for you) or a "
                              "token address (paid from your balance)")
    request.add_argument("--nonce", type=_positive, help="delegated nonce (default: random); the same nonce "
                                                         "names the same subscription")
    request.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for deliveries "
                                                                      "(plus the subscription's period × frequency)")

    wallet = sub.add_parser("wallet", help="the node's payment Wallet: create, approve collateral, show")
    wallet.add_argument("action", choices=["create", "approve", "show"],
                        help="create: a Wallet through the WalletFactory; approve: let the node's account lock "
                             "collateral (verified subscriptions); show: balance and allowance")
    wallet.add_argument("--config", "-c", default="config.yaml", help="the node's config (default: %(default)s)")
    wallet.add_argument("--owner", help="create: the Wallet's owner (default: the node's account)")
    wallet.add_argument("--token", default="0x" + "00" * 20, help="approve/show: token address (default: ETH)")
    wallet.add_argument("--amount", type=_non_negative, help="approve: how much the node's account may lock")
    wallet.add_argument("--spender", help="approve: who may spend (default: the node's account)")

    devnet = sub.add_parser("devnet", help="anvil + contracts + devnet.yaml + the node, until Ctrl-C")
    devnet.add_argument("--dir", default=".", help="where devnet.yaml and devnet/ go (default: current folder)")
    devnet.add_argument("--port", type=int, default=4000, help="node API port (default: %(default)s)")
    devnet.add_argument("--anvil-port", type=int, default=8545, help="anvil port (default: %(default)s)")
    devnet.add_argument("--base-config", help="config to start from (default: the project's config.yaml)")
    devnet.add_argument("--name-prefix", default="devnet-", help="Docker container name prefix")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _chain_command(args: argparse.Namespace) -> int:
    """deploy / request / devnet: one-shot tools; a failure is one clear line, no traceback."""
    from pathlib import Path

    import requests
    from web3.exceptions import Web3Exception

    from node.chain.deploy import DeployError, deploy_main

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        if args.command == "deploy":
            deploy_main(args.rpc, args.key, args.what, Path(args.out), args.don, args.consumer_signer,
                        args.receipt_timeout, out, args.fee_bps,
                        Path(args.artifacts) if args.artifacts else None)
        elif args.command == "request":
            from node.chain.request import request_main

            request_main(args, out)
        elif args.command == "wallet":
            from node.chain.paywallet import wallet_main

            wallet_main(args, out)
        else:
            from node.chain.devnet import REPO, Devnet

            base = Path(args.base_config) if args.base_config else REPO / "config.yaml"
            return Devnet(Path(args.dir), args.port, args.anvil_port, args.name_prefix, base, out=out).run()
    except DeployError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr, flush=True)
        return 1
    except (requests.RequestException, Web3Exception) as exc:  # the RPC failed mid-way: no traceback
        print(f"{args.command}: RPC error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


# -- config commands (Infernet config.json, schema) ------------------------------------------------


def default_config_path(env: dict[str, str] | os._Environ[str] = os.environ, cwd: Path | None = None) -> str:
    """The config `run` reads without --config: $INFERNET_CONFIG_PATH, config.yaml, config.json."""
    if env.get("INFERNET_CONFIG_PATH"):
        return env["INFERNET_CONFIG_PATH"]
    cwd = cwd or Path.cwd()
    for name in ("config.yaml", "config.json"):
        if (cwd / name).is_file():
            return name
    return "config.yaml"


def _config_command(args: argparse.Namespace) -> int:
    """check-config --schema and convert: print, never start anything."""
    import json

    if args.command == "check-config":
        from node.config import NodeConfig

        print(json.dumps(NodeConfig.model_json_schema(), indent=2))
        return 0
    from node.config_convert import convert_infernet

    try:
        print(convert_infernet(Path(args.infernet_config)), end="")
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


def _reload_command(args: argparse.Namespace) -> int:
    """POST /api/node/reload on the running node; prints its answer. Exit 0 applied, 1 not."""
    import json
    import urllib.error
    import urllib.request

    url = args.url
    if url is None:
        try:
            port = read_config(args.config or default_config_path()).config.server.port
        except ConfigError:  # the file may be the invalid one being reloaded: the port is still there
            port = _port_of(args.config or default_config_path())
        url = f"http://127.0.0.1:{port}"
    request = urllib.request.Request(f"{url.rstrip('/')}/api/node/reload", data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {args.token}"} if args.token else {})
    try:
        with urllib.request.urlopen(request, timeout=600) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        print(f"reload: cannot reach the node at {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    if body.get("ok"):
        print(json.dumps(body, indent=2))
        return 0
    print(f"reload: {body.get('error', body)}", file=sys.stderr)
    return 1


def _port_of(path: str) -> int:
    """server.port read loosely from a config that does not validate (default 4000)."""
    import json

    import yaml

    try:
        text = Path(path).read_text()
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        return int(data["server"]["port"])
    except Exception:  # noqa: BLE001 - any problem: the default port
        return 4000


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("deploy", "request", "devnet", "wallet"):
        return _chain_command(args)
    if args.command in observe_cli.COMMANDS:
        return observe_cli.run(args)
    if args.command in cre_cli.COMMANDS:
        return cre_cli.run(args)
    if args.command == "convert" or (args.command == "check-config" and args.schema):
        return _config_command(args)
    if args.command == "reload":
        return _reload_command(args)
    args.config = args.config or default_config_path()
    try:
        loaded = read_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    config = loaded.config
    if args.command == "check-config":
        form = " (Infernet config.json, translated)" if loaded.form == "infernet" else ""
        print(f"{args.config}: ok{form} ({len(config.containers)} containers, chain "
              f"{'enabled' if config.chain.enabled else 'disabled'})")
        for note in loaded.notes:
            print(f"  note: {note}")
        for note in loaded.deprecated:
            print(f"  deprecated: {note}")
        return 0

    setup_logging(config.log.level, config.log.format, config.log.path, config.log.max_file_size,
                  config.log.backup_count)
    _log_loaded(loaded)
    from node.app import Node
    from node.containers.manager import ContainerSetupError
    from node.errors import StartupError
    from node.server.safejson import pin_recursion_limit

    pin_recursion_limit()  # a dependency sets it to 100,000: deep input must not reach the C stack

    # Latency: everything imported so far lives forever, so keep it out of the collector's scans,
    # and collect the young generation less often (a full scan of the job cache costs tens of ms).
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)

    # uvloop.run and asyncio.run differ only in keyword arguments this call does not pass.
    runner: Callable[[Coroutine[Any, Any, int]], int]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        runner = asyncio.run
    try:
        return runner(Node(config, loaded=loaded).serve_forever())
    except (ContainerSetupError, StartupError) as exc:
        get_logger("node").error("node.failed", error=str(exc))
        return 1


def _log_loaded(loaded: LoadedConfig) -> None:
    log = get_logger("node.config")
    log.info("config.loaded", path=str(loaded.path), form=loaded.form, sha256=loaded.sha256[:16])
    for note in loaded.notes:  # one line per Infernet key that means nothing here
        log.info("config.infernet_key", note=note)
    for note in loaded.deprecated:  # one line per key read under its old name
        log.warning("config.deprecated", note=note)


if __name__ == "__main__":
    sys.exit(main())
