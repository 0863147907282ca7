"""The `cre:` section: the app <-> CRE runtime bridge (seed 000), the backend callbacks
(seed 001 §3), routed actions and the local workflow runtime.

Unset secrets and flags fall back to the environment variables the seeds name (KEEPR_API_KEY,
CRE_RUNTIME_HMAC_SECRET, CRE_GATEWAY_URL, CRE_HTTP_TRIGGER_PRIVATE_KEY, …); they are read once,
while the config is parsed, from the validation context's env (default: os.environ)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from node.fields import Address, ConfigModel, context_env, env_flag, is_unset

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
