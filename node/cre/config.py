"""The `cre:` section: the app <-> CRE runtime bridge (seed 000), the backend callbacks
(seed 001 §3), routed actions and the local workflow runtime.

Unset secrets and flags fall back to the environment variables the seeds name (KEEPR_API_KEY,
CRE_RUNTIME_HMAC_SECRET, CRE_GATEWAY_URL, CRE_HTTP_TRIGGER_PRIVATE_KEY, …); they are read once,
while the config is parsed, from the validation context's env (default: os.environ)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from node.fields import Address, ConfigModel, HttpUrl, Network, context_env, env_flag, is_unset

_WORKFLOW_ID = re.compile(r"[0-9a-f]{64}")

# config key -> the environment variables that fill it when unset (first non-empty wins)
_SECRET_FALLBACKS = {
    "api_key": ("KEEPR_API_KEY",),
    "hmac_secret": ("CRE_RUNTIME_HMAC_SECRET",),
    "trigger_private_key": ("CRE_HTTP_TRIGGER_PRIVATE_KEY", "CRE_TRIGGER_SIGNER_PRIVATE_KEY"),
    "backend_api_key": ("CRE_BACKEND_API_KEY",),
    "gateway_url": ("CRE_GATEWAY_URL",),
}
_FLAG_FALLBACKS = {
    "enforce_hmac": "CRE_RUNTIME_ENFORCE_HMAC",
    "allow_unsigned_when_hmac_configured": "CRE_RUNTIME_ALLOW_UNSIGNED_WHEN_HMAC_CONFIGURED",
}

DEFAULT_INGEST_POLICY = {
    "runtime-indexer-block": ["block"],
    "runtime-indexer-data-fetch": ["metrics"],
    "runtime-reference-feeds": ["feeds"],
}


class CreActionRoute(ConfigModel):
    """An enqueued CRE action of this `actionType` runs as a job on these containers."""

    containers: list[str] = Field(min_length=1)


class CreFunding(ConfigModel):
    """What createAgentKey pre-signs for a new agent: an ETH transfer from the backend signer and
    the agent's approvals of the PredictionVault (USDC allowance, conditional tokens)."""

    eth_wei: int = Field(10**16, ge=0)
    usdc_allowance: int = Field(2**256 - 1, ge=0)


class CreRuntimeConfig(ConfigModel):
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
    forwarder_address: Address
    sub0_address: Address
    vault_address: Address
    conditional_tokens_address: Address
    usdc_address: Address
    backend_url: str | None = None
    funding: CreFunding | None = None
    quote_ttl: int = Field(300, gt=0, description="Seconds a DON quote from lmsrPricing stays valid")

    @model_validator(mode="after")
    def _keyed(self) -> CreRuntimeConfig:
        if self.enabled and not (self.api_key and self.api_key.get_secret_value()) and not self.allow_unauthenticated:
            raise ValueError("cre.runtime needs api_key (anyone could otherwise have the DON, backend and agent "
                             "keys sign); set allow_unauthenticated: true only to run it open on purpose")
        return self


_WORKFLOW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class CreWasmConfig(ConfigModel):
    """The WASM host that runs CRE workflows built with @chainlink/cre-sdk (node/cre/wasm/)."""

    workers: int = Field(2, ge=1, le=64, description="Executions run at once (threads)")
    timeout: float = Field(60.0, gt=0, le=3600, description="Seconds one execution may take, capability calls included")
    memory_mb: int = Field(256, ge=16, le=4096, description="Linear memory limit of one execution")
    max_response_bytes: int = Field(5 << 20, ge=1024, le=64 << 20)
    max_logs: int = Field(1000, ge=0, le=100_000, description="Log lines kept per execution and mode")
    max_capability_calls: int = Field(200, ge=1, le=10_000)
    http_allowed_networks: list[Network] = Field(
        [], description="Networks http-actions may reach besides public addresses (e.g. 127.0.0.1/32 for tests)")
    http_timeout: float = Field(10.0, gt=0, le=300)
    max_http_response_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    chains: dict[str, HttpUrl] = Field({}, description="EVM chains for the evm capability: a chain selector "
                                                       "(or a known name such as anvil-devnet) -> JSON-RPC URL")
    don_key: SecretStr | None = Field(None, description="Signs the workflows' reports (consensus Report); "
                                                        "unset: reports are refused")
    transmitter_key: SecretStr | None = Field(None, description="Sends WriteReport transactions (default: don_key)")
    forwarders: dict[str, Address] = Field({}, description="Chain (as in chains) -> the forwarder contract "
                                                          "WriteReport sends reports through")
    don_id: int = Field(1, ge=0, le=2**32 - 1, description="The DON id written in report headers")
    log_confirmations: int = Field(12, ge=0, le=1000, description="Blocks behind the head an EVM log trigger "
                                                                  "of SAFE/FINALIZED confidence waits (LATEST: 0)")
    log_poll_interval: float = Field(1.0, gt=0, le=60)
    toolchain_dir: str | None = Field(None, description="Where `node-daemon cre setup` installed the npm toolchain "
                                                        "(default: build/cre-toolchain in the project)")
    api_key: SecretStr | None = Field(None, description="Callers of the /api/cre/wasm routes (HTTP triggers, "
                                                        "executions) send Authorization: Bearer <this>")
    keep_executions: int = Field(10_000, ge=10, description="Execution records kept (the oldest are pruned)")

    @field_validator("api_key", "don_key", "transmitter_key", mode="before")
    @classmethod
    def _env_keys(cls, value: Any, info: ValidationInfo) -> Any:
        """'env:NAME' reads the key from the environment (when the config is parsed)."""
        if isinstance(value, str) and value.startswith("env:"):
            found = context_env(info).get(value[4:])
            if not found:
                raise ValueError(f"environment variable {value[4:]} is not set")
            return found
        return value

    @field_validator("chains")
    @classmethod
    def _selectors(cls, value: dict[str, str]) -> dict[str, str]:
        from node.cre.wasm.capabilities import CHAIN_SELECTORS

        for key in value:
            if not key.isdigit() and key not in CHAIN_SELECTORS:
                raise ValueError(f"{key!r} is neither a chain selector nor a known chain name "
                                 f"({', '.join(sorted(CHAIN_SELECTORS))})")
        return value

    @model_validator(mode="after")
    def _forwarders(self) -> CreWasmConfig:
        for key in self.forwarders:
            if key not in self.chains:
                raise ValueError(f"forwarders: {key!r} is not one of chains")
        if self.forwarders and not (self.don_key and self.don_key.get_secret_value()):
            raise ValueError("forwarders: need don_key (reports are signed by it)")
        return self

    def forwarder_selectors(self) -> dict[int, tuple[str, str]]:
        """selector -> (forwarder address, transmitter key)."""
        from node.cre.wasm.capabilities import CHAIN_SELECTORS

        key = (self.transmitter_key or self.don_key)
        secret = key.get_secret_value() if key else ""
        return {int(k) if k.isdigit() else CHAIN_SELECTORS[k]: (address, secret) for k, address in self.forwarders.items()}

    def selectors(self) -> dict[int, str]:
        from node.cre.wasm.capabilities import CHAIN_SELECTORS

        return {int(k) if k.isdigit() else CHAIN_SELECTORS[k]: url for k, url in self.chains.items()}


class CreWasmWorkflow(ConfigModel):
    """One CRE workflow this node runs: its file (.ts built with `cre build`, a bundled .js, or a
    compiled .wasm), the config its `Runner` parses, and its secrets (namespace "main")."""

    name: str
    file: str
    config: dict[str, Any] | list[Any] | str | None = Field(
        None, description="Passed to the workflow as bytes: JSON for a mapping or list, as written for a string")
    secrets: dict[str, SecretStr] = Field({}, description="Secret id -> value; a value 'env:NAME' is read from "
                                                          "the environment when the config is parsed")
    cron: bool = Field(True, description="Fire the workflow's cron triggers on schedule")
    owner: Address | None = Field(None, description="Workflow owner written in report headers (default: the "
                                                   "DON key's address)")
    workflow_id: str | None = Field(None, description="64-hex id gateway-form triggers name it by (default: "
                                                      "derived from the name, the built program and the config)")
    enabled: bool = True

    @field_validator("workflow_id")
    @classmethod
    def _workflow_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.lower().removeprefix("0x")
        if not _WORKFLOW_ID.fullmatch(value):
            raise ValueError("expected 64 hex characters")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _WORKFLOW_NAME.fullmatch(value):
            raise ValueError("use 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)")
        return value

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        if not value.endswith((".ts", ".mts", ".js", ".wasm")):
            raise ValueError("expected a .ts/.mts workflow, a bundled .js or a compiled .wasm")
        return value

    @field_validator("secrets", mode="before")
    @classmethod
    def _env_secrets(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        env = context_env(info)
        out = {}
        for key, item in value.items():
            if isinstance(item, str) and item.startswith("env:"):
                name = item[4:]
                if not env.get(name):
                    raise ValueError(f"{key}: environment variable {name} is not set")
                item = env[name]
            out[key] = item
        return out

    def config_bytes(self) -> bytes:
        import json

        if self.config is None:
            return b""
        if isinstance(self.config, str):
            return self.config.encode()
        return json.dumps(self.config, separators=(",", ":")).encode()


class CreConfig(ConfigModel):
    """The app <-> CRE runtime bridge (seed 000) and the backend callbacks (seed 001 §3).
    Unset secrets fall back to the environment variables the seeds name (see _SECRET_FALLBACKS)."""

    enabled: bool = True
    api_key: SecretStr | None = None  # KEEPR_API_KEY
    enforce_hmac: bool = False  # CRE_RUNTIME_ENFORCE_HMAC
    hmac_secret: SecretStr | None = None  # CRE_RUNTIME_HMAC_SECRET
    allow_unsigned_when_hmac_configured: bool = False  # CRE_RUNTIME_ALLOW_UNSIGNED_WHEN_HMAC_CONFIGURED
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
    wasm: CreWasmConfig = CreWasmConfig()
    workflows: list[CreWasmWorkflow] = Field([], description="CRE workflows (cre-sdk) this node runs")

    @field_validator("workflows")
    @classmethod
    def _unique_workflows(cls, value: list[CreWasmWorkflow]) -> list[CreWasmWorkflow]:
        seen: set[str] = set()
        for workflow in value:
            if workflow.name in seen:
                raise ValueError(f"workflow name {workflow.name!r} is used twice")
            seen.add(workflow.name)
        return value

    @model_validator(mode="before")
    @classmethod
    def _env_fallbacks(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        env = context_env(info)
        data = dict(data)
        for key, names in _SECRET_FALLBACKS.items():
            if is_unset(data.get(key)):
                found = next((env[n] for n in names if env.get(n)), None)
                if found is not None or key == "gateway_url":
                    data[key] = found
        for key, name in _FLAG_FALLBACKS.items():
            if data.get(key) is None:
                data[key] = env_flag(env.get(name))
        if data.get("allowed_trigger_workflow_ids") is None and env.get("CRE_RUNTIME_ALLOWED_TRIGGER_WORKFLOW_IDS"):
            data["allowed_trigger_workflow_ids"] = [
                i.strip() for i in env["CRE_RUNTIME_ALLOWED_TRIGGER_WORKFLOW_IDS"].split(",") if i.strip()]
        return data

    @field_validator("allowed_trigger_workflow_ids")
    @classmethod
    def _workflow_ids(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = []
        for item in value:
            item = item.lower().removeprefix("0x")
            if not _WORKFLOW_ID.fullmatch(item):
                raise ValueError(f"{item!r} is not a 64-hex workflow id")
            out.append(item)
        return out

    def action_routes(self) -> dict[str, list[str]]:
        """actionType -> the container chain its jobs run on."""
        return {action: list(route.containers) for action, route in self.actions.items()}
