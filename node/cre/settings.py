"""CRE settings: config.yaml values, falling back to the environment variables the seeds name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from node.config import CreConfig, env_flag


@dataclass(frozen=True)
class CreSettings:
    api_key: str | None
    enforce_hmac: bool
    hmac_secret: str | None
    allow_unsigned: bool
    skew_seconds: float
    ingest_policy: dict[str, frozenset[str]]
    decision_workflows: frozenset[str]
    max_readback: int
    gateway_url: str | None
    trigger_private_key: str | None
    allowed_trigger_workflow_ids: frozenset[str] | None
    gateway_timeout: float
    backend_api_key: str | None
    action_routes: dict[str, list[str]] = field(default_factory=dict)
    action_lease_seconds: float = 60.0

    @classmethod
    def from_config(cls, config: CreConfig, env: dict[str, str] | None = None) -> CreSettings:
        env = dict(os.environ) if env is None else env

        def secret(value, *names: str) -> str | None:
            if value is not None and value.get_secret_value():
                return value.get_secret_value()
            return next((env[n] for n in names if env.get(n)), None)

        def flag(value: bool | None, name: str) -> bool:
            return value if value is not None else env_flag(env.get(name))

        allowed = config.allowed_trigger_workflow_ids
        if allowed is None and env.get("CRE_RUNTIME_ALLOWED_TRIGGER_WORKFLOW_IDS"):
            allowed = [
                i.strip().lower().removeprefix("0x")
                for i in env["CRE_RUNTIME_ALLOWED_TRIGGER_WORKFLOW_IDS"].split(",")
                if i.strip()
            ]
        return cls(
            api_key=secret(config.api_key, "KEEPR_API_KEY"),
            enforce_hmac=flag(config.enforce_hmac, "CRE_RUNTIME_ENFORCE_HMAC"),
            hmac_secret=secret(config.hmac_secret, "CRE_RUNTIME_HMAC_SECRET"),
            allow_unsigned=flag(config.allow_unsigned_when_hmac_configured,
                                "CRE_RUNTIME_ALLOW_UNSIGNED_WHEN_HMAC_CONFIGURED"),
            skew_seconds=config.skew_seconds,
            ingest_policy={w: frozenset(kinds) for w, kinds in config.ingest_policy.items()},
            decision_workflows=frozenset(config.decision_workflows),
            max_readback=config.max_readback,
            gateway_url=config.gateway_url or env.get("CRE_GATEWAY_URL") or None,
            trigger_private_key=secret(config.trigger_private_key, "CRE_HTTP_TRIGGER_PRIVATE_KEY",
                                       "CRE_TRIGGER_SIGNER_PRIVATE_KEY"),
            allowed_trigger_workflow_ids=frozenset(allowed) if allowed is not None else None,
            gateway_timeout=config.gateway_timeout,
            backend_api_key=secret(config.backend_api_key, "CRE_BACKEND_API_KEY"),
            action_routes={k: list(v.containers) for k, v in config.actions.items()},
            action_lease_seconds=config.action_lease_seconds,
        )
