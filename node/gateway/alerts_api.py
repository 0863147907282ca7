"""Budget alerts, alert channels (webhooks through the egress policy) and per-user notification
settings. `BudgetAlerts` raises a threshold alert once per workflow and threshold when a spend
crosses it and posts it to the org's enabled channels in the background: one-shot tasks of the
Supervisor's `gateway-alerts` group, drained at close the one way (grace, cancel, stragglers
logged).

A user keeps at most `MAX_THRESHOLDS` thresholds, and a spend looks only at the thresholds it
crossed: a viewer once stored 20,000 and every `/track` of the org then took 1.79 s (lists
stored before the cap are read up to it)."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import Field, field_validator

from node.gateway.auth import GatewayAuth
from node.gateway.models import Body, read_as
from node.gateway.paths import PREFIX
from node.gateway.store import GatewayStore
from node.gateway.webhooks import WebhookSender
from node.lifecycle import TaskSet
from node.logs import get_logger
from node.server.http import ApiError, json_response, parse_json, parse_model
from node.server.openapi import accepts, body

log = get_logger(__name__)


class AlertChannelCreate(Body):
    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://", max_length=2000)
    enabled: bool = True


MAX_THRESHOLDS = 10


class NotificationSettings(Body):
    budget_alerts: bool = True
    thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0], max_length=MAX_THRESHOLDS)
    channels: list[str] | None = None

    @field_validator("thresholds")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < t <= 1 for t in value):
            raise ValueError("thresholds are fractions of the budget in (0, 1]")
        return sorted(set(value))


class BudgetAlerts:
    def __init__(self, store: GatewayStore, webhooks: WebhookSender, tasks: TaskSet | None = None) -> None:
        self.store = store
        self.webhooks = webhooks
        self._background = tasks if tasks is not None else TaskSet("gateway-alerts")

    async def after_spend(self, org_id: str, workflow: dict[str, Any], spent: float) -> None:
        """Raise the budget-threshold alerts this spend (`spent` USD, already in the workflow's
        `spent_usd`) crossed, once each, and post them to the org's webhooks."""
        budget = workflow.get("budget_usd")
        if not budget or spent <= 0:
            return
        used = workflow["spent_usd"] / budget
        before = (workflow["spent_usd"] - spent) / budget
        settings = await self.store.org_notification_settings(org_id) or [NotificationSettings().model_dump()]
        thresholds = sorted({t for s in settings if s.get("budget_alerts", True)
                             for t in s.get("thresholds", [])[:MAX_THRESHOLDS]
                             if isinstance(t, (int, float)) and before + 1e-12 < t <= used + 1e-12})
        for threshold in thresholds:
            alert = await self.store.raise_alert(
                org_id, workflow["id"], threshold,
                f"workflow {workflow['id']} has spent {used:.0%} of its ${budget:g} budget")
            if alert is not None:
                log.warning("gateway.budget_alert", org_id=org_id, workflow_id=workflow["id"], threshold=threshold)
                self._background.spawn(f"{org_id}:{alert['id']}", self._notify(org_id, {"type": "budget_threshold", **alert,
                                                  "spent_usd": workflow["spent_usd"], "budget_usd": budget}))

    async def notify(self, org_id: str, payload: dict[str, Any]) -> None:
        """Tell the org's channels (e.g. of a pending approval) without waiting for them."""
        self._background.spawn(f"{org_id}:{payload.get('type', 'notice')}", self._notify(org_id, payload))

    async def _notify(self, org_id: str, payload: dict[str, Any]) -> None:
        for channel in await self.store.channels(org_id):
            if channel["enabled"]:
                await self.webhooks.send(channel["id"], channel["url"], payload)

    async def close(self, grace: float = 2.0) -> None:
        """Posts under way get `grace` seconds (each is bounded by the webhook timeout), then are
        cancelled and logged."""
        await self._background.drain(grace)


class AlertsApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, webhooks: WebhookSender) -> None:
        self.store = store
        self.auth = auth
        self.webhooks = webhooks

    def routes(self) -> list[web.RouteDef]:
        o = f"{PREFIX}/orgs/{{org_id}}"
        return [
            web.get(f"{o}/alerts", self.list_alerts),
            web.post(f"{o}/alerts/{{alert_id}}/dismiss", self.dismiss_alert),
            web.get(f"{o}/alert-channels", self.list_channels),
            web.post(f"{o}/alert-channels", self.add_channel),
            web.get(f"{o}/notification-settings", self.get_notifications),
            web.patch(f"{o}/notification-settings", self.patch_notifications),
        ]

    async def list_alerts(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        return json_response({"alerts": await self.store.alerts(org_id)})

    async def dismiss_alert(self, request: web.Request) -> web.Response:
        org_id, alert_id = request.match_info["org_id"], request.match_info["alert_id"]
        actor = await self.auth.org(request, org_id, "member")
        await self.store.dismiss_alert(org_id, alert_id)
        await self.store.audit(org_id, actor.label, "alert.dismissed", "alert", alert_id)
        return json_response({"dismissed": True, "id": alert_id})

    async def list_channels(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id, "admin")
        return json_response({"channels": await self.store.channels(org_id)})

    @body(AlertChannelCreate, read=read_as("admin"))
    async def add_channel(self, request: web.Request, req: AlertChannelCreate) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = request["actor"]
        await self.webhooks.check(req.url)
        channel = await self.store.add_channel(org_id, req.type, req.url, req.enabled)
        await self.store.audit(org_id, actor.label, "alert_channel.created", "alert_channel", channel["id"],
                               after=channel)
        return json_response(channel, 201)

    async def get_notifications(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id)
        settings = await self.store.notification_settings(org_id, actor.id)
        return json_response(settings or NotificationSettings().model_dump())

    @accepts(NotificationSettings)
    async def patch_notifications(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id)
        current = await self.store.notification_settings(org_id, actor.id) or NotificationSettings().model_dump()
        changes = parse_json(await request.read())
        if not isinstance(changes, dict):
            raise ApiError(400, "body: expected a JSON object of settings to change")
        merged = {**current, **changes}
        settings = parse_model(NotificationSettings, merged).model_dump()
        await self.store.set_notification_settings(org_id, actor.id, settings)
        await self.store.audit(org_id, actor.label, "notifications.updated", "user", actor.id, current, settings)
        return json_response(settings)
