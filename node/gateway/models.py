"""Request bodies of the gateway API (`/api/v1`), validated at the edge."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from node.server.http import parse_json, parse_model

Role = Literal["owner", "admin", "member", "viewer"]
M = TypeVar("M", bound=BaseModel)
WORKFLOW_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Body):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(min_length=1, max_length=200)
    org_name: str = Field(min_length=1, max_length=200)


class OAuthRegisterRequest(_Body):
    provider: str = Field(min_length=1, max_length=50)
    subject: str = Field(min_length=1, max_length=200)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)
    name: str = Field(min_length=1, max_length=200)
    org_name: str | None = Field(None, max_length=200)
    # OpenID Connect id_token proving (provider, subject, email); see node/gateway/oauth.py.
    id_token: str | None = Field(None, min_length=1, max_length=16384)


class LoginRequest(_Body):
    email: str
    password: str


class WorkflowCreate(_Body):
    id: str | None = Field(None, pattern=WORKFLOW_ID)
    name: str = Field(min_length=1, max_length=200)
    budget_usd: float | None = Field(None, ge=0)


class WorkflowPatch(_Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    budget_usd: float | None = Field(None, ge=0)


class TimeWindow(_Body):
    """Matches when the current time (UTC) is within [start, end) on one of `days`."""

    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None


class RateMatch(_Body):
    """Matches when the workflow already had `max` allowed executions in the last `per_seconds`."""

    max: int = Field(ge=0)
    per_seconds: float = Field(gt=0, le=86400)


class PolicyMatch(_Body):
    """All given conditions must hold (AND); an empty match matches everything."""

    workflows: list[str] | None = None
    containers: list[str] | None = None
    models: list[str] | None = None
    tools: list[str] | None = None
    cost_gt: float | None = Field(None, ge=0)
    time_window: TimeWindow | None = None
    rate: RateMatch | None = None


class PolicyCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    priority: int = Field(100, ge=0, le=1_000_000)
    enabled: bool = True
    action: Literal["allow", "deny"]
    reason: str | None = Field(None, max_length=500)
    match: PolicyMatch = PolicyMatch()


class PolicyPatch(_Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    priority: int | None = Field(None, ge=0, le=1_000_000)
    enabled: bool | None = None
    action: Literal["allow", "deny"] | None = None
    reason: str | None = Field(None, max_length=500)
    match: PolicyMatch | None = None


class PolicyToggle(_Body):
    policy_id: str
    enabled: bool | None = None


class ApiKeyCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    workflow_id: str | None = Field(None, pattern=WORKFLOW_ID)


class MemberPatch(_Body):
    role: Role


class InviteCreate(_Body):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)
    role: Role = "member"

    @field_validator("role")
    @classmethod
    def _not_owner(cls, value: str) -> str:
        if value == "owner":
            raise ValueError("an invite cannot grant the owner role")
        return value


class OrgPatch(_Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    settings: dict[str, Any] | None = None


class AlertChannelCreate(_Body):
    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://", max_length=2000)
    enabled: bool = True


class NotificationSettings(_Body):
    budget_alerts: bool = True
    thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    channels: list[str] | None = None

    @field_validator("thresholds")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < t <= 1 for t in value):
            raise ValueError("thresholds are fractions of the budget in (0, 1]")
        return sorted(set(value))


async def read_model(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model` (400 naming the field otherwise)."""
    return parse_model(model, parse_json(await request.read()))
