"""The `server:` and `log:` sections: the HTTP listener, its limits, who may reach the operator
routes, and where the process logs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from node.fields import ConfigModel, Network


class RateLimitConfig(ConfigModel):
    """Per client IP, per route. `num_requests: 0` turns limiting off."""

    num_requests: int = Field(0, ge=0)
    period: float = Field(60.0, gt=0)


class ServerConfig(ConfigModel):
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
    status_allowed_ips: list[Network] = ["127.0.0.0/8", "::1/128", "172.16.0.0/12"]
    shutdown_grace: float = Field(10.0, ge=0, description="Seconds in-flight jobs get on shutdown")
    # Bearer token for the operator endpoints (/metrics, /api/node/*). Without it they answer only
    # direct loopback connections: not a trusted proxy, no forwarding header.
    admin_token: SecretStr | None = None
    max_inflight_jobs: int = Field(10_000, ge=0, description="Jobs from HTTP clients running at once; "
                                   "over it 429 with Retry-After (0: no cap)")
    header_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a request's headers")
    keepalive_timeout: float = Field(75.0, gt=0, description="Seconds an idle keep-alive connection stays open")
    max_json_depth: int = Field(64, ge=2, le=1000, description="Deepest JSON nesting accepted from outside")
    body_timeout: float = Field(60.0, gt=0, description="Seconds a request body may take after its headers; "
                                "over it 408 and the connection closes")
    body_min_rate: int = Field(1024, ge=0, description="Bytes per second a request body must average after its "
                               "first 2 s; slower is 408 and the connection closes (0: no minimum)")
    max_connections_per_ip: int = Field(256, ge=0, description="Open connections one client address (an IPv6 /64) "
                                        "may hold; more are answered 429 and closed (0: no cap). Trusted proxies "
                                        "are not capped")
    # Reverse proxies in front of the node. A request whose TCP peer is in one of these networks
    # is from the client X-Forwarded-For names (its rightmost entry that is not a proxy itself);
    # from anyone else the header is ignored. Empty: the TCP peer is always the client.
    trusted_proxies: list[Network] = []
    fast_lane: bool = Field(True, description="Serve plain `POST /api/jobs` and `GET /api/jobs?id=` requests on the "
                            "node's own light HTTP path (the same answers at about half the CPU; any other request "
                            "moves its connection to aiohttp). false: aiohttp serves every request")


class LogConfig(ConfigModel):
    """The `log:` section (node/logs.py writes the lines)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["kv", "json"] = "kv"
    path: str | None = Field(None, description="Also write logs to this file")
    max_file_size: int | None = Field(None, gt=0, description="Bytes: rotate the log file at this size "
                                      "(unset: never rotated)")
    backup_count: int = Field(2, ge=0, description="Rotated log files kept (with max_file_size)")
