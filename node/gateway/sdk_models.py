"""Bodies of the SDK endpoints as the published nullrun SDK sends them (and as the seed's own
examples do). The SDK adds many fields the gateway has no use for (trace ids, digests, business
impact envelopes), so unknown fields are ignored here; the fields the gateway reads are
validated and a bad one is a 400 naming it. Numbers must be finite (`Infinity`, `NaN` and `1e999`
are 400s): an infinite cost once made /gate fail with an OverflowError."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from node.gateway.models import WORKFLOW_ID, finite_json

UUIDISH = r"^[A-Za-z0-9_.:-]{1,128}$"


class _SdkBody(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class SdkGate(_SdkBody):
    """POST /gate (and the legacy /check): a binary pre-flight that mints an execution id."""

    workflow_id: str | None = Field(None, pattern=WORKFLOW_ID)
    estimated_cost_usd: float | None = Field(None, ge=0)
    model: str | None = Field(None, max_length=200)
    estimated_tokens: int | None = Field(None, ge=0, le=2**63 - 1)
    max_output_tokens: int | None = Field(None, ge=0, le=2**63 - 1)
    tool: str | None = Field(None, max_length=200)
    tools: list[str] | None = Field(None, max_length=100)


class SdkExecute(_SdkBody):
    """POST /execute: full policy evaluation for one call."""

    workflow_id: str | None = Field(None, pattern=WORKFLOW_ID)
    execution_id: str | None = Field(None, pattern=UUIDISH)
    estimated_cost_usd: float | None = Field(None, ge=0)
    model: str | None = Field(None, max_length=200)
    tool: str | None = Field(None, max_length=200)
    tools: list[str] | None = Field(None, max_length=100)
    container: str | None = Field(None, max_length=200)


class SdkTrackEvent(_SdkBody):
    """One cost/usage event (POST /track, or an item of /track/batch). The SDK reports tokens and
    the model; the cost is then priced from `gateway.model_prices` unless the event names it."""

    workflow_id: str | None = Field(None, pattern=WORKFLOW_ID)
    event_id: str | None = Field(None, max_length=128)
    type: str | None = Field(None, max_length=100)
    cost_usd: float | None = Field(None, ge=0)
    model: str | None = Field(None, max_length=200)
    tokens: int | None = Field(None, ge=0, le=2**63 - 1)
    input_tokens: int | None = Field(None, ge=0, le=2**63 - 1)
    output_tokens: int | None = Field(None, ge=0, le=2**63 - 1)
    latency_ms: float | None = Field(None, ge=0)
    tool_name: str | None = Field(None, max_length=200)
    metadata: dict[str, Any] | None = None
    reservation_id: str | None = Field(None, pattern=UUIDISH)

    _finite_metadata = field_validator("metadata")(finite_json)

    @model_validator(mode="after")
    def _has_usage(self) -> SdkTrackEvent:
        if self.cost_usd is None and self.tokens is None and self.input_tokens is None and self.output_tokens is None:
            raise ValueError("cost_usd: Field required (or tokens / input_tokens / output_tokens)")
        return self


class SdkTrackBatch(_SdkBody):
    events: list[SdkTrackEvent] = Field(min_length=1, max_length=100)


class SdkCancel(_SdkBody):
    execution_id: str = Field(pattern=UUIDISH)
    reason: str | None = Field(None, max_length=500)


class SdkHeartbeat(_SdkBody):
    chain_id: str = Field(min_length=1, max_length=128)
