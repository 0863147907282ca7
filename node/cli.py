"""Command line: `python -m node run --config config.yaml`, `check-config`, `convert` (an Infernet
config.json to our config.yaml), `reload`, and the command groups of `COMMAND_GROUPS`: the chain
tools `deploy`, `request`, `wallet` and `devnet` (node/tools/), `status` and `jobs`
(node/observe/cli.py), `cre` (node/cre/wasm/cli.py).

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
from node.tools import cli as tools_cli

# Every command beyond run/check-config/convert/reload comes from a package's cli module, each
# the same shape: COMMANDS (the names it answers), add_commands(sub) (its parsers), run(args).
# Listed here, not read from app.py's SUBSYSTEMS: the subsystem classes import their whole
# subsystem (about 1.2 s), which every `status` or `jobs` would pay; the tools are no subsystem.
COMMAND_GROUPS = (tools_cli, observe_cli, cre_cli)


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
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


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
    for group in COMMAND_GROUPS:
        if args.command in group.COMMANDS:
            return group.run(args)
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
