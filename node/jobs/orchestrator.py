"""The orchestrator: runs a job's containers in order, output of one the input of the next.

Every way work enters the node (HTTP, chain subscriptions, CRE actions, registry triggers)
ends here, so admission gates (the governance gateway's budgets, policies and kill switch),
per-container concurrency limits and the job time limit (`jobs.max_job_seconds`) apply to all
of them. Jobs from HTTP clients also count against `server.max_inflight_jobs` and their
client address's share, `jobs.max_inflight_per_client`, so no one client can take them all.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.errors import Busy, Forbidden, Invalid
from node.jobs.client import CallObserver, ContainerClient
from node.jobs.endpoint import ContainerEndpoint, ContainerFailure
from node.jobs.models import Job, JobLocation, over_time_limit
from node.jobs.store import JobStore, Rerun
from node.jobs.stream import JobStream
from node.logs import get_logger
from node.server.clients import limit_key

log = get_logger(__name__)


class JobIds:
    """Random (version 4) UUIDs from the OS's CSPRNG, read 256 at a time: one getrandom()
    call per id was a measurable share of the request path."""

    def __init__(self, batch: int = 256) -> None:
        self._size = 16 * batch
        self._pool = b""
        self._offset = self._size

    def next(self) -> str:
        if self._offset >= self._size:
            self._pool, self._offset = os.urandom(self._size), 0
        raw = self._pool[self._offset : self._offset + 16]
        self._offset += 16
        return str(uuid.UUID(bytes=raw, version=4))


@dataclass
class Admission:
    """What an admission gate sees of a job about to start. A gate may fill in `workflow_id`
    (e.g. the default workflow of the job's source); the job is then bound to it."""

    containers: tuple[str, ...]
    client: str
    source: str
    workflow_id: str | None


class Ticket(Protocol):
    """Returned by a gate that wants to hear how an admitted job ended (settle a reservation)."""

    async def finished(self, job: Job) -> None: ...


class JobGate(Protocol):
    """Admission control hook (governance: budgets, policies, pause/kill)."""

    async def admit(self, admission: Admission) -> Ticket | None:
        """Raise a domain error (node/errors.py) to refuse the job."""


class JobObserver(CallObserver, Protocol):
    """Hears how work ended (metrics, status): called synchronously, must be cheap, never raises."""

    def job_finished(self, job: Job, seconds: float) -> None: ...


class Orchestrator:
    def __init__(
        self,
        endpoints: dict[str, ContainerEndpoint],
        client: ContainerClient,
        store: JobStore,
        gates: Sequence[JobGate] = (),
        *,
        max_inflight: int = 0,
        max_inflight_per_client: int = 0,
        max_job_seconds: float | None = None,
    ) -> None:
        self.endpoints = endpoints
        self._store = store
        self._gates = list(gates)
        self._tasks: dict[str, asyncio.Task] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._ids = JobIds()
        self.observers: list[JobObserver] = []
        # Containers are called through the one client (retry, failures, metrics); it hears
        # the observers added to this list later too.
        self._client = client
        client.observers = self.observers
        self._max_inflight = max_inflight  # 0: no cap
        self._inflight = 0  # front-door jobs (HTTP submit and stream) admitted and not yet finished
        # Containers a config reload is removing: new jobs naming them are refused while the
        # running ones that reach them finish.
        self.retiring: set[str] = set()
        # One client's share of those (jobs.max_inflight_per_client), by client address.
        self._max_per_client = max_inflight_per_client  # 0: no cap
        self._per_client: dict[str, int] = {}
        self._max_job_seconds = max_job_seconds  # None: no limit

    def add_gate(self, gate: JobGate) -> None:
        self._gates.append(gate)

    # -- admission -------------------------------------------------------------------------

    def check(self, containers: Sequence[str], client_ip: str | None = None, requires_proof: bool = False) -> None:
        """Static checks of a container chain; raises Invalid (or Forbidden for the caller's address)
        with a clear message."""
        if not containers:
            raise Invalid("No containers specified")
        unknown = [c for c in containers if c not in self.endpoints or c in self.retiring]
        if unknown:
            raise Invalid("Container not supported", {"containers": unknown})
        first = self.endpoints[containers[0]]
        if not first.external:
            raise Invalid("Container is not external", {"container": first.id})
        if requires_proof and not self.endpoints[containers[-1]].generates_proofs:
            raise Invalid("Container does not generate proofs", {"container": containers[-1]})
        for cid in containers:
            if not self.endpoints[cid].allows(client_ip):
                raise Forbidden("Container not allowed for address", {"container": cid, "address": client_ip})

    async def _admit(
        self, containers: Sequence[str], client: str, source: str, workflow_id: str | None
    ) -> tuple[str | None, list[Ticket]]:
        if not self._gates:
            return workflow_id, []
        admission = Admission(tuple(containers), client, source, workflow_id)
        tickets = []
        for gate in self._gates:
            ticket = await gate.admit(admission)
            if ticket is not None:
                tickets.append(ticket)
        return admission.workflow_id, tickets

    async def _settle(self, job: Job, tickets: Sequence[Ticket]) -> None:
        for ticket in tickets:
            try:
                await ticket.finished(job)
            except Exception:  # noqa: BLE001 - settling must not break the job path
                log.exception("job.settle_failed", job_id=job.id)

    async def _new_job(self, containers: Sequence[str], client: str, source: str, workflow_id: str | None,
                       data: Any = None, on_commit: Callable[[Job], None] | None = None) -> Job:
        """Record a new running job; returns once its row has committed. The input is kept
        with the job when every container is idempotent (a crash means: run it again).
        `on_commit(job)` runs as soon as the row has committed (see JobStore.save)."""
        job = Job(id=self._ids.next(), client=client, containers=list(containers), source=source, workflow_id=workflow_id)
        keep = source == "offchain" and all(self.endpoints[c].idempotent for c in containers)
        await self._store.save(job, data=json.dumps(data) if keep else None,
                               then=None if on_commit is None else lambda: on_commit(job))
        return job

    def _take_slot(self, client: str) -> None:
        """Count a front-door job against server.max_inflight_jobs and the client's share
        (jobs.max_inflight_per_client), or refuse it (Busy)."""
        if self._max_inflight and self._inflight >= self._max_inflight:
            raise Busy("Too many jobs in flight; try again shortly",
                       {"max_inflight_jobs": self._max_inflight}, retry_after=1.0)
        key = limit_key(client)  # an IPv4 address, or an IPv6 client's /64
        if self._max_per_client and self._per_client.get(key, 0) >= self._max_per_client:
            raise Busy("Too many jobs in flight from this client; try again when some have finished",
                       {"max_inflight_per_client": self._max_per_client}, retry_after=1.0)
        self._count(client, 1)

    def _count(self, client: str, delta: int) -> None:
        key = limit_key(client)  # an IPv4 address, or an IPv6 client's /64
        self._inflight += delta
        held = self._per_client.get(key, 0) + delta
        if held > 0:
            self._per_client[key] = held
        else:
            self._per_client.pop(key, None)

    def _release_slot(self, client: str) -> None:
        self._count(client, -1)

    @property
    def inflight(self) -> int:
        return self._inflight

    # -- running ---------------------------------------------------------------------------

    async def submit(
        self,
        containers: Sequence[str],
        data: Any,
        *,
        client: str,
        source: str = "offchain",
        requires_proof: bool = False,
        workflow_id: str | None = None,
        client_ip: str | None = None,
    ) -> Job:
        """Check, admit, record (committed) and start a job in the background; returns it
        running."""
        self.check(containers, client_ip, requires_proof)
        holder = client_ip or client
        self._take_slot(holder)
        started = released = False

        def start(job: Job) -> None:
            # At the commit, not when this coroutine resumes: the job runs even if the request
            # was cancelled while its row was committing (a committed job is accepted; it must
            # not stay `running` with no task behind it). Its first container call waits one turn
            # of the loop, so the acknowledgement goes out first (`after_ack`).
            nonlocal started
            started = True
            if released:  # cancelled before the commit, the request gave its slot back
                self._count(holder, 1)
            self._start_task(job, data, requires_proof, tickets, holder, after_ack=True)

        try:
            workflow_id, tickets = await self._admit(containers, client, source, workflow_id)
            job = await self._new_job(containers, client, source, workflow_id, data, on_commit=start)
        except BaseException:
            if not started:  # once started, the job's task frees the slot when it ends
                released = True
                self._release_slot(holder)
            raise
        return job

    def _start_task(self, job: Job, data: Any, requires_proof: bool, tickets: Sequence[Ticket], holder: str,
                    after_ack: bool = False) -> None:
        task = asyncio.create_task(
            self._execute(job, data, requires_proof, JobLocation.OFFCHAIN, JobLocation.OFFCHAIN, tickets, after_ack))
        self._tasks[job.id] = task

        def done(_task: asyncio.Task, job_id: str = job.id) -> None:
            self._forget(job_id)
            self._release_slot(holder)

        task.add_done_callback(done)

    def resume(self, reruns: Sequence[Rerun]) -> None:
        """Run again the interrupted jobs of idempotent containers (at-least-once)."""
        for rerun in reruns:
            self._count(rerun.job.client, 1)
            log.info("job.rerun", job_id=rerun.job.id, run=len(rerun.job.runs))
            self._start_task(rerun.job, rerun.data, False, (), rerun.job.client)

    async def run(
        self,
        containers: Sequence[str],
        data: Any,
        *,
        client: str,
        source: str,
        source_location: JobLocation = JobLocation.OFFCHAIN,
        destination: JobLocation = JobLocation.OFFCHAIN,
        requires_proof: bool = False,
        workflow_id: str | None = None,
    ) -> Job:
        """Run a job to completion in the caller's task (chain processor, CRE actions, cron)."""
        self.check(containers, None, requires_proof)
        workflow_id, tickets = await self._admit(containers, client, source, workflow_id)
        job = await self._new_job(containers, client, source, workflow_id)
        task = asyncio.current_task()
        assert task is not None, "run() is awaited in a task (the caller's)"
        self._tasks[job.id] = task
        try:
            await self._execute(job, data, requires_proof, source_location, destination, tickets)
        finally:
            self._forget(job.id)
        return job

    def _observe_job(self, job: Job, started: float) -> None:
        for observer in self.observers:
            try:
                observer.job_finished(job, time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - observing must not break the job path
                log.exception("job.observer_failed", job_id=job.id)

    def _forget(self, job_id: str) -> None:
        self._tasks.pop(job_id, None)
        self._cancel_reasons.pop(job_id, None)

    async def _execute(
        self, job: Job, data: Any, requires_proof: bool, source: JobLocation, destination: JobLocation,
        tickets: Sequence[Ticket] = (), after_ack: bool = False,
    ) -> None:
        """Run the job's containers in order and commit how it ended. `after_ack`: started at the
        commit of a submission, whose request resumes in the same turn of the loop; one turn
        later, its acknowledgement has been written before the container call's request is. On
        two cores the client that waits for it then runs before the container does (measured side
        by side, one client alone polling: 2.22 -> 2.13 ms p50). The turn is inside the `try`: a
        job cancelled in it (a kill right after the answer) ends failed like any other."""
        started = time.perf_counter()
        results: list[dict[str, Any]] = []
        last = len(job.containers) - 1
        current = job.containers[0]
        limit = asyncio.timeout(self._max_job_seconds)  # the whole chain's time (jobs.max_job_seconds)
        try:
            async with limit:
                if after_ack:
                    await asyncio.sleep(0)
                for index, cid in enumerate(job.containers):
                    current = cid
                    body = {
                        "source": int(source) if index == 0 else int(JobLocation.OFFCHAIN),
                        "destination": int(destination) if index == last else int(JobLocation.OFFCHAIN),
                        "data": data,
                        "requires_proof": requires_proof,
                    }
                    try:
                        data = await self._client.call(self.endpoints[cid], body)
                    except ContainerFailure as exc:
                        results.append({"container": cid, "error": str(exc)})
                        break
                    results.append({"container": cid, "output": data})
        except TimeoutError as exc:
            if not limit.expired() or self._max_job_seconds is None:
                log.exception("job.crashed", job_id=job.id)
                results.append({"container": current, "error": f"internal error: {exc}"})
            else:
                results.append({"container": current, "error": over_time_limit(self._max_job_seconds)})
        except asyncio.CancelledError:
            reason = self._cancel_reasons.get(job.id)
            results.append({"container": current, "error": reason or "job cancelled"})
            job.finish(results)
            await asyncio.shield(self._finish(job, tickets, started))
            log.info("job.cancelled", job_id=job.id, reason=reason or "task cancelled")
            if reason is None:
                raise  # our caller is being cancelled (shutdown): let it unwind
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # cancelled through cancel(): the job ends, its caller goes on
            return
        except Exception as exc:  # noqa: BLE001 - a bug must fail the job, not leave it running
            log.exception("job.crashed", job_id=job.id)
            results.append({"container": current, "error": f"internal error: {exc}"})
        job.finish(results)
        await self._finish(job, tickets, started)
        if log.is_debug() or job.status == "failed":
            level = log.warning if job.status == "failed" else log.debug
            level(
                "job.finished",
                job_id=job.id,
                status=job.status,
                source=job.source,
                containers=",".join(job.containers),
                ms=round((time.perf_counter() - started) * 1000, 2),
                **({"error": job.result.get("error")} if job.result and "error" in job.result else {}),
            )

    async def _finish(self, job: Job, tickets: Sequence[Ticket], started: float) -> None:
        """Commit a finished job (readers see it only then), count it in the metrics, then
        settle its gate tickets."""
        for attempt in range(3):
            try:
                await self._store.save(job)
                break
            except Exception:  # noqa: BLE001 - retried; a job must not stay running because of one failed commit
                log.exception("job.save_failed", job_id=job.id, attempt=attempt + 1)
                await asyncio.sleep(0.5 * (attempt + 1))
        self._observe_job(job, started)
        if tickets:
            await self._settle(job, tickets)

    async def stream(
        self, container: str, data: Any, *, client: str, client_ip: str | None = None, workflow_id: str | None = None
    ) -> tuple[Job, JobStream]:
        """Start a streaming job on one container. Iterate the returned `JobStream` for the
        raw output as it arrives, and always `close()` it: a stream that did not run to its end
        (the client went away) fails its job and settles its gate tickets."""
        self.check([container], client_ip)
        holder = client_ip or client
        self._take_slot(holder)
        started = time.perf_counter()
        try:
            workflow_id, tickets = await self._admit([container], client, "stream", workflow_id)
            job = await self._new_job([container], client, "stream", workflow_id)
        except BaseException:
            self._release_slot(holder)
            raise
        stream = JobStream(job, self.endpoints[container], data, self._client,
                           lambda: self._finish(job, tickets, started), lambda: self._release_slot(holder),
                           time_limit=self._max_job_seconds, cancel_reason=lambda: self._cancel_reasons.get(job.id))
        # The stream's task is the job's: cancel() (a kill, a shutdown) reaches it like any job's.
        task = stream.start()
        self._tasks[job.id] = task
        task.add_done_callback(lambda _task: self._forget(job.id))
        return job, stream

    # -- control ---------------------------------------------------------------------------

    def cancel(self, job_id: str, reason: str) -> bool:
        """Abort a running job (its container call is cancelled); it ends failed with `reason`."""
        task = self._tasks.get(job_id)
        if task is None or task.done():
            return False
        self._cancel_reasons[job_id] = reason
        task.cancel()
        return True

    def cancel_workflow(self, workflow_id: str, reason: str) -> int:
        """Abort every running job bound to a workflow (the kill switch); returns how many."""
        return sum(self.cancel(job.id, reason) for job in self._store.running() if job.workflow_id == workflow_id)

    async def drain(self, timeout: float, reason: str = "node shutting down") -> None:
        """Let in-flight background jobs finish for up to `timeout` s, then cancel the rest."""
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            log.info("jobs.draining", in_flight=len(pending), timeout_s=timeout)
            _, still = await asyncio.wait(pending, timeout=timeout)
            for job_id, task in list(self._tasks.items()):
                if task in still:
                    self.cancel(job_id, reason)
            if still:
                await asyncio.wait(still, timeout=5)
