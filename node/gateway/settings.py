"""Gateway flags: config.yaml values, falling back to the variables the seed names."""

from __future__ import annotations

import os

from node.config import GatewayConfig, env_flag


def gateway_flags(config: GatewayConfig, env: dict[str, str] | None = None) -> tuple[bool, float]:
    env = dict(os.environ) if env is None else env
    required = config.hmac_required
    if required is None:
        required = env_flag(env.get("NULLRUN_HMAC_REQUIRED"))
    max_age = config.hmac_max_age
    if max_age is None:
        try:
            max_age = float(env.get("NULLRUN_HMAC_MAX_AGE_SECS", "300"))
        except ValueError:
            max_age = 300.0
    return required, max_age
