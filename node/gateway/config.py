"""The `gateway:` section: the governance gateway (seed 002), its OAuth sign-in and prices.

`hmac_required` and `hmac_max_age` fall back to the variables the seed names
(NULLRUN_HMAC_REQUIRED, NULLRUN_HMAC_MAX_AGE_SECS), read once while the config is parsed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from node.fields import ConfigModel, Network, context_env, env_flag

DEFAULT_HMAC_MAX_AGE = 300.0


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
    master_key_path: str = Field("node.key", description="AES key sealing API secret keys (created if missing)")
    reservation_ttl: float = Field(300.0, gt=0)
    # Jobs without X-Workflow-Id are bound to the workflow named here for their source
    # (offchain, stream, chain, cre, registry), so an operator can pause or kill that traffic.
    default_workflows: dict[str, str] = {}
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
