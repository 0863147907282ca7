"""The `registry:` section: the task registry (seed 004) and the node as one of its relayers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from node.chain.config import MAX_RPCS, RpcEndpointConfig, check_rpcs, rpc_endpoints
from node.fields import ConfigModel, LowerAddress
from node.server.config import RateLimitConfig


class RegistryTaskRoute(ConfigModel):
    """A task (by its CID) this node runs as a relayer: the container chain that executes it, and
    whose configs of it the node runs. Registration is open, so anyone can link a relayed CID to a
    project of their own: without a list the node would run (and sign with its key) every
    outsider's config. The operator names them, or says `anyone: true` knowingly."""

    containers: list[str] = Field(min_length=1)
    owners: list[LowerAddress] = Field(default_factory=list, description="Project owners whose configs the node runs")
    projects: list[str] = Field(default_factory=list, description="Projects whose configs the node runs")
    anyone: bool = Field(False, description="Run every project's configs of this task, whoever owns it")

    @model_validator(mode="after")
    def _someone(self) -> RegistryTaskRoute:
        if not (self.owners or self.projects or self.anyone):
            raise ValueError("owners, projects: name the project owners or projects whose configs this node runs "
                             "(or set anyone: true)")
        return self


class RegistryRpc(ConfigModel):
    """One RPC of `registry.chains.<id>.rpc_urls`. The watcher only reads (no transactions, no
    head subscription), so there is no send_only or ws_url here."""

    url: str = Field(pattern=r"^https?://[^/\s]+", description="The endpoint's HTTP(S) JSON-RPC URL")
    weight: int = Field(1, ge=1, le=1000, description="Preference among healthy endpoints: the highest serves reads")


class RegistryChain(ConfigModel):
    """A chain whose events the node watches for the registry's event-triggered configs. Its RPCs
    are given as `chain:`'s are (one URL, a list, or `rpc_urls` entries with weights), and read
    through the same pool: the healthiest first, a failing one backed off (docs/chain-rpcs.md)."""

    rpc_url: str | list[str] | None = Field(None, description="The chain's RPC, or a list of RPCs (failover in order)")
    rpc_urls: list[RegistryRpc] = Field([], max_length=MAX_RPCS, description="RPCs with weights (after "
                                                                                 "those of rpc_url)")
    rpc_max_lag_blocks: int = Field(5, ge=0, description="An RPC this many blocks behind the best is not read from")
    rpc_health_interval: float = Field(5.0, gt=0, description="Seconds between health checks of every RPC")
    rpc_timeout: float = Field(10.0, gt=0, le=120, description="Seconds one RPC request may take before the next "
                                                              "RPC is tried")
    confirmations: int = Field(1, ge=0, description="Blocks an event waits behind the head before it fires")
    start_block: int | None = Field(None, ge=0, description="First block when no cursor is saved; unset: the head")
    poll_interval: float = Field(1.0, gt=0)
    batch_blocks: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _rpcs(self) -> RegistryChain:
        endpoints = self.endpoints()
        check_rpcs("", self.rpc_url, endpoints)
        if not endpoints:
            raise ValueError("rpc_url: no RPC given (rpc_url or rpc_urls)")
        return self

    def endpoints(self) -> list[RpcEndpointConfig]:
        return rpc_endpoints(self.rpc_url, [RpcEndpointConfig(url=e.url, weight=e.weight) for e in self.rpc_urls])


class RegistryConfig(ConfigModel):
    """The task registry (seed 004) and the node as one of its relayers."""

    enabled: bool = True
    chain_id: int = Field(1, ge=1, description="chainId of the registry's EIP-712 domain")
    oracles: list[LowerAddress] = Field(default_factory=list, description="Addresses whose oracle signatures count")
    relayers: list[LowerAddress] = Field(default_factory=list,
                                         description="Addresses whose signatures count for inputs and executions")
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
    # Chains watched for event triggers: {chainId: rpc_url or [rpc_url, ...]} or
    # {chainId: {rpc_url, rpc_urls, confirmations, ...}}.
    chains: dict[int, RegistryChain] = {}
    # Sign-in (EIP-4361): the domain and URI the message must name; unset: the node's host:port.
    auth_domain: str | None = None
    auth_uri: str | None = None
    auth_clock_skew: float = Field(60.0, ge=0, description="Seconds an Issued At may lie in the future")
    # Maintainer and config signatures without nonce/deadline (the seed's format) are accepted once
    # each; false refuses them.
    legacy_signatures: bool = True
    # What one tenant may ask of the node's relayer and of the inputs route (issue 22).
    min_cron_period: float = Field(60.0, ge=1, description="Shortest gap between two ticks of a cron config, seconds")
    max_configs_per_project: int = Field(20, ge=1, description="Live (not deleted) configs one project may have")
    max_input_bytes: int = Field(131072, ge=1024, description="Largest body POST /api/tasks/{id}/inputs reads")
    max_config_bytes: int = Field(65536, ge=1024, description="Largest config `data`, bytes of canonical JSON "
                                  "(400 naming data)")
    # Each oracle answer costs a signature recovery (milliseconds of CPU each without coincurve).
    max_proposals_per_intent: int = Field(50, ge=1, description="Solver proposals one intent keeps (409 after)")
    max_oracle_responses: int = Field(32, ge=1, description="Oracle responses one POST …/inputs may carry in all")
    input_rate_limit: RateLimitConfig = Field(
        default_factory=lambda: RateLimitConfig(num_requests=60, period=60.0),
        description="Requests per client IP to POST /api/tasks/{id}/inputs; num_requests 0: no limit")

    @field_validator("chains", mode="before")
    @classmethod
    def _chain_urls(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"rpc_url": v} if isinstance(v, (str, list)) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _chains_need_a_relayer(self) -> RegistryConfig:
        if self.chains and self.relayer_key is None:
            raise ValueError("chains: the node relays events with its relayer_key, which is not set")
        return self
