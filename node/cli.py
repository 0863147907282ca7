"""Command line: `python -m node run --config config.yaml` and `python -m node check-config`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

from node import __version__
from node.config import ConfigError, load_config
from node.logs import get_logger, setup_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="node-daemon",
        description="Node daemon: runs chained Docker container jobs behind an Infernet-compatible API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="start the node and serve until SIGINT/SIGTERM")
    run.add_argument("--config", "-c", default="config.yaml", help="path to config.yaml (default: %(default)s)")
    check = sub.add_parser("check-config", help="validate a config file and exit (non-zero if invalid)")
    check.add_argument("--config", "-c", default="config.yaml", help="path to config.yaml (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: ok ({len(config.containers)} containers, chain "
              f"{'enabled' if config.chain.enabled else 'disabled'})")
        return 0

    setup_logging(config.log.level, config.log.format, config.log.path)
    from node.app import Node
    from node.containers.manager import ContainerSetupError
    from node.server.safejson import pin_recursion_limit

    pin_recursion_limit()  # a dependency sets it to 100,000: deep input must not reach the C stack

    # Latency: everything imported so far lives forever, so keep it out of the collector's scans,
    # and collect the young generation less often (a full scan of the job cache costs tens of ms).
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)

    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        runner = asyncio.run
    try:
        runner(Node(config).serve_forever())
    except ContainerSetupError as exc:
        get_logger("node").error("node.failed", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
