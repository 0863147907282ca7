"""`node-daemon status` and `node-daemon jobs`: one screen of a running node, read from its
operator endpoints (GET /api/node/status, /api/node/jobs), as tables.

The node is found through the same config file it runs with (server.host/port, and
server.admin_token when the node is not on this machine), or `--url` / `--token`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from typing import Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from node.config import ConfigError, substitute_env
from node.server.config import ServerConfig

COMMANDS = ("status", "jobs")


def add_commands(sub: argparse._SubParsersAction) -> None:
    for name, text in (("status", "show a running node's containers, jobs, chain and problems"),
                       ("jobs", "list a running node's recent jobs")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", "-c", default="config.yaml", help="the node's config (default: %(default)s)")
        cmd.add_argument("--url", help="the node's base URL (default: from the config)")
        cmd.add_argument("--token", default=os.environ.get("NODE_ADMIN_TOKEN"),
                         help="operator token (default: $NODE_ADMIN_TOKEN, then server.admin_token)")
        cmd.add_argument("--json", action="store_true", help="print the raw JSON")
        if name == "jobs":
            cmd.add_argument("--failed", action="store_true", help="only failed jobs")
            cmd.add_argument("--limit", "-n", type=int, default=20, help="how many (default: %(default)s)")


class CliError(Exception):
    pass


def _target(args: argparse.Namespace) -> tuple[str, str | None]:
    token = args.token
    if args.url:
        return args.url.rstrip("/"), token
    server = _server_section(args.config)
    host = server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    if token is None and server.admin_token is not None:
        token = server.admin_token.get_secret_value()
    return f"http://{host}:{server.port}", token


def _server_section(path: str) -> ServerConfig:
    """Only `server:` of the node's config: the operator's shell need not hold the node's other
    secrets (`${PRIVATE_KEY}` elsewhere in the file) to ask it how it is."""
    hint = "(give --url to reach a node without its config)"
    try:
        with open(path) as handle:
            raw = yaml.safe_load(handle) or {}
        section = substitute_env((raw.get("server") if isinstance(raw, dict) else None) or {}, dict(os.environ),
                                 "server")
        return ServerConfig.model_validate(section)
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror} {hint}") from None
    except (yaml.YAMLError, ConfigError, ValidationError) as exc:
        raise CliError(f"{path}: {exc} {hint}") from None


def _get(base: str, path: str, token: str | None) -> Any:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise CliError(f"{base}{path}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach the node at {base}: {reason} (is it running?)") from None


def run(args: argparse.Namespace) -> int:
    console = Console(width=shutil.get_terminal_size((140, 40)).columns, highlight=False)
    try:
        base, token = _target(args)
        if args.command == "status":
            body = _get(base, "/api/node/status", token)
            console.print_json(data=body) if args.json else render_status(console, body, base)
        else:
            if args.limit < 1:
                raise CliError("--limit must be at least 1")
            query = f"/api/node/jobs?limit={args.limit}" + ("&failed=true" if args.failed else "")
            body = _get(base, query, token)
            console.print_json(data=body) if args.json else console.print(jobs_table(body["jobs"], args.failed))
    except CliError as exc:
        Console(stderr=True, highlight=False).print(f"[red]error:[/] {exc}", markup=True, soft_wrap=True)
        return 1
    return 0


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    seconds = max(now - ts, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


STATE_STYLE = {"running": "green", "external": "cyan", "starting": "yellow", "restarting": "yellow"}


def render_status(console: Console, body: dict[str, Any], base: str) -> None:
    now = body["node"]["time"]
    node = body["node"]
    console.print(Text.assemble(("node-daemon ", "bold"), node["version"], f"  {base}  up {node['uptime_s']:.0f}s  ",
                                ("ready" if node["ready"] else "starting", "green" if node["ready"] else "yellow")))
    problems = body["problems"]
    if problems:
        table = Table(title="Problems", title_style="bold red", expand=False)
        for col in ("problem", "subject", "detail", "since"):
            table.add_column(col, overflow="fold")
        for p in problems:
            table.add_row(Text(p["problem"], "red"), p["subject"], p["detail"], _ago(p["since"], now))
        console.print(table)

    containers = Table(title="Containers", title_justify="left")
    for col in ("id", "state", "restarts", "address", "image"):
        containers.add_column(col, overflow="fold")
    for c in body["containers"]:
        containers.add_row(c["id"], Text(c["status"], STATE_STYLE.get(c["status"], "red")), str(c["restarts"]),
                           c["url"], c["image"] or "-")
    console.print(containers)

    jobs = body["jobs"]
    table = Table(title="Jobs", title_justify="left")
    for col in ("window", "finished", "failed", "per minute"):
        table.add_column(col, justify="right")
    for window, counts in jobs["recent"].items():
        table.add_row(f"last {window}", str(counts["finished"]),
                      Text(str(counts["failed"]), "red" if counts["failed"] else ""), f"{counts['per_minute']:g}")
    console.print(table)
    running = ", ".join(f"{k}: {v}" for k, v in jobs["running_by_source"].items()) or "none"
    console.print(f"running now: {jobs['running']} ({running})")

    chain = body.get("chain")
    if chain is not None:
        table = Table(title="Chain", title_justify="left", show_header=False)
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        rpc = Text("up", "green") if chain["rpc_up"] else Text(f"DOWN: {chain['rpc_error']}", "red")
        last = chain["last_delivery"]
        deliveries = ", ".join(f"{k} {v}" for k, v in sorted(chain["deliveries"].items())) or "none"
        for key, val in (("rpc", rpc), ("head", str(chain["head"])), ("cursor", str(chain["cursor"])),
                         ("lag", str(chain["lag"])), ("wallet", chain["address"]),
                         ("balance", f"{chain['balance_wei']} wei (min {chain['min_balance_wei']})"),
                         ("subscriptions", str(chain["tracked_subscriptions"])), ("deliveries", deliveries),
                         ("last delivery", f"subscription {last['subscription_id']} interval {last['interval']}, "
                                           f"{_ago(last['updated_at'], now)}" if last else "none")):
            table.add_row(key, val)
        if chain.get("heads"):
            table.add_row("heads", chain["heads"])
        for r in chain.get("rpcs") or []:
            colour = "green" if r["state"] == "up" else "red"
            table.add_row(f"rpc {r['rpc']}", Text(
                f"{r['state']}{' (in use)' if r['in_use'] else ''}, {r['role']}, head {r['head']}, "
                f"lag {r['lag']}, {r['latency_ms']} ms, errors {r['errors']}, 429 {r['rate_limited']}"
                + (f", back in {r['back_in_s']} s: {r['last_error']}" if r["state"] in ("down", "rate_limited")
                   else ""), colour))
        if chain.get("tx_pending"):
            table.add_row("tx pending", f"{chain['tx_pending']} (oldest {chain['tx_pending_blocks']} blocks)")
        console.print(table)

    for chain in body.get("registry_chains") or []:
        table = Table(title=f"Registry chain {chain['chain_id']}", title_justify="left", show_header=False)
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        for r in chain["rpcs"]:
            table.add_row(f"rpc {r['rpc']}", Text(
                f"{r['state']}{' (in use)' if r['in_use'] else ''}, head {r['head']}, lag {r['lag']}, "
                f"{r['latency_ms']} ms, errors {r['errors']}, 429 {r['rate_limited']}",
                "green" if r["state"] == "up" else "red"))
        console.print(table)

    on = body["subsystems"]
    console.print(Text.assemble(("Subsystems: ", "bold"), *[
        (f"{name} {'on' if enabled else 'off'}  ", "green" if enabled else "dim") for name, enabled in on.items()]))
    failed = jobs["failed_recently"]
    if failed:
        console.print(jobs_table(failed[:5], True, title="Recent failures"))


def jobs_table(jobs: list[dict[str, Any]], failed: bool, title: str | None = None) -> Table:
    now = time.time()
    table = Table(title=title or ("Failed jobs" if failed else "Recent jobs"), title_justify="left")
    for col in ("id", "source", "containers", "status", "ms", "when", "error"):
        table.add_column(col, overflow="fold")
    for job in jobs:
        style = {"success": "green", "failed": "red"}.get(job["status"], "yellow")
        table.add_row(job["id"], job["source"], ",".join(job["containers"]), Text(job["status"], style),
                      "-" if job["ms"] is None else f"{job['ms']:g}", _ago(job["updated_at"], now),
                      job["error"] or "")
    if not jobs:
        table.add_row("-", "", "", "none", "", "", "")
    return table
