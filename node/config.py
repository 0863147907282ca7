"""The node's configuration: `config.yaml` parsed into strict pydantic models.

Unknown keys are errors (a typo must never silently disable a feature), `${VAR}` and
`${VAR:-default}` in any string are replaced from the environment, and secrets are
`SecretStr` so they never show up in logs or reprs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def env_flag(value: str | None) -> bool:
    """An environment variable read as a boolean: 1/true/yes/on (any case) is true."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class ConfigError(Exception):
    """A config that cannot be used; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _addresses(value: list[str]) -> list[str]:
    """0x-prefixed 20-byte addresses, lower-cased for comparisons."""
    for item in value:
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", item):
            raise ValueError(f"{item!r} is not a 0x-prefixed 20-byte address")
    return [item.lower() for item in value]


class RateLimitConfig(_Model):
    """Per client IP, per route. `num_requests: 0` turns limiting off."""

    num_requests: int = Field(0, ge=0)
    period: float = Field(60.0, gt=0)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    rate_limit: RateLimitConfig = RateLimitConfig()
    # Sign-in routes (/api/v1/auth/*, /api/auth/*): per client IP, per route, on by default so
    # passwords and API keys cannot be guessed at line rate. `num_requests: 0` turns it off.
    auth_rate_limit: RateLimitConfig = RateLimitConfig(num_requests=30, period=60.0)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_batch: int = Field(1000, gt=0, description="Largest accepted /api/jobs/batch list")
    # Who may call PUT /api/status (containers working out of band). Loopback and the
    # default Docker bridge ranges, not the whole of 192.168/16 as the Infernet node does.
    status_allowed_ips: list[str] = ["127.0.0.0/8", "::1/128", "172.16.0.0/12"]
    shutdown_grace: float = Field(10.0, ge=0, description="Seconds in-flight jobs get on shutdown")
    # Bearer token for the operator endpoints (/api/node/*) from anywhere but loopback.
    admin_token: SecretStr | None = None
    max_inflight_jobs: int = Field(10_000, ge=0, description="Jobs from HTTP clients running at once; "
                                   "over it 429 with Retry-After (0: no cap)")
    header_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a request's headers")
    keepalive_timeout: float = Field(75.0, gt=0, description="Seconds an idle keep-alive connection stays open")
    max_json_depth: int = Field(64, ge=2, le=1000, description="Deepest JSON nesting accepted from outside")

    @field_validator("status_allowed_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value


class StorageConfig(_Model):
    path: str = "node.db"
    # NORMAL (WAL): every committed transaction survives a process crash; the last ones may be
    # lost on power loss. FULL: an fsync per commit, so they survive power loss too.
    synchronous: Literal["normal", "full"] = "normal"
    job_retention: float = Field(7 * 86400.0, ge=0, description="Seconds finished jobs are kept (0: forever)")
    prune_interval: float = Field(60.0, gt=0, description="Seconds between prunes of expired rows")


class RegistryCredentials(_Model):
    username: str
    password: SecretStr
    registry: str | None = None


class SwarmConfig(_Model):
    """How the node runs and reaches its containers in `docker.mode: swarm`."""

    # The attachable overlay network the services join (created if missing, reused if there);
    # default "<name_prefix>net" ("node-daemon-net" without a prefix).
    network: str | None = None
    # tasks: each task publishes port 3000 on its machine (host mode) and the node spreads calls
    #        over the running tasks itself (works without IPVS; the node sees every task).
    # mesh:  one port published through the routing mesh on every machine; calls go to
    #        http://<mesh_host>:<port> and Swarm spreads them.
    # vip:   the node runs on the overlay network; calls go to http://<service name>:3000.
    connect_via: Literal["tasks", "mesh", "vip"] = "tasks"
    mesh_host: str = "127.0.0.1"
    # Give up waiting for a new or updated service to converge after this many seconds.
    converge_timeout: float = Field(120.0, gt=0)


class DockerConfig(_Model):
    base_url: str | None = Field(None, description="Engine URL; DOCKER_HOST or the local socket if unset")
    credentials: RegistryCredentials | None = None
    name_prefix: str = Field("", description="Prefix of managed container names")
    # How the node reaches managed containers: "auto" tries the container's own IP on its
    # Docker network first (no userland proxy in the way) and falls back to the port published
    # on 127.0.0.1; "published" always uses the published port.
    connect_via: Literal["auto", "published"] = "auto"
    stop_on_exit: bool = True
    monitor_interval: float = Field(1.0, gt=0)
    # local: one container per configured container on this engine. swarm: one Swarm service
    # per configured container, its tasks spread over the swarm's machines.
    mode: Literal["local", "swarm"] = "local"
    swarm: SwarmConfig = SwarmConfig()


class BuildConfig(_Model):
    context: str
    dockerfile: str | None = None


class ResourcesConfig(_Model):
    """Swarm task resources: limits cap a task, reservations steer placement."""

    cpu_limit: float | None = Field(None, gt=0, description="CPUs (1.5 = one and a half cores)")
    memory_limit: int | None = Field(None, gt=0, description="Bytes")
    cpu_reservation: float | None = Field(None, gt=0)
    memory_reservation: int | None = Field(None, gt=0)
    # Generic resources a machine advertises (dockerd --node-generic-resource), e.g. {"NVIDIA-GPU": 1}.
    generic: dict[str, int] = {}

    def is_set(self) -> bool:
        return self != ResourcesConfig()


class ContainerConfig(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    image: str = ""
    build: BuildConfig | None = None
    description: str = ""
    external: bool = True
    port: int | None = Field(None, ge=1, le=65535)
    url: str | None = None
    bearer: SecretStr | None = None
    env: dict[str, str] = {}
    command: str | list[str] | None = None
    volumes: list[str] = []
    gpu: bool = False
    generates_proofs: bool = False
    allowed_ips: list[str] = []
    allowed_addresses: list[str] = []
    allowed_delegate_addresses: list[str] = []
    timeout: float = Field(180.0, gt=0)
    concurrency: int = Field(64, ge=1)
    cost_usd: float = Field(0.0, ge=0, description="Charged to a governed job's workflow budget per call")
    # docker.mode swarm only: tasks of the service, where they may run, what each may use.
    replicas: int = Field(1, ge=0)
    placement: list[str] = []
    resources: ResourcesConfig = ResourcesConfig()
    idempotent: bool = Field(False, description="Jobs a crash interrupted are run again (at-least-once)")

    @field_validator("build", mode="before")
    @classmethod
    def _build_shorthand(cls, value: Any) -> Any:
        return {"context": value} if isinstance(value, str) else value

    @field_validator("allowed_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("allowed_addresses", "allowed_delegate_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return _addresses(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/") if value else value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        for item in value:
            if len(item.split(":")) not in (2, 3):
                raise ValueError(f"{item!r} is not 'host:container[:mode]'")
        return value


class LogConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["kv", "json"] = "kv"
    path: str | None = Field(None, description="Also write logs to this file")


class WalletConfig(_Model):
    private_key: SecretStr | None = None
    max_gas_limit: int = Field(5_000_000, gt=0)
    min_balance: int = Field(0, ge=0, description="Warn (log + metric) when the balance in wei falls below this")


class ChainConfig(_Model):
    """The chain subsystem; disabled by default."""

    enabled: bool = False
    rpc_url: str | None = None
    coordinator_address: str | None = None
    reader_address: str | None = None
    trail_head_blocks: int = Field(1, ge=0, description="Confirmations: work on head - trail")
    start_block: int = Field(0, ge=0, description="First block of the snapshot sync (without a saved cursor)")
    snapshot_batch_blocks: int = Field(2000, ge=1)
    reader_batch: int = Field(500, ge=1, le=5000)
    poll_interval: float = Field(0.5, gt=0)
    processor_tick: float = Field(0.5, gt=0)
    max_attempts: int = Field(3, ge=1, description="Tries per (subscription, interval)")
    retry_backoff: float = Field(2.0, ge=0, description="Seconds before a retry, times the attempt number")
    # Container chains this node serves on chain (each configured container alone is always served).
    pipelines: list[list[str]] = []
    wallet: WalletConfig = WalletConfig()

    @field_validator("coordinator_address", "reader_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
            raise ValueError(f"{value!r} is not a 0x-prefixed 20-byte address")
        return value

    @model_validator(mode="after")
    def _required_when_enabled(self) -> ChainConfig:
        if self.enabled:
            missing = [n for n in ("rpc_url", "coordinator_address", "reader_address") if not getattr(self, n)]
            if self.wallet.private_key is None:
                missing.append("wallet.private_key")
            if missing:
                raise ValueError(f"chain is enabled but {', '.join(missing)} is not set")
        return self


class CreActionRoute(_Model):
    """An enqueued CRE action of this `actionType` runs as a job on these containers."""

    containers: list[str] = Field(min_length=1)


DEFAULT_INGEST_POLICY = {
    "runtime-indexer-block": ["block"],
    "runtime-indexer-data-fetch": ["metrics"],
    "runtime-reference-feeds": ["feeds"],
}


class CreFunding(_Model):
    """What createAgentKey pre-signs for a new agent: an ETH transfer from the backend signer and
    the agent's approvals of the PredictionVault (USDC allowance, conditional tokens)."""

    eth_wei: int = Field(10**16, ge=0)
    usdc_allowance: int = Field(2**256 - 1, ge=0)


class CreRuntimeConfig(_Model):
    """The local CRE-compatible workflow runtime (seed 001 actions executed by this node)."""

    enabled: bool = True
    api_key: SecretStr | None = Field(None, description="Callers of /api/cre/workflow must send this key, as the "
                                                        "payload's apiKey or as Authorization: Bearer")
    allow_unauthenticated: bool = Field(False, description="Run without api_key: anyone who reaches the node can "
                                                           "have the DON key sign (logged as a warning at start)")
    rpc_url: str
    don_key: SecretStr = Field(description="The DON's signing key (quotes, reports)")
    transmitter_key: SecretStr | None = Field(None, description="Sends report transactions; default: don_key")
    backend_signer_key: SecretStr | None = None  # BACKEND_SIGNER_PRIVATE_KEY: funds agents
    tee_master_key: SecretStr | None = None  # TEE_MASTER_ENCRYPTION_KEY (32 bytes hex)
    forwarder_address: str
    sub0_address: str
    vault_address: str
    conditional_tokens_address: str
    usdc_address: str
    backend_url: str | None = None
    funding: CreFunding | None = None
    quote_ttl: int = Field(300, gt=0, description="Seconds a DON quote from lmsrPricing stays valid")

    @field_validator("forwarder_address", "sub0_address", "vault_address", "conditional_tokens_address",
                     "usdc_address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
            raise ValueError(f"{value!r} is not a 0x-prefixed 20-byte address")
        return value

    @model_validator(mode="after")
    def _keyed(self) -> CreRuntimeConfig:
        if self.enabled and not (self.api_key and self.api_key.get_secret_value()) and not self.allow_unauthenticated:
            raise ValueError("cre.runtime needs api_key (anyone could otherwise have the DON, backend and agent "
                             "keys sign); set allow_unauthenticated: true only to run it open on purpose")
        return self


class CreConfig(_Model):
    """The app <-> CRE runtime bridge (seed 000) and the backend callbacks (seed 001 §3).
    Unset secrets fall back to the environment variables the seeds name (KEEPR_API_KEY,
    CRE_RUNTIME_HMAC_SECRET, CRE_GATEWAY_URL, CRE_HTTP_TRIGGER_PRIVATE_KEY, …)."""

    enabled: bool = True
    api_key: SecretStr | None = None  # KEEPR_API_KEY
    enforce_hmac: bool | None = None  # CRE_RUNTIME_ENFORCE_HMAC
    hmac_secret: SecretStr | None = None  # CRE_RUNTIME_HMAC_SECRET
    allow_unsigned_when_hmac_configured: bool | None = None  # CRE_RUNTIME_ALLOW_UNSIGNED_WHEN_HMAC_CONFIGURED
    skew_seconds: float = Field(300.0, gt=0)
    ingest_policy: dict[str, list[str]] = DEFAULT_INGEST_POLICY
    decision_workflows: list[str] = ["runtime-orchestrator"]
    max_readback: int = Field(500, ge=1)
    gateway_url: str | None = None  # CRE_GATEWAY_URL
    trigger_private_key: SecretStr | None = None  # CRE_HTTP_TRIGGER_PRIVATE_KEY / CRE_TRIGGER_SIGNER_PRIVATE_KEY
    allowed_trigger_workflow_ids: list[str] | None = None  # CRE_RUNTIME_ALLOWED_TRIGGER_WORKFLOW_IDS
    gateway_timeout: float = Field(15.0, gt=0)
    backend_api_key: SecretStr | None = None  # CRE_BACKEND_API_KEY: auth of the callbacks
    actions: dict[str, CreActionRoute] = {}
    action_lease_seconds: float = Field(60.0, gt=0)
    runtime: CreRuntimeConfig | None = None

    @field_validator("allowed_trigger_workflow_ids")
    @classmethod
    def _workflow_ids(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = []
        for item in value:
            item = item.lower().removeprefix("0x")
            if not re.fullmatch(r"[0-9a-f]{64}", item):
                raise ValueError(f"{item!r} is not a 64-hex workflow id")
            out.append(item)
        return out


class OAuthProvider(_Model):
    """An OpenID Connect provider whose id_tokens prove an identity at /auth/oauth/register."""

    issuer: str = Field(min_length=1, description="Expected `iss` claim")
    audiences: list[str] = Field(min_length=1, description="Accepted `aud` values (the OAuth client ids)")
    jwks_url: str | None = Field(None, pattern=r"^https?://", description="The provider's JWKS (signing keys)")
    jwks_file: str | None = Field(None, description="Or a JWKS file on this machine")
    algorithms: list[Literal["RS256", "ES256"]] = Field(["RS256", "ES256"], min_length=1)
    jwks_cache_seconds: float = Field(3600.0, gt=0)
    leeway_seconds: float = Field(60.0, ge=0, le=600)

    @model_validator(mode="after")
    def _one_key_source(self) -> OAuthProvider:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("set exactly one of jwks_url and jwks_file")
        return self


class OAuthConfig(_Model):
    """Proof required by POST /api/v1/auth/oauth/register. With neither set the route is off (404)."""

    providers: dict[str, OAuthProvider] = {}
    # A backend that did the OAuth dance itself (e.g. the dashboard) sends this in X-Backend-Secret.
    backend_secret: SecretStr | None = None

    @field_validator("backend_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value


class ModelPrice(_Model):
    input_usd_per_1k: float = Field(0.0, ge=0)
    output_usd_per_1k: float = Field(0.0, ge=0)


class GatewayConfig(_Model):
    """Governance gateway (seed 002). Unset values fall back to NULLRUN_HMAC_REQUIRED and
    NULLRUN_HMAC_MAX_AGE_SECS."""

    enabled: bool = True
    hmac_required: bool | None = None
    hmac_max_age: float | None = Field(None, gt=0)
    master_key_path: str = Field("node.key", description="AES key sealing API secret keys (created if missing)")
    reservation_ttl: float = Field(300.0, gt=0)
    # Jobs without X-Workflow-Id are bound to the workflow named here for their source
    # (offchain, stream, chain, cre, registry), so an operator can pause or kill that traffic.
    default_workflows: dict[str, str] = {}
    ws_buffer: int = Field(1000, ge=10)
    # Alert webhooks may not reach loopback, private, link-local or metadata addresses unless
    # the operator lists the network here (e.g. ["10.20.0.0/16"]).
    webhook_allowed_networks: list[str] = []
    oauth: OAuthConfig = OAuthConfig()
    # Per WebSocket client: messages queued for it; a client that falls this far behind is dropped.
    ws_queue: int = Field(256, ge=8)
    # Seconds a rotated key's previous secret still verifies (SDKs re-fetch on key_rotated).
    rotation_grace: float = Field(0.0, ge=0)
    # USD per 1000 tokens by model, to price SDK usage events that report tokens but no cost.
    model_prices: dict[str, ModelPrice] = {}

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a network (CIDR)") from None
        return value


class RegistryTaskRoute(_Model):
    """A task (by its CID) this node runs as a relayer: the container chain that executes it."""

    containers: list[str] = Field(min_length=1)


class RegistryChain(_Model):
    """A chain whose events the node watches for the registry's event-triggered configs."""

    rpc_url: str
    confirmations: int = Field(1, ge=0, description="Blocks an event waits behind the head before it fires")
    start_block: int | None = Field(None, ge=0, description="First block when no cursor is saved; unset: the head")
    poll_interval: float = Field(1.0, gt=0)
    batch_blocks: int = Field(1000, ge=1)


class RegistryConfig(_Model):
    """The task registry (seed 004) and the node as one of its relayers."""

    enabled: bool = True
    chain_id: int = Field(1, ge=1, description="chainId of the registry's EIP-712 domain")
    oracles: list[str] = Field(default_factory=list, description="Addresses whose oracle signatures count")
    relayers: list[str] = Field(default_factory=list, description="Addresses allowed to submit executions")
    relayer_key: SecretStr | None = Field(None, description="The node's relayer key; unset: no cron relaying")
    oracle_max_age: float = Field(300.0, gt=0)
    nonce_ttl: float = Field(300.0, gt=0)
    token_ttl: float = Field(86400.0, gt=0)
    tasks: dict[str, RegistryTaskRoute] = {}
    # Missed cron ticks (node down or busy): "latest" fires the most recent missed tick once if
    # it is at most catch_up_window seconds old; "skip" never fires a missed tick.
    missed_ticks: Literal["latest", "skip"] = "latest"
    catch_up_window: float = Field(3600.0, ge=0)
    auction_seconds: float = Field(0.0, ge=0, description="Sign the best proposal this long after the first; 0: on request")
    # Chains watched for event triggers: {chainId: rpc_url} or {chainId: {rpc_url, confirmations, ...}}.
    chains: dict[int, RegistryChain] = {}
    # Sign-in (EIP-4361): the domain and URI the message must name; unset: the node's host:port.
    auth_domain: str | None = None
    auth_uri: str | None = None
    auth_clock_skew: float = Field(60.0, ge=0, description="Seconds an Issued At may lie in the future")
    # Maintainer and config signatures without nonce/deadline (the seed's format) are accepted once
    # each; false refuses them.
    legacy_signatures: bool = True

    @field_validator("chains", mode="before")
    @classmethod
    def _chain_urls(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"rpc_url": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _chains_need_a_relayer(self) -> RegistryConfig:
        if self.chains and self.relayer_key is None:
            raise ValueError("chains: the node relays events with its relayer_key, which is not set")
        return self

    @field_validator("oracles", "relayers")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return _addresses(value)


class ObserveConfig(_Model):
    """Metrics (/metrics), the operator status endpoint and page, and the problem watchdog."""

    enabled: bool = True
    interval: float = Field(5.0, gt=0, description="Seconds between watchdog checks")
    cursor_stall_seconds: float = Field(60.0, gt=0, description="Chain cursor unchanged this long while behind")
    subscription_failures: int = Field(3, ge=1, description="Failed attempts of a subscription that raise a problem")
    container_restarts: int = Field(3, ge=1, description="Restarts within restart_window that raise a problem")
    restart_window: float = Field(600.0, gt=0)


class NodeConfig(_Model):
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    docker: DockerConfig = DockerConfig()
    manage_containers: bool = True
    startup_wait: float = Field(60.0, ge=0, description="Seconds to wait for containers to answer")
    containers: list[ContainerConfig] = []
    log: LogConfig = LogConfig()
    chain: ChainConfig = ChainConfig()
    cre: CreConfig = CreConfig()
    gateway: GatewayConfig = GatewayConfig()
    registry: RegistryConfig = RegistryConfig()
    observe: ObserveConfig = ObserveConfig()

    def _swarm_fields_consistent(self) -> None:
        swarm = self.docker.mode == "swarm"
        if swarm and not self.manage_containers:
            raise ValueError("docker.mode: swarm needs manage_containers true (the node runs the services)")
        for index, c in enumerate(self.containers):
            where = f"containers.{index}"
            if not swarm:
                for name, used in (("replicas", c.replicas != 1), ("placement", bool(c.placement)),
                                   ("resources", c.resources.is_set())):
                    if used:
                        raise ValueError(f"{where}.{name}: only used with docker.mode: swarm")
            elif c.gpu and c.url is None:
                raise ValueError(f"{where}.gpu: in swarm mode ask for GPUs with resources.generic "
                                 "(e.g. {NVIDIA-GPU: 1}) and a placement constraint")

    @model_validator(mode="after")
    def _containers_consistent(self) -> NodeConfig:
        seen: set[str] = set()
        for index, container in enumerate(self.containers):
            where = f"containers.{index}"
            if container.id in seen:
                raise ValueError(f"{where}.id: duplicate container id {container.id!r}")
            seen.add(container.id)
            if container.url is None:
                if self.manage_containers and not (container.image or container.build):
                    raise ValueError(f"{where}.image: a managed container needs image or build (or url)")
                if not self.manage_containers and container.port is None:
                    raise ValueError(
                        f"{where}: with manage_containers false, give url or port of the running service"
                    )
        self._swarm_fields_consistent()
        known = {c.id for c in self.containers}
        for index, pipeline in enumerate(self.chain.pipelines):
            unknown = [c for c in pipeline if c not in known]
            if unknown or not pipeline:
                raise ValueError(f"chain.pipelines.{index}: unknown or empty container chain {pipeline}")
        for cid, route in self.registry.tasks.items():
            unknown = [c for c in route.containers if c not in known]
            if unknown:
                raise ValueError(f"registry.tasks.{cid}.containers: unknown container(s) {unknown}")
        for action_type, route in self.cre.actions.items():
            unknown = [c for c in route.containers if c not in known]
            if unknown:
                raise ValueError(f"cre.actions.{action_type}.containers: unknown container(s) {unknown}")
        return self


def substitute_env(value: Any, env: dict[str, str], path: str = "") -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of a parsed YAML tree."""
    if isinstance(value, dict):
        return {k: substitute_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")

        return _ENV_REF.sub(repl, value)
    return value


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config", env: dict[str, str] | None = None) -> NodeConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    data = substitute_env(data, dict(os.environ) if env is None else env)
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_config(path: str | Path, env: dict[str, str] | None = None) -> NodeConfig:
    """Read, substitute and validate a config file. Relative paths inside it (storage,
    build contexts, log file) are resolved against the file's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    config = parse_config(raw, str(path), env)
    return resolve_paths(config, path.resolve().parent)


def resolve_paths(config: NodeConfig, base: Path) -> NodeConfig:
    def absolute(p: str) -> str:
        return p if p == ":memory:" or os.path.isabs(p) else str(base / p)

    containers = [
        c.model_copy(update={"build": c.build.model_copy(update={"context": absolute(c.build.context)})})
        if c.build
        else c
        for c in config.containers
    ]
    update: dict[str, Any] = {
        "storage": config.storage.model_copy(update={"path": absolute(config.storage.path)}),
        "containers": containers,
    }
    oauth = config.gateway.oauth
    providers = {name: p.model_copy(update={"jwks_file": absolute(p.jwks_file)}) if p.jwks_file else p
                 for name, p in oauth.providers.items()}
    update["gateway"] = config.gateway.model_copy(
        update={"master_key_path": absolute(config.gateway.master_key_path),
                "oauth": oauth.model_copy(update={"providers": providers})})
    if config.log.path:
        update["log"] = config.log.model_copy(update={"path": absolute(config.log.path)})
    return config.model_copy(update=update)
