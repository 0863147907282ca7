"""Field types and the base model shared by every subsystem's config (and, where they check
the same thing, by the request models): one definition of an address, a network, a URL, and
one way for a config section to read its environment-variable fallbacks.

Fallbacks are resolved once, while the file is parsed: a section's validator reads the
environment from the validation context (`context={"env": {...}}`, so tests pass their own),
or `os.environ` when none is given. Nothing reads the environment after that.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr, ValidationInfo

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
HEX32_PATTERN = r"^0x[0-9a-fA-F]{64}$"
HEX_BYTES_PATTERN = r"^0x([0-9a-fA-F]{2})*$"  # whole bytes, possibly none
_ADDRESS = re.compile(ADDRESS_PATTERN)
_HTTP_URL = re.compile(r"^https?://[^/\s]+")


class ConfigModel(BaseModel):
    """A config section: unknown keys are errors, values never change after parsing."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _address(value: str) -> str:
    if not _ADDRESS.fullmatch(value):
        raise ValueError(f"{value!r} is not a 0x-prefixed 20-byte address")
    return value


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a network (CIDR)") from None
    return value


def _http_url(value: str) -> str:
    if not _HTTP_URL.match(value):
        raise ValueError("must be an http(s):// URL")
    return value.rstrip("/")


# A 0x-prefixed 20-byte address, kept as written.
Address = Annotated[str, AfterValidator(_address)]
# The same, lower-cased (for allow-lists compared against lower-cased addresses).
LowerAddress = Annotated[str, AfterValidator(lambda v: _address(v).lower())]
# An IPv4/IPv6 network in CIDR notation ("10.0.0.0/8"; a bare address is a /32 or /128).
Network = Annotated[str, AfterValidator(_network)]
# An http(s):// URL without a trailing slash.
HttpUrl = Annotated[str, AfterValidator(_http_url)]


def env_flag(value: str | None) -> bool:
    """An environment variable read as a boolean: 1/true/yes/on (any case) is true."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def context_env(info: ValidationInfo) -> Mapping[str, str]:
    """The environment a config is parsed against: the validation context's "env", else os.environ."""
    context = info.context
    env = context.get("env") if isinstance(context, dict) else None
    return os.environ if env is None else env


def is_unset(value: Any) -> bool:
    """A config value that lets the environment fill in: missing, null or empty."""
    if isinstance(value, SecretStr):
        return not value.get_secret_value()
    return value is None or value == ""


def reveal(secret: SecretStr | None) -> str | None:
    """A secret's value, None when unset or empty."""
    return (secret.get_secret_value() or None) if secret is not None else None
