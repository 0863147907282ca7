"""Job types: pydantic models for what arrives over HTTP, dataclasses for what lives inside."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ContainerId = str


class JobLocation(IntEnum):
    """Values of `source` / `destination` in the container protocol (Infernet's JobLocation)."""

    ONCHAIN = 0
    OFFCHAIN = 1
    STREAM = 2


JobStatus = Literal["running", "success", "failed"]


def over_time_limit(seconds: float) -> str:
    """The error of a job stopped by its total time limit (jobs.max_job_seconds)."""
    return f"job exceeded its time limit of {seconds:g}s (jobs.max_job_seconds)"


class JobRequest(BaseModel):
    """`POST /api/jobs` body (Infernet `JobRequest`). Unknown keys are ignored, as the Infernet
    node ignores them, so existing clients keep working."""

    model_config = ConfigDict(extra="ignore")

    containers: list[ContainerId] = Field(min_length=1, max_length=64)
    data: Any = Field(default_factory=dict)
    requires_proof: bool = False


class DelegatedSubscriptionRequest(BaseModel):
    """`POST /api/jobs` body for a delegated (EIP-712 signed) on-chain subscription."""

    model_config = ConfigDict(extra="ignore")

    subscription: dict[str, Any]
    signature: dict[str, Any]
    data: Any = Field(default_factory=dict)


class StatusUpdate(BaseModel):
    """`PUT /api/status` body: a container working out of band records a job's status."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=128)
    status: JobStatus
    containers: list[ContainerId] = Field(min_length=1)
    data: Any = None


@dataclass(slots=True)
class Job:
    id: str
    client: str
    containers: list[str]
    source: str = "offchain"
    status: JobStatus = "running"
    result: dict[str, Any] | None = None
    intermediate: list[dict[str, Any]] = field(default_factory=list)
    workflow_id: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    # Runs of a job of idempotent containers that a crash interrupted ({started_at,
    # interrupted_at, error}) and the run that followed; empty for a job run once.
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.status == "running"

    def finish(self, results: list[dict[str, Any]]) -> None:
        """Record the per-container results in order; the last one decides the status."""
        self.intermediate = results[:-1]
        self.result = results[-1] if results else None
        self.status = "failed" if not results or "error" in results[-1] else "success"
        self.updated_at = time.time()

    def to_wire(self, intermediate: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status, "result": self.result}
        if intermediate:
            # The Infernet node sends `intermediate_results`; its docs and client type say
            # `intermediate`. Send both so either kind of client finds them.
            out["intermediate_results"] = self.intermediate
            out["intermediate"] = self.intermediate
        if self.runs:
            out["runs"] = self.runs
        return out
