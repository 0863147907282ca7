"""Policy evaluation: first match wins.

Policies of an org are ordered by `priority` (lower first), then by creation; disabled ones are
skipped. A policy matches when every condition of its `match` holds (see PolicyMatch); the first
matching policy's `action` (allow/deny/require_approval) decides. No match: allowed (the default
policy). `require_approval` is not an allow: where nobody can be asked (the node's own jobs) it
refuses; the SDK's /execute turns it into an approval request (approvals.py).

Conditions: `workflows`, `containers` (any container of the job), `models`, `tools`: the
request's value is in the list (`*` as the list's only item matches any value, also none);
`cost_gt`: the estimated cost is greater; `time_window`: now (UTC) is within [start, end) on one
of `days` (a window with end < start spans midnight); `rate`: the workflow already had `max` or
more allowed executions in the last `per_seconds`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Subject:
    workflow_id: str | None
    containers: tuple[str, ...] = ()
    model: str | None = None
    tool: str | None = None
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policy_id: str | None
    reason: str
    action: str = "allow"  # allow | deny | require_approval
    approval: dict[str, Any] | None = None  # the policy's ApprovalRule, for require_approval


RateCounter = Callable[[str, float], Awaitable[int]]


def _in(values: list[str] | None, value: str | None) -> bool:
    if values is None:
        return True
    if values == ["*"]:
        return True
    return value is not None and value in values


def in_window(window: dict[str, Any], now: dt.datetime) -> bool:
    if window.get("days") and DAYS[now.weekday()] not in window["days"]:
        return False
    minutes = now.hour * 60 + now.minute
    start_h, start_m = map(int, window["start"].split(":"))
    end_h, end_m = map(int, window["end"].split(":"))
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    return start <= minutes < end if start <= end else minutes >= start or minutes < end


def applies_to(policy: dict[str, Any], workflow_id: str) -> bool:
    """Whether the policy can match calls of `workflow_id` (what a workflow-scoped key may read)."""
    return _in(policy["match"].get("workflows"), workflow_id)


async def matches(match: dict[str, Any], subject: Subject, now: dt.datetime, rate: RateCounter) -> bool:
    if not _in(match.get("workflows"), subject.workflow_id):
        return False
    if match.get("containers") is not None:
        wanted = match["containers"]
        if wanted != ["*"] and not any(c in wanted for c in subject.containers):
            return False
    if not _in(match.get("models"), subject.model) or not _in(match.get("tools"), subject.tool):
        return False
    if match.get("cost_gt") is not None and not subject.cost_usd > match["cost_gt"]:
        return False
    if match.get("time_window") and not in_window(match["time_window"], now):
        return False
    if match.get("rate"):
        if subject.workflow_id is None:
            return False
        count = await rate(subject.workflow_id, match["rate"]["per_seconds"])
        if count < match["rate"]["max"]:
            return False
    return True


async def evaluate(policies: list[dict[str, Any]], subject: Subject, rate: RateCounter,
                   now: dt.datetime | None = None) -> Decision:
    now = now or dt.datetime.now(dt.UTC)
    for policy in policies:
        if not policy["enabled"]:
            continue
        if await matches(policy["match"], subject, now, rate):
            action = policy["action"]
            allowed = action == "allow"
            verb = {"allow": "allowed", "deny": "denied"}.get(action, "needs approval")
            reason = policy.get("reason") or f"{verb} by policy {policy['name']!r}"
            return Decision(allowed, policy["id"], reason, action, policy.get("approval"))
    return Decision(True, None, "no policy matched (default allow)")


TEMPLATES: list[dict[str, Any]] = [
    {"id": "deny-expensive-calls", "name": "Deny single calls over $1", "action": "deny", "priority": 10,
     "reason": "single call over $1", "match": {"cost_gt": 1.0}},
    {"id": "business-hours-only", "name": "Deny outside 08:00-18:00 UTC on weekdays", "action": "deny",
     "priority": 20, "reason": "outside business hours",
     "match": {"time_window": {"start": "18:00", "end": "08:00"}}},
    {"id": "rate-60-per-minute", "name": "Deny more than 60 executions a minute per workflow", "action": "deny",
     "priority": 30, "reason": "rate limit: 60 per minute", "match": {"rate": {"max": 60, "per_seconds": 60}}},
]
