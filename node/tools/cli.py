"""`deploy`, `request`, `wallet` and `devnet`: the parsers of the chain tools and the one place
that runs them. The tools' modules are imported only when one runs (web3 is heavy)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.config import ConfigError

COMMANDS = ("deploy", "request", "wallet", "devnet")


def add_commands(sub: argparse._SubParsersAction) -> None:
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


def run(args: argparse.Namespace) -> int:
    """One of the tools; a failure is one clear line, no traceback."""
    import requests
    from web3.exceptions import Web3Exception

    from node.tools.deploy import DeployError, deploy_main

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        if args.command == "deploy":
            deploy_main(args.rpc, args.key, args.what, Path(args.out), args.don, args.consumer_signer,
                        args.receipt_timeout, out, args.fee_bps,
                        Path(args.artifacts) if args.artifacts else None)
        elif args.command == "request":
            from node.tools.request import request_main

            request_main(args, out)
        elif args.command == "wallet":
            from node.tools.paywallet import wallet_main

            wallet_main(args, out)
        else:
            from node.tools.devnet import REPO, Devnet

            base = Path(args.base_config) if args.base_config else REPO / "config.yaml"
            return Devnet(Path(args.dir), args.port, args.anvil_port, args.name_prefix, base, out=out).run()
    except ConfigError as exc:  # wallet's --config
        print(str(exc), file=sys.stderr, flush=True)
        return 2
    except DeployError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr, flush=True)
        return 1
    except (requests.RequestException, Web3Exception) as exc:  # the RPC failed mid-way: no traceback
        print(f"{args.command}: RPC error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
