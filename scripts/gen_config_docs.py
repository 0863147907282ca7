"""Writes docs/config.md, the reference of every config.yaml key, from the config models
themselves: `python scripts/gen_config_docs.py` (or `--check`: exit 1 when the file is stale).

For each key: its type, its default, its unit and its meaning. The meaning is the field's
`description`, else the comment written beside or just above the field in the model's source
(the subsystems document their keys there); the unit is read from the meaning ("Seconds ...",
"Bytes", ...). A key with no meaning at all is an error (tests/daemon/test_config_docs.py walks
every field), so the reference cannot fall behind the models.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import sys
import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.config import NodeConfig  # noqa: E402

OUT = REPO / "docs" / "config.md"

_UNITS = (("seconds", "s"), ("bytes", "bytes"), ("wei", "wei"), ("blocks", "blocks"), ("cpus", "CPUs"),
          ("usd", "USD"), ("milliseconds", "ms"), ("minutes", "min"), ("percent", "%"))


@dataclass
class Key:
    path: str
    type: str
    default: str
    unit: str
    meaning: str
    section: str


# Meanings of keys whose model has neither a description nor a comment for them (kept here, not
# in the subsystems' files, so the reference is complete without editing every subsystem at
# once; a key listed here that no longer exists fails the docs test, as does a key in neither).
MEANINGS: dict[str, str] = {
    "server": "The HTTP server: listener, limits, operator access",
    "storage": "The SQLite file and how long finished rows are kept",
    "docker": "The Docker engine and how managed containers are run and reached",
    "containers": "The containers jobs run on (each with its own image or URL)",
    "log": "Where and how the node logs",
    "chain": "Infernet chain subscriptions: RPC, contracts, the node's wallet, retries",
    "cre": "The CRE bridge and workflow runtime (/api/cre)",
    "gateway": "The governance gateway (/api/v1), nullrun SDK compatible",
    "registry": "The task registry, with the node as relayer",
    "observe": "Metrics, the status page and the problem watchdog",
    "registry.tasks.<key>.containers": "The container chain that runs the task, in order",
    "cre.actions.<key>.containers": "The container chain that runs actions of this type, in order",
    "server.host": "Address the HTTP server listens on (0.0.0.0: every interface)",
    "server.port": "TCP port of the HTTP server (0: any free port)",
    # By model (Model.key): every section of that model, wherever it sits, unless its path is listed.
    "RateLimitConfig.num_requests": "Requests allowed per client IP and route in each period; 0: no limit",
    "RateLimitConfig.period": "Seconds: the length of one rate-limit window",
    "server.auth_rate_limit.num_requests": "Sign-in requests allowed per client IP and route in each period; "
                                           "0: no limit",
    "server.auth_rate_limit.period": "Seconds: the length of one sign-in rate-limit window",
    "server.max_body_bytes": "Bytes: the largest request body accepted (413 above it)",
    "storage.path": "The SQLite file holding all of the node's state (:memory: for none)",
    "docker.credentials.username": "Registry user name for image pulls",
    "docker.credentials.password": "Registry password or token for image pulls",
    "docker.credentials.registry": "Registry host the credentials are for (unset: Docker Hub)",
    "docker.stop_on_exit": "Remove the managed containers when the node stops",
    "docker.monitor_interval": "Seconds between checks of the managed containers (restart what died)",
    "docker.swarm.mesh_host": "Host the node calls services on with connect_via: mesh",
    "manage_containers": "Start and watch the containers (false: they run already, at url or port)",
    "containers[].id": "Container id: its name in job requests and in on-chain container ids",
    "containers[].image": "Docker image (pulled when it is not on the engine; the tag of a build)",
    "containers[].build.context": "Folder the image is built from",
    "containers[].build.dockerfile": "Dockerfile path inside the context (default: Dockerfile)",
    "containers[].description": "Shown in GET /info",
    "containers[].external": "May be the first container of a job (false: only later in a chain)",
    "containers[].port": "Host port the managed container is published on (127.0.0.1); with "
                         "manage_containers false, the port the service listens on. Unset: a free port",
    "containers[].url": "Base URL of a service the node does not run (it calls {url}/service_output)",
    "containers[].bearer": "Sent as Authorization: Bearer to a url service",
    "containers[].env": "Environment of the container",
    "containers[].command": "Command of the container (a string, or a list of arguments)",
    "containers[].volumes": "Docker volumes, host:container[:mode]",
    "containers[].gpu": "Give the container every GPU of the machine",
    "containers[].generates_proofs": "Can answer requires_proof (needed for subscriptions with a verifier)",
    "containers[].allowed_ips": "Client networks (CIDR) allowed to run jobs on it; empty: everyone",
    "containers[].allowed_addresses": "Subscription owners served on chain; empty: every owner",
    "containers[].allowed_delegate_addresses": "Subscription owners served for delegated subscriptions; "
                                               "empty: every owner",
    "containers[].timeout": "Seconds one call may take before the job fails",
    "containers[].concurrency": "Calls to this container at once; more wait their turn",
    "containers[].placement": "Swarm placement constraints of the service (docker.mode swarm)",
    "containers[].resources.cpu_reservation": "CPUs reserved for each task (steers placement)",
    "containers[].resources.memory_reservation": "Bytes reserved for each task (steers placement)",
    "log.level": "Lowest level logged (DEBUG, INFO, WARNING, ERROR); applies on reload",
    "log.format": "kv: key=value lines; json: one JSON object per line",
    "chain.enabled": "Watch the chain and serve subscriptions",
    "chain.rpc_url": "JSON-RPC URL of the chain (http or https)",
    "chain.registry_address": "The Infernet Registry, which names the Coordinator, Inbox, Reader, Fee and "
                              "WalletFactory",
    "chain.coordinator_address": "The Coordinator, for deployments without a Registry (no payments then)",
    "chain.reader_address": "The Reader, for deployments without a Registry",
    "chain.snapshot_batch_blocks": "Blocks per event query while catching up",
    "chain.reader_batch": "Subscriptions per Reader call",
    "chain.poll_interval": "Seconds between looks at the chain head",
    "chain.processor_tick": "Seconds between rounds of the subscription processor",
    "chain.wallet.private_key": "The node's signing key (delivers results, pays gas)",
    "chain.wallet.max_gas_limit": "The most gas one delivery may use",
    "cre.enabled": "Serve the CRE bridge (/api/cre)",
    "cre.skew_seconds": "Seconds a signed request's timestamp may differ from the node's clock",
    "cre.ingest_policy": "Which workflows may ingest which record kinds: {workflow: [kinds]}",
    "cre.decision_workflows": "Workflows allowed to post decisions",
    "cre.max_readback": "The most records one read-back request returns",
    "cre.gateway_timeout": "Seconds to wait for the CRE gateway when dispatching a trigger",
    "cre.action_lease_seconds": "Seconds an action claimed by a worker stays leased to it",
    "cre.runtime.enabled": "Run the local CRE workflow runtime",
    "cre.runtime.rpc_url": "JSON-RPC URL of the chain the runtime's contracts are on",
    "cre.runtime.forwarder_address": "The KeystoneForwarder contract reports are sent through",
    "cre.runtime.sub0_address": "The market contract the runtime acts on",
    "cre.runtime.vault_address": "The PredictionVault contract",
    "cre.runtime.conditional_tokens_address": "The ConditionalTokens contract",
    "cre.runtime.usdc_address": "The USDC token contract",
    "cre.runtime.backend_url": "Backend the runtime calls back (unset: none)",
    "cre.runtime.funding.eth_wei": "Wei sent to a new agent's address",
    "cre.runtime.funding.usdc_allowance": "USDC allowance a new agent gives the PredictionVault",
    "gateway.enabled": "Serve the governance gateway (/api/v1)",
    "gateway.hmac_required": "Require HMAC-signed SDK requests (fallback: NULLRUN_HMAC_REQUIRED)",
    "gateway.hmac_max_age": "Seconds a signed request stays valid (fallback: NULLRUN_HMAC_MAX_AGE_SECS)",
    "gateway.reservation_ttl": "Seconds a budget reservation is held before it expires",
    "gateway.ws_buffer": "Control messages kept for WebSocket clients that reconnect",
    "gateway.oauth.providers.<key>.algorithms": "Signature algorithms accepted for id_tokens",
    "gateway.oauth.providers.<key>.jwks_cache_seconds": "Seconds the provider's keys are cached",
    "gateway.oauth.providers.<key>.leeway_seconds": "Seconds of clock difference allowed on token times",
    "gateway.model_prices.<key>.input_usd_per_1k": "USD per 1,000 input tokens of this model",
    "gateway.model_prices.<key>.output_usd_per_1k": "USD per 1,000 output tokens of this model",
    "registry.enabled": "Serve the task registry (/api/tasks, /api/projects)",
    "registry.oracle_max_age": "Seconds an oracle signature stays acceptable",
    "registry.nonce_ttl": "Seconds a sign-in nonce stays valid",
    "registry.token_ttl": "Seconds a sign-in token stays valid",
    "registry.catch_up_window": "Seconds: the oldest missed cron tick still fired with missed_ticks: latest",
    "registry.chains.<key>.rpc_url": "JSON-RPC URL of the watched chain",
    "registry.chains.<key>.poll_interval": "Seconds between looks at the watched chain",
    "registry.chains.<key>.batch_blocks": "Blocks per event query on the watched chain",
    "registry.auth_uri": "URI a sign-in message must name; unset: the node's host:port",
    "registry.input_rate_limit.num_requests": "Input submissions allowed per client IP in each period; 0: no limit",
    "registry.input_rate_limit.period": "Seconds: the length of one input rate-limit window",
    "cre.wasm.max_response_bytes": "Bytes: the largest response a workflow execution may send back",
    "cre.wasm.max_capability_calls": "Capability calls (HTTP, EVM, consensus, ...) one execution may make",
    "cre.wasm.http_timeout": "Seconds one http-actions request (or EVM JSON-RPC call) may take; a workflow "
                             "may ask for less",
    "cre.wasm.max_http_response_bytes": "Bytes: the largest response body an http-actions request reads",
    "cre.wasm.log_poll_interval": "Seconds between looks at a chain for EVM log triggers",
    "cre.workflows[].name": "The workflow's name (1-64 letters, digits, '.', '_' or '-'), in routes, "
                            "metrics and logs",
    "cre.workflows[].file": "The workflow: a .ts/.mts source (built with the npm toolchain), a bundled .js "
                            "or a compiled .wasm",
    "cre.workflows[].enabled": "Load and trigger the workflow (false: keep it configured but off)",
    "observe.enabled": "Serve /metrics, /api/node/status and the status page, and watch for problems",
    "observe.restart_window": "Seconds over which container restarts are counted",
}


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comment beside it or in the lines just above it, in the class source."""
    try:
        lines, _ = inspect.getsourcelines(model)
    except (OSError, TypeError):
        return {}
    source = textwrap.dedent("".join(lines))
    src_lines = source.splitlines()
    out: dict[str, str] = {}
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node in body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        texts: list[str] = []
        row = node.lineno - 2
        while row >= 0 and src_lines[row].strip().startswith("#"):
            texts.insert(0, src_lines[row].strip().lstrip("#").strip())
            row -= 1
        for line in src_lines[node.lineno - 1:node.end_lineno]:
            if "  # " in line:
                texts.append(line.split("  # ", 1)[1].strip())
        text = " ".join(t for t in texts if t and not t.startswith(("type:", "noqa")))
        if text:
            out[node.target.id] = text
    return out


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" | null" if type(None) in args else "")
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list[{', '.join(_type_name(a) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"map[{_type_name(args[0])}, {_type_name(args[1])}]"
    if annotation is SecretStr:
        return "secret string"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any, parent_default: BaseModel | None, name: str) -> str:
    """The effective default: the parent section's default value for this key when the parent
    has one (a section may default differently from its model), else the field's own."""
    if parent_default is not None:
        value = getattr(parent_default, name)
    elif field.is_required():
        return "required"
    else:
        value = field.get_default(call_default_factory=True) if field.default_factory else field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel) or (isinstance(value, dict) and _is_section(field.annotation)):
        return "(section)"
    if isinstance(value, SecretStr):
        return "(secret)" if value.get_secret_value() else '""'
    return json.dumps(value, default=str)


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unit(meaning: str) -> str:
    first = meaning.split()[0].lower().strip(":,.;") if meaning else ""
    for word, unit in _UNITS:
        if first == word or meaning.lower().startswith(word):
            return unit
    match = re.search(r"\bin (seconds|bytes|wei|blocks|milliseconds|minutes)\b", meaning.lower())
    return dict(_UNITS).get(match.group(1), "") if match else ""


def _models(annotation: Any) -> list[tuple[type[BaseModel], str]]:
    """Models nested in a field's type, with the path suffix they sit under ([] for lists, .<key> for maps)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    if origin is typing.Annotated:
        return _models(args[0])
    if origin in (list, tuple):
        return [(m, "[]" + s) for a in args for m, s in _models(a)]
    if origin is dict:
        return [(m, ".<key>" + s) for m, s in _models(args[1])]
    return [m for a in args for m in _models(a)]


def _own_doc(model: type[BaseModel]) -> str:
    """The model's own docstring's first paragraph (not one inherited from ConfigModel)."""
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def walk(model: type[BaseModel], prefix: str = "", section: str = "",
         defaults: BaseModel | None = None) -> list[Key]:
    """Every key under `model`, depth first, in declaration order. `defaults`: the section's
    default value, where its keys' effective defaults come from."""
    comments = _comments(model)
    keys: list[Key] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        top = section or name
        nested = _models(field.annotation)
        meaning = (field.description or MEANINGS.get(path) or comments.get(name, "")
                   or MEANINGS.get(f"{model.__name__}.{name}", "")).strip()
        if not meaning and nested:
            meaning = _own_doc(nested[0][0]) or "A section: its keys follow."
        keys.append(Key(path, _type_name(field.annotation), _default(field, defaults, name), _unit(meaning),
                        meaning, top))
        for sub, suffix in nested:
            if sub is model:
                continue
            value = getattr(defaults, name) if defaults is not None else (
                None if field.is_required() else field.get_default(call_default_factory=True))
            keys += walk(sub, f"{path}{suffix}.", top, value if isinstance(value, BaseModel) and not suffix else None)
    return keys


EXAMPLES = '''
## Examples

A container built from a local folder, its calls bounded, reachable only from one network:

```yaml
containers:
  - id: summarize
    build: {context: containers, dockerfile: summarize/Dockerfile}
    timeout: 60           # seconds per call
    concurrency: 8        # calls at once
    allowed_ips: ["10.0.0.0/8"]
```

A `registry.tasks` binding: the task with this CID, relayed by this node, runs on a container
chain:

```yaml
registry:
  enabled: true
  relayer_key: ${RELAYER_KEY}
  tasks:
    "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi":
      containers: [fetch, summarize]
```

A chain node with a payment wallet, serving a two-container pipeline on chain:

```yaml
chain:
  enabled: true
  rpc_url: ${RPC_URL}
  registry_address: "0x…"
  wallet: {private_key: "${NODE_PRIVATE_KEY}", payment_address: "0x…"}
  pipelines: [[fetch, summarize]]
```
'''


def render() -> str:
    keys = walk(NodeConfig)
    out = ["# Configuration reference", "",
           "<!-- Generated by scripts/gen_config_docs.py from the config models; do not edit by hand. -->", "",
           "Every key of `config.yaml`, generated from the models the node validates it with "
           "(`node-daemon check-config --schema` prints the same as JSON Schema). Unknown keys are "
           "errors. Any string may use `${VAR}` or `${VAR:-default}`. Relative paths are relative to "
           "the config file. `[]` marks the items of a list, `<key>` the entries of a map. An Infernet "
           "`config.json` is read too: see [Coming from Infernet](infernet.md).", ""]
    sections: dict[str, list[Key]] = {}
    for key in keys:
        sections.setdefault(key.section if "." in key.path or key.type == "section" else "(top level)",
                            []).append(key)
    ordered = sorted(sections.items(), key=lambda item: item[0] != "(top level)")  # top-level keys first
    for section, items in ordered:
        out += [f"## `{section}`" if section != "(top level)" else "## Top-level keys", "",
                "| Key | Type | Default | Unit | Meaning |", "|---|---|---|---|---|"]
        for key in items:
            meaning = key.meaning.replace("|", "\\|").replace("\n", " ")
            typ = key.type.replace("|", "\\|")
            default = key.default.replace("|", "\\|")
            out.append(f"| `{key.path}` | {typ} | `{default}` | {key.unit} | {meaning} |")
        out.append("")
    return "\n".join(out) + EXAMPLES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/config.md is not up to date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(REPO)} is stale: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)} ({len(walk(NodeConfig))} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
