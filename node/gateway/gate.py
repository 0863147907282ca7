"""The gateway's hold on the node's own work: every job the orchestrator runs (HTTP, chain,
CRE, registry) passes `GovernanceGate.admit` first.

A job is bound to a workflow by the `X-Workflow-Id` header, accepted only with a signed API key
of the workflow's org (node/gateway/binding.py checks it and names the org for this request), or
to the default workflow of its source (`gateway.default_workflows`: always `org_id/workflow_id`;
a bare id, once accepted, let an outsider who created the same id make the binding ambiguous, so
the operator's paused workflow stopped refusing jobs). A source whose default workflow does not
exist (not created yet, or its org deleted) has its jobs refused (503): fail closed, never run
ungoverned what the operator meant to govern. Workflow ids are per org; the job records the row key
`org_id/workflow_id`, so a kill cancels exactly that org's jobs. A bound job is refused when the workflow is paused or
killed, when a policy denies it (subject: workflow, containers, estimated cost = the sum of the
containers' `cost_usd`), or when its cost does not fit the remaining budget; otherwise the cost
is reserved and settled when the job ends (charged on success, released on failure). A job bound
to nothing is not governed.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import Forbidden, NotFound, Unauthenticated, Unavailable
from node.gateway import policies
from node.gateway.binding import BOUND_ORG
from node.gateway.store import GatewayStore, wf_key
from node.jobs.models import Job
from node.jobs.orchestrator import Admission
from node.logs import get_logger

log = get_logger(__name__)


@dataclass
class _JobTicket:
    store: GatewayStore
    org_id: str
    workflow_id: str
    cost: float
    reservation_id: str | None

    async def finished(self, job: Job) -> None:
        if self.reservation_id is None:
            return
        if job.status == "success":
            await self.store.track(self.org_id, {"workflow_id": self.workflow_id, "cost_usd": self.cost,
                                                 "reservation_id": self.reservation_id,
                                                 "metadata": {"job_id": job.id, "containers": job.containers}}, None)
        else:
            await self.store.release(self.reservation_id)


class GovernanceGate:
    def __init__(self, store: GatewayStore, defaults: dict[str, str], container_costs: dict[str, float],
                 reservation_ttl: float) -> None:
        self._store = store
        self._defaults = defaults
        self._costs = container_costs
        self._ttl = reservation_ttl
        self._warned: set[str] = set()

    async def admit(self, admission: Admission) -> _JobTicket | None:
        requested = admission.workflow_id
        explicit = requested is not None
        configured: str | None = None
        if requested is not None:
            org_id, workflow_id = BOUND_ORG.get(), requested
            if org_id is None:
                raise Unauthenticated("X-Workflow-Id needs a signed API key of the workflow's org",
                                      {"workflow_id": workflow_id})
        else:
            configured = self._defaults.get(admission.source)
            if configured is None:
                return None
            org_id, workflow_id = configured.split("/", 1)  # the config allows nothing else
        workflow = await self._store.workflow(workflow_id, org_id) if org_id is not None else None
        if workflow is None:
            if explicit:
                raise NotFound(f"Unknown workflow {workflow_id!r}", {"workflow_id": workflow_id})
            if configured is not None and configured not in self._warned:
                self._warned.add(configured)
                log.error("gateway.default_workflow_missing", source=admission.source, workflow=configured)
            raise Unavailable(f"The {admission.source} jobs of this node are governed by workflow {workflow_id!r},"
                              " which does not exist; refused until the operator creates it",
                              {"workflow_id": workflow_id, "source": admission.source})
        admission.workflow_id = wf_key(org_id, workflow_id)
        if workflow["status"] != "active":
            raise Forbidden(f"Workflow {workflow_id} is {workflow['status']}",
                            {"workflow_id": workflow_id, "status": workflow["status"]})
        cost = sum(self._costs.get(c, 0.0) for c in admission.containers)
        subject = policies.Subject(workflow_id, admission.containers, None, None, cost)
        decision = await policies.evaluate(await self._store.policies(org_id), subject,
                                           self._store.rate_counter(org_id))
        container = ",".join(admission.containers)
        if not decision.allowed:
            await self._store.record_execution(org_id, "job", False, decision.reason, workflow_id=workflow_id,
                                               policy_id=decision.policy_id, container=container, cost=cost)
            raise Forbidden(f"Denied by policy: {decision.reason}",
                            {"workflow_id": workflow_id, "policy_id": decision.policy_id})
        reservation_id = None
        if cost > 0:
            reservation = await self._store.reserve(wf_key(org_id, workflow_id), cost, self._ttl, None)
            if not reservation.granted:
                await self._store.record_execution(org_id, "job", False, reservation.reason,
                                                   workflow_id=workflow_id, container=container, cost=cost)
                raise Forbidden(f"Workflow {workflow_id}: {reservation.reason}",
                                {"workflow_id": workflow_id, "remaining_usd": reservation.remaining_usd})
            reservation_id = reservation.reservation_id
        await self._store.record_execution(org_id, "job", True, decision.reason, workflow_id=workflow_id,
                                           policy_id=decision.policy_id, container=container, cost=cost,
                                           reservation_id=reservation_id)
        return _JobTicket(self._store, org_id, workflow_id, cost, reservation_id)
