"""Ritual Infernet node 1.4.0's `config.json`, read as it is and translated into our config.

Operators of the Infernet node switch by changing one image name, so their file must work
unmodified: every key of Infernet 1.4.0's config keeps its meaning and its default (which are
not always ours: Infernet rate-limits 60 requests per 60 s, waits 5 s for containers, binds
0.0.0.0, writes `infernet_node.log`, and sends the consumer Python's `str()` of the output).
The models below are Infernet's schema, not ours: lax like Infernet's pydantic (a string `port`
is a number), and open, because Infernet ignores keys it does not know. We accept those keys too,
but never silently: each key that means nothing here becomes one note saying what the node does
instead, which the caller logs (the node) or prints (`convert`, `check-config`).

What Infernet decides at start-up, we decide here, the same way: host ports (`assign_ports`: a
port already taken goes to the highest free one counting down from 3999) and `command` (one
string, split as docker-py splits it, with shlex).

Our own sections (CRE, registry, gateway, observe, storage, ...) have no place in Infernet's
schema; they come from a `node:` mapping inside the JSON or from `node.yaml` beside it, merged
over the translation key by key (lists replace).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Beside an Infernet config.json: our extra sections, in config.yaml form.
SIDECAR_NAME = "node.yaml"
INFERNET_VERSION = "1.4.0"
# Keys only Infernet's config has: a YAML/JSON mapping with any of them is read as Infernet's.
_INFERNET_ONLY_TOP = {"redis", "forward_stats", "log_path"}


class InfernetFormError(Exception):
    """An Infernet config that cannot be used; the message names the file and the field."""


class _Open(BaseModel):
    """Infernet's models ignore unknown keys; ours keep them to say so (`unknown_keys`)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class InfernetRateLimit(_Open):
    num_requests: int = Field(60, ge=0)
    period: int = Field(60, gt=0)


class InfernetServer(_Open):
    port: int = Field(4000, ge=0, le=65535)
    rate_limit: InfernetRateLimit = InfernetRateLimit()


class InfernetWallet(_Open):
    max_gas_limit: int = Field(5_000_000, gt=0)
    private_key: str | None = None
    payment_address: str | None = None
    allowed_sim_errors: list[str] = []


class InfernetSnapshotSync(_Open):
    sleep: float = Field(1.0, ge=0)
    batch_size: int = Field(500, ge=1)
    starting_sub_id: int = Field(0, ge=0)
    sync_period: float = Field(0.5, gt=0)


class InfernetChain(_Open):
    enabled: bool = False
    rpc_url: str | None = None
    trail_head_blocks: int = Field(1, ge=0)
    registry_address: str | None = None
    wallet: InfernetWallet | None = None
    snapshot_sync: InfernetSnapshotSync = InfernetSnapshotSync()


class InfernetDocker(_Open):
    username: str
    password: str


class InfernetContainer(_Open):
    id: str
    image: str = ""
    url: str = ""
    bearer: str = ""
    port: int = Field(3000, ge=1, le=65535)
    external: bool = True
    gpu: bool = False
    accepted_payments: dict[str, int] = {}
    allowed_ips: list[str] = []
    allowed_addresses: list[str] = []
    allowed_delegate_addresses: list[str] = []
    description: str = ""
    command: str = ""
    env: dict[str, Any] = {}
    generates_proofs: bool = False
    volumes: list[str] = []


class InfernetRedis(_Open):
    host: str = "redis"
    port: int = 6379


class InfernetLog(_Open):
    path: str = "infernet_node.log"
    max_file_size: int = Field(2**30, gt=0)
    backup_count: int = Field(2, ge=0)


class InfernetConfig(_Open):
    containers: list[InfernetContainer] = []
    chain: InfernetChain = InfernetChain()
    docker: InfernetDocker | None = None
    forward_stats: bool = True
    log: InfernetLog = InfernetLog()
    manage_containers: bool = True
    redis: InfernetRedis = InfernetRedis()
    server: InfernetServer = InfernetServer()
    startup_wait: float = Field(5.0, ge=0)
    log_path: str | None = None  # legacy (still in the starter configs); Infernet 1.4 ignores it
    node: dict[str, Any] | None = None  # ours: extra sections in config.yaml form


@dataclass
class Translation:
    """Our config.yaml tree for an Infernet config, and one note per key that means nothing here."""

    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def looks_like_infernet(data: Any) -> bool:
    """Is this parsed mapping Infernet's form rather than ours? True when it has a key only
    Infernet's schema has (both forms share most of the rest, and read it the same way)."""
    if not isinstance(data, dict):
        return False
    if _INFERNET_ONLY_TOP & data.keys():
        return True
    chain = data.get("chain")
    if isinstance(chain, dict) and "snapshot_sync" in chain:
        return True
    docker = data.get("docker")
    return isinstance(docker, dict) and "username" in docker


def assign_ports(containers: list[InfernetContainer]) -> dict[str, int]:
    """Host ports as Infernet assigns them: in config order, a requested port keeps it unless an
    earlier container has it; then the highest port not yet taken, counting down from 3999."""
    assigned: dict[str, int] = {}
    for container in containers:
        taken = set(assigned.values())
        port = container.port
        if port in taken:
            port = 3999
            while port in taken:
                port -= 1
        assigned[container.id] = port
    return assigned


def split_command(command: str) -> list[str] | None:
    """`command` as the Infernet node passes it to docker-py, which splits a string with shlex."""
    return shlex.split(command) if command.strip() else None


def unknown_keys(model: BaseModel, path: str = "") -> list[str]:
    """Dotted paths of every key the Infernet schema does not have (Infernet ignores them)."""
    found = [f"{path}{key}" for key in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, _Open):
                where = f"{path}{name}.{index}." if isinstance(value, list) else f"{path}{name}."
                found += unknown_keys(item, where)
    return found


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid Infernet configuration"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def parse_infernet(data: Any, source: str = "config.json") -> InfernetConfig:
    if not isinstance(data, dict):
        raise InfernetFormError(f"{source}: the top level must be a JSON object")
    try:
        return InfernetConfig.model_validate(data)
    except ValidationError as exc:
        raise InfernetFormError(_format_errors(source, exc)) from None


def _container(c: InfernetContainer, port: int, manage: bool, notes: list[str], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"id": c.id, "external": c.external}
    if c.url:
        # Infernet calls `url` when it is set, managed or not; so do we (nothing to start then).
        out["url"] = c.url
        if manage and c.image:
            notes.append(f"{where}.url: set, so the node calls {c.url} and does not start {c.image} "
                         "(Infernet 1.4 starts the image and calls the url anyway)")
        if c.bearer:
            out["bearer"] = c.bearer
    else:
        out["port"] = port  # managed: published on this host port; unmanaged: where it listens
    if c.bearer and not c.url:
        notes.append(f"{where}.bearer: ignored without url (as in Infernet)")
    for name in ("image", "description"):
        if getattr(c, name):
            out[name] = getattr(c, name)
    if (command := split_command(c.command)) is not None:
        out["command"] = command
    if c.env:
        out["env"] = {str(k): "" if v is None else str(v) for k, v in c.env.items()}
    for name in ("volumes", "allowed_ips", "allowed_addresses", "allowed_delegate_addresses"):
        if getattr(c, name):
            out[name] = list(getattr(c, name))
    if c.accepted_payments:
        out["accepted_payments"] = dict(c.accepted_payments)
    if c.gpu:
        out["gpu"] = True
    if c.generates_proofs:
        out["generates_proofs"] = True
    return out


def translate(config: InfernetConfig) -> Translation:
    """Our config.yaml tree with Infernet's meanings and defaults, and the notes to log."""
    notes: list[str] = []
    ports = assign_ports(config.containers)
    for c in config.containers:
        if ports[c.id] != c.port:
            notes.append(f"containers.{c.id}.port: {c.port} is taken by an earlier container; "
                         f"assigned {ports[c.id]} (as Infernet assigns it)")
    data: dict[str, Any] = {
        # Infernet listens on every interface of its container or host.
        "server": {"host": "0.0.0.0", "port": config.server.port,
                   "rate_limit": {"num_requests": config.server.rate_limit.num_requests,
                                  "period": config.server.rate_limit.period}},
        "manage_containers": config.manage_containers,
        "startup_wait": config.startup_wait,
        "containers": [_container(c, ports[c.id], config.manage_containers, notes, f"containers.{i}")
                       for i, c in enumerate(config.containers)],
        "log": {"path": config.log.path},
    }
    data["log"].update(max_file_size=config.log.max_file_size, backup_count=config.log.backup_count)
    if config.docker is not None:
        if config.docker.password:
            data["docker"] = {"credentials": {"username": config.docker.username,
                                              "password": config.docker.password}}
        else:
            notes.append("docker: no password, so images are pulled anonymously "
                         "(Infernet 1.4 cannot log in either: its credentials never reach the pull)")
    data["chain"] = _chain(config.chain, notes)
    notes.append("redis: not used; job state is kept in SQLite (storage.path, default node.db "
                 "beside the config), which survives restarts")
    if config.forward_stats:
        notes.append("forward_stats: no statistics are sent anywhere; the node's own numbers are at "
                     "GET /metrics and GET /api/node/status")
    if config.log_path is not None:
        notes.append(f"log_path: a legacy key Infernet 1.4 ignores; the log file is log.path ({config.log.path})")
    for key in unknown_keys(config):
        if key != "node" and not key.startswith("node."):
            notes.append(f"{key}: not a key of Infernet {INFERNET_VERSION}'s config; ignored, as Infernet ignores it")
    return Translation(data, notes)


def _chain(chain: InfernetChain, notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"enabled": chain.enabled, "trail_head_blocks": chain.trail_head_blocks,
                           # Consumers written for Infernet decode Python's str() of the output.
                           "output_encoding": "infernet"}
    if chain.rpc_url:
        out["rpc_url"] = chain.rpc_url
    if chain.registry_address:
        out["registry_address"] = chain.registry_address
    if chain.wallet is not None:
        wallet: dict[str, Any] = {"max_gas_limit": chain.wallet.max_gas_limit}
        if chain.wallet.private_key:
            key = chain.wallet.private_key
            wallet["private_key"] = key if key.startswith("0x") else f"0x{key}"
        if chain.wallet.payment_address:
            wallet["payment_address"] = chain.wallet.payment_address
        if chain.wallet.allowed_sim_errors:
            wallet["allowed_sim_errors"] = list(chain.wallet.allowed_sim_errors)
        out["wallet"] = wallet
    sync = chain.snapshot_sync
    out["reader_batch"] = min(sync.batch_size, 5000)
    if sync.batch_size > 5000:
        notes.append(f"chain.snapshot_sync.batch_size: {sync.batch_size} read as 5000, the most one "
                     "Reader call here may ask for")
    out["poll_interval"] = sync.sync_period
    if sync.starting_sub_id:
        out["starting_sub_id"] = sync.starting_sub_id
    if chain.enabled:
        notes.append("chain.snapshot_sync.sleep: not needed; subscriptions are found from the "
                     "Coordinator's events block range by block range, and remembered in SQLite "
                     "across restarts (no re-sync from starting_sub_id at every start)")
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, mapping by mapping (a list or a value in `extra` replaces)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_infernet(path: Path, raw: Any | None = None) -> Translation:
    """Read an Infernet config file (JSON; or an already parsed mapping) and its additions
    (`node:` inside, `node.yaml` beside) into one tree of our config."""
    if raw is None:
        try:
            raw = json.loads(path.read_text())
        except OSError as exc:
            raise InfernetFormError(f"{path}: cannot read: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise InfernetFormError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} "
                                    f"column {exc.colno}") from None
    config = parse_infernet(raw, str(path))
    result = translate(config)
    extras: list[tuple[str, Any]] = [(f"{path}: node", config.node)] if config.node else []
    sidecar = path.parent / SIDECAR_NAME
    if sidecar.is_file() and sidecar.resolve() != path.resolve():
        try:
            extras.append((str(sidecar), yaml.safe_load(sidecar.read_text())))
        except yaml.YAMLError as exc:
            raise InfernetFormError(f"{sidecar}: not valid YAML: {exc}") from None
    for where, extra in extras:
        if extra is None:
            continue
        if not isinstance(extra, dict):
            raise InfernetFormError(f"{where}: must be a mapping of config.yaml sections")
        result.data = merge(result.data, extra)
        result.notes.append(f"{where}: added {', '.join(sorted(extra))}")
    return result
