"""`node-daemon cre setup|build|simulate`: the CRE developer's loop without a DON.

- `cre setup` installs the npm toolchain (the SDK, its Javy plugin, bun) once, into the
  toolchain folder; it is idempotent.
- `cre build workflow.ts` bundles and compiles a workflow to QuickJS bytecode, offline, cached.
- `cre simulate workflow.ts` runs it once, as Chainlink's `cre workflow simulate` does: the
  subscribe phase, then one trigger (cron, or HTTP with `--input`), printing the workflow's logs,
  its capability calls and its result. Capabilities are the node's own (one-node consensus,
  http-actions through the egress policy, EVM reads on `--chain` RPCs).
- `cre secrets set WORKFLOW ID` stores a workflow secret in the node's sealed store (the value
  from stdin, never the command line); `cre secrets list` shows what is stored (names only),
  `cre secrets delete` removes one. They open the node's database and master key named by the
  config, as the node does (node/cre/wasm/secrets.py), and may run while the node runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

COMMANDS = ("cre",)


def add_commands(sub: argparse._SubParsersAction) -> None:
    cre = sub.add_parser("cre", help="CRE workflows (@chainlink/cre-sdk): setup, build, simulate, secrets")
    cre_sub = cre.add_subparsers(dest="cre_command", required=True, metavar="ACTION")
    toolchain_help = "toolchain folder (default: $NODE_CRE_TOOLCHAIN or build/cre-toolchain in the project)"

    setup = cre_sub.add_parser("setup", help="install the npm toolchain (SDK, Javy plugin, bun); idempotent")
    setup.add_argument("--toolchain", help=toolchain_help)

    build = cre_sub.add_parser("build", help="compile a TypeScript workflow to bytecode (offline, cached)")
    build.add_argument("workflow", help="the workflow's .ts file (or a bundled .js)")
    build.add_argument("--toolchain", help=toolchain_help)
    build.add_argument("--type-check", action="store_true", help="run the TypeScript type check too (slower)")

    sim = cre_sub.add_parser("simulate", help="run a workflow once (subscribe, then one trigger) and print "
                                              "its logs and result")
    sim.add_argument("workflow", help="the workflow's .ts, bundled .js or compiled .wasm file")
    sim.add_argument("--toolchain", help=toolchain_help)
    sim.add_argument("--config", default="", help="the workflow config: JSON text, or @file")
    sim.add_argument("--trigger", default="cron", help="cron, http, or a handler index (default: %(default)s)")
    sim.add_argument("--input", default="{}", help="HTTP trigger input (JSON text, or @file)")
    sim.add_argument("--secret", action="append", default=[], metavar="ID=VALUE",
                     help="a secret in namespace main (repeatable); VALUE env:NAME reads the environment")
    sim.add_argument("--chain", action="append", default=[], metavar="NAME_OR_SELECTOR=RPC_URL",
                     help="an EVM chain for the evm capability (repeatable), e.g. anvil-devnet=http://127.0.0.1:8545")
    sim.add_argument("--allow-network", action="append", default=[], metavar="CIDR",
                     help="let http-actions reach this network (loopback/private are refused otherwise)")
    sim.add_argument("--timeout", type=float, default=60.0, help="seconds per execution (default: %(default)s)")
    sim.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    secrets = cre_sub.add_parser("secrets", help="workflow secrets in the node's sealed store (set, list, delete)")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    config_help = "the node's config (default: $INFERNET_CONFIG_PATH, config.yaml or config.json)"
    put = secrets_sub.add_parser("set", help="store a secret sealed with the node's master key; the value is read "
                                             "from stdin (one trailing newline dropped)")
    put.add_argument("workflow", help="the workflow's name in cre.workflows")
    put.add_argument("id", help="the secret id the workflow asks for (runtime.getSecret({id}))")
    put.add_argument("--namespace", default="main", help="(default: %(default)s)")
    put.add_argument("--config", help=config_help)
    listing = secrets_sub.add_parser("list", help="the stored secrets' names (never their values)")
    listing.add_argument("workflow", nargs="?", help="only this workflow's")
    listing.add_argument("--config", help=config_help)
    delete = secrets_sub.add_parser("delete", help="remove a stored secret")
    delete.add_argument("workflow")
    delete.add_argument("id")
    delete.add_argument("--namespace", default="main", help="(default: %(default)s)")
    delete.add_argument("--config", help=config_help)


def _text_arg(value: str) -> bytes:
    if value.startswith("@"):
        return Path(value[1:]).read_bytes()
    return value.encode()


def run(args: argparse.Namespace) -> int:
    if args.cre_command == "secrets":
        return _secrets(args)
    from node.cre.wasm.toolchain import BuildError, Toolchain

    toolchain = Toolchain(Path(args.toolchain) if args.toolchain else None)
    try:
        if args.cre_command == "setup":
            installed = toolchain.install(log=lambda line: print(line, flush=True))
            print(f"cre toolchain {'installed' if installed else 'already installed'} in {toolchain.root}")
            return 0
        if args.cre_command == "build":
            from node.cre.wasm.host import WasmEngine

            engine = WasmEngine(toolchain.cache / "modules")
            built = toolchain.build(engine, Path(args.workflow), type_check=args.type_check)
            engine.close()
            print(f"{args.workflow}: {len(built.bytecode)} bytes of bytecode, sha256 {built.digest} "
                  f"({'cached' if built.cached else 'built'} in {built.seconds:.2f}s)")
            return 0
        return asyncio.run(_simulate(args, toolchain))
    except BuildError as exc:
        print(f"cre {args.cre_command}: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"cre {args.cre_command}: {exc}", file=sys.stderr)
        return 2


def _secrets(args: argparse.Namespace) -> int:
    """One line on failure (exit 2: bad input or config, 1: the store could not be used)."""
    from node.cli import default_config_path
    from node.config import ConfigError, read_config
    from node.cre.wasm.secrets import SecretInputError, check_name

    try:
        config = read_config(args.config or default_config_path()).config
    except ConfigError as exc:
        print(f"cre secrets: {exc}", file=sys.stderr)
        return 2
    value = ""
    try:
        if args.secrets_command != "list" or args.workflow:
            check_name("workflow", args.workflow)
        if args.secrets_command in ("set", "delete"):
            check_name("namespace", args.namespace)
            check_name("id", args.id)
        if args.secrets_command == "set":
            if sys.stdin.isatty():
                import getpass

                value = getpass.getpass(f"value of {args.namespace}/{args.id} for {args.workflow}: ")
            else:
                value = sys.stdin.read()
                value = value[:-1] if value.endswith("\n") else value
    except SecretInputError as exc:
        print(f"cre secrets {args.secrets_command}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_secrets_in_store(args, config, value))
    except SecretInputError as exc:
        print(f"cre secrets {args.secrets_command}: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # the database or the master key file
        print(f"cre secrets {args.secrets_command}: {exc}", file=sys.stderr)
        return 1


async def _secrets_in_store(args: argparse.Namespace, config, value: str) -> int:
    from node.cre.wasm.secrets import SecretStore
    from node.secrets import SecretBox
    from node.storage import Database

    configured = {w.name for w in config.cre.workflows}
    if args.workflow and args.workflow not in configured:
        print(f"cre secrets: note: no workflow named {args.workflow!r} in cre.workflows (yet)", file=sys.stderr)
    db = Database(config.storage.path, config.storage.synchronous)
    await db.open()
    try:
        store = SecretStore(db, lambda: SecretBox.from_file(Path(config.master_key_path)))
        await store.start()
        if args.secrets_command == "set":
            replaced = await store.set(args.workflow, args.namespace, args.id, value)
            print(f"{args.workflow}: secret {args.namespace}/{args.id} {'replaced' if replaced else 'stored'} "
                  f"(sealed with {config.master_key_path}); the next execution reads it")
            return 0
        if args.secrets_command == "delete":
            if not await store.delete(args.workflow, args.namespace, args.id):
                print(f"cre secrets delete: {args.workflow} has no secret {args.namespace}/{args.id}", file=sys.stderr)
                return 1
            print(f"{args.workflow}: secret {args.namespace}/{args.id} deleted")
            return 0
        for row in await store.names(args.workflow):
            updated_at = row["updated_at"]
            assert isinstance(updated_at, float), "updated_at is a REAL NOT NULL column"
            when = datetime.fromtimestamp(updated_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{row['workflow']}\t{row['namespace']}/{row['id']}\t{when}")
        return 0
    finally:
        await db.close()


async def _simulate(args: argparse.Namespace, toolchain) -> int:
    import os

    from node.cre.config import CreWasmConfig
    from node.cre.wasm.capabilities import Capabilities
    from node.cre.wasm.host import Limits, new_execution_id
    from node.cre.wasm.runtime import LoadError, WasmRuntime, cron_payload, http_payload, result_json
    from node.server.egress import EgressPolicy

    secrets = {}
    for item in args.secret:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--secret {item!r}: expected ID=VALUE")
        if value.startswith("env:"):
            value = os.environ.get(value[4:], "")
        secrets[("main", key)] = value
    chains = {}
    for item in args.chain:
        key, sep, url = item.partition("=")
        if not sep:
            raise ValueError(f"--chain {item!r}: expected NAME_OR_SELECTOR=RPC_URL")
        chains[key] = url
    selectors = CreWasmConfig(chains=chains).selectors()  # validated as in config.yaml
    policy = EgressPolicy(args.allow_network, max_response_bytes=1 << 20)
    session = policy.session()
    capabilities = Capabilities(asyncio.get_running_loop(), egress=policy, session=session, chains=selectors,
                                secrets=secrets)
    runtime = WasmRuntime(toolchain, workers=1, limits=Limits(timeout=args.timeout))
    say = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
    try:
        config = _text_arg(args.config) if args.config else b""
        try:
            loaded = await runtime.load("simulate", Path(args.workflow), config, capabilities)
        except LoadError as exc:
            print(f"cre simulate: {exc}", file=sys.stderr)
            return 1
        say(f"workflow {args.workflow}: {len(loaded.subscriptions)} trigger(s): "
            + ", ".join(f"[{s.index}] {s.kind}" + (f" {s.cron.schedule!r}" if s.cron else "")
                        for s in loaded.subscriptions))
        if args.trigger.isdigit():
            sub = next((s for s in loaded.subscriptions if s.index == int(args.trigger)), None)
        else:
            sub = loaded.first(args.trigger)
        if sub is None:
            print(f"cre simulate: the workflow has no {args.trigger} trigger", file=sys.stderr)
            return 2
        if sub.kind == "http":
            payload = http_payload(_text_arg(args.input))
        elif sub.kind == "cron":
            payload = cron_payload(datetime.now(UTC))
        else:
            print(f"cre simulate: trigger {sub.index} is {sub.capability}, which simulate cannot fire", file=sys.stderr)
            return 2
        say(f"firing [{sub.index}] {sub.kind} ...")
        outcome = await runtime.run(loaded, sub.index, payload, capabilities, new_execution_id("simulate", "manual"))
    finally:
        runtime.close()
        await capabilities.close()
        await session.close()
    if args.json:
        print(json.dumps({"ok": outcome.ok, "result": result_json(outcome), "error": outcome.failure,
                          "logs": outcome.logs, "calls": [c.as_dict() for c in outcome.calls],
                          "durationMs": outcome.duration_ms}))
    else:
        for line in outcome.logs:
            print(f"[log] {line}")
        for call in outcome.calls:
            print(f"[call] {call.id} {call.method} ({'node' if call.mode == 2 else 'don'} mode) "
                  f"{call.ms} ms" + (f" error: {call.error}" if call.error else ""))
        if outcome.ok:
            print(f"result: {json.dumps(result_json(outcome))} ({outcome.duration_ms:.0f} ms)")
        else:
            print(f"error: {outcome.failure} ({outcome.duration_ms:.0f} ms)")
    return 0 if outcome.ok else 1
