"""The `observe:` section: metrics, the operator status page and the problem watchdog."""

from __future__ import annotations

from pydantic import Field

from node.fields import ConfigModel


class ObserveConfig(ConfigModel):
    """Metrics (/metrics), the operator status endpoint and page, and the problem watchdog."""

    enabled: bool = True
    interval: float = Field(5.0, gt=0, description="Seconds between watchdog checks")
    cursor_stall_seconds: float = Field(60.0, gt=0, description="Chain cursor unchanged this long while behind")
    subscription_failures: int = Field(3, ge=1, description="Failed attempts of a subscription that raise a problem")
    container_restarts: int = Field(3, ge=1, description="Restarts within restart_window that raise a problem")
    restart_window: float = Field(600.0, gt=0)
