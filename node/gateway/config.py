"""The `gateway:` section: the governance gateway (seed 002), its OAuth sign-in and prices.

`hmac_required` and `hmac_max_age` fall back to the variables the seed names
(NULLRUN_HMAC_REQUIRED, NULLRUN_HMAC_MAX_AGE_SECS), read once while the config is parsed.

What the operator decides about trust (docs/security/gateway.md): whether anyone may register
(`open_registration`), whether `auth/verify` hands the HMAC secret to a caller holding only the
API key (`verify_returns_secret`; never while `hmac_required` is on, or signatures would prove
nothing more than the key), and which org's workflow governs the node's own jobs
(`default_workflows`, always `org_id/workflow_id`: a bare id would bind to whichever org has it,
and registration is open)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from node.fields import ConfigModel, Network, context_env, env_flag
from node.gateway.models import WORKFLOW_ID

DEFAULT_HMAC_MAX_AGE = 300.0
# The sources of the node's own jobs (Admission.source) a default workflow can govern.
JOB_SOURCES = ("offchain", "stream", "chain", "cre", "registry")
_ORG_ID = r"[A-Za-z0-9_-]{1,64}"


class OAuthProvider(ConfigModel):
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


class OAuthConfig(ConfigModel):
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


class ModelPrice(ConfigModel):
    model_config = ConfigDict(**ConfigModel.model_config, allow_inf_nan=False)

    input_usd_per_1k: float = Field(0.0, ge=0)
    output_usd_per_1k: float = Field(0.0, ge=0)


class GatewayConfig(ConfigModel):
    """Governance gateway (seed 002). Unset values fall back to NULLRUN_HMAC_REQUIRED and
    NULLRUN_HMAC_MAX_AGE_SECS."""

    enabled: bool = True
    hmac_required: bool = False
    hmac_max_age: float = Field(DEFAULT_HMAC_MAX_AGE, gt=0)
    reservation_ttl: float = Field(300.0, gt=0)
    # Jobs without X-Workflow-Id are bound to the workflow named here (`org_id/workflow_id`) for
    # their source (offchain, stream, chain, cre, registry), so an operator can pause or kill that
    # traffic; while that workflow does not exist, the source's jobs are refused (503).
    default_workflows: dict[Literal["offchain", "stream", "chain", "cre", "registry"], str] = {}
    # Anyone may create an account (and with it an org and API key) at auth/register and
    # auth/oauth/register. Off: only existing accounts sign in (new users come by invite).
    open_registration: bool = True
    # auth/verify returns the HMAC secret_key to a caller holding only the API key (what the SDK's
    # init expects unless NULLRUN_SECRET_KEY is set). Forced off while hmac_required is on.
    verify_returns_secret: bool | None = None
    ws_buffer: int = Field(1000, ge=10)
    # Alert webhooks may not reach loopback, private, link-local or metadata addresses unless
    # the operator lists the network here (e.g. ["10.20.0.0/16"]).
    webhook_allowed_networks: list[Network] = []
    oauth: OAuthConfig = OAuthConfig()
    # Per WebSocket client: messages queued for it; a client that falls this far behind is dropped.
    ws_queue: int = Field(256, ge=8)
    # Seconds a rotated key's previous secret still verifies (SDKs re-fetch on key_rotated).
    rotation_grace: float = Field(0.0, ge=0)
    # USD per 1000 tokens by model, to price SDK usage events that report tokens but no cost.
    model_prices: dict[str, ModelPrice] = {}

    @model_validator(mode="before")
    @classmethod
    def _env_fallbacks(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        env = context_env(info)
        data = dict(data)
        if data.get("hmac_required") is None:
            data["hmac_required"] = env_flag(env.get("NULLRUN_HMAC_REQUIRED"))
        if data.get("hmac_max_age") is None:
            try:  # an unreadable value means the default (300 s), as before
                data["hmac_max_age"] = float(env.get("NULLRUN_HMAC_MAX_AGE_SECS", DEFAULT_HMAC_MAX_AGE))
            except ValueError:
                data["hmac_max_age"] = DEFAULT_HMAC_MAX_AGE
        return data

    @field_validator("default_workflows")
    @classmethod
    def _org_named(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            org_id, _, workflow_id = target.partition("/")
            if not (re.fullmatch(_ORG_ID, org_id) and re.fullmatch(WORKFLOW_ID, workflow_id)):
                raise ValueError(f"{source}: {target!r} must be 'org_id/workflow_id' (a bare workflow id binds to "
                                 "whichever org creates it, so an outsider could take it over)")
        return value

    @model_validator(mode="after")
    def _secret_only_without_signatures(self) -> GatewayConfig:
        # Unset: on (the SDK's key-only init works) unless signatures are required. Required
        # signatures with a secret any key holder can fetch would prove nothing: forced off.
        returns = self.verify_returns_secret is not False and not self.hmac_required
        if returns != self.verify_returns_secret:
            object.__setattr__(self, "verify_returns_secret", returns)
        return self
