"""The node's CRE workflows: loaded at start from `cre.workflows`, fired by their triggers, and
every execution recorded and listed like any other job.

At start each enabled workflow is built (or loaded, for a `.wasm`) and run through its subscribe
phase; a workflow that cannot load stops the start with one line saying which and why (a node
that silently runs fewer workflows than configured is worse than one that does not start).

Triggers:
- cron: one supervised task per cron handler sleeps until the schedule's next time and fires
  with that time as the payload. A firing that finds the workflow's executions backed up is
  skipped with a warning (bounded work), never queued without limit; missed firings during
  downtime are not replayed (as CRE's cron trigger).
- EVM logs: one follower per log-trigger handler (logtrigger.py): each matching log fires once,
  across restarts, with reorgs handled by the chain subsystem's follower.
- HTTP: `POST /api/cre/wasm/workflows/{name}/trigger` with `{"input": …}` (the simulator's form,
  behind the node's bearer key), or `POST /api/cre/wasm/gateway` in the CRE gateway's form
  (JSON-RPC `workflows.execute`, an ETH-signed JWT from one of the trigger's authorized keys,
  each JWT once; see gateway_trigger.py). The input is the JSON text of `input`, given to the
  workflow's first HTTP handler.

Executions are recorded in `cre_wasm_executions` (trigger, logs, capability calls, result or
error, duration): a row is written 'running' before the execution starts and completed after,
so a restart mid-execution leaves a visible 'failed: interrupted' row, not a gap (an EVM log
execution is then run again under the same id, and its row completed: logtrigger.py).

Visible like every other job: each execution ends in the node's metrics through an
`ExecutionObserver` (node/observe/metrics.py: counts by workflow, trigger and outcome, a duration
histogram), `status()` gives the operator status document its `cre_workflows` part (each
workflow, its last execution, its failures), and a failure is one warning line naming the
workflow, the trigger, the execution and the error.

Secrets a workflow asks for and its config does not name are read from the node's sealed store
at each execution (secrets.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from node.cre.config import CreConfig, CreWasmWorkflow
from node.cre.wasm import gateway_trigger, logtrigger
from node.cre.wasm import secrets as secret_store
from node.cre.wasm.capabilities import Capabilities
from node.cre.wasm.host import Limits, Outcome, new_execution_id
from node.cre.wasm.reports import Reporter
from node.cre.wasm.runtime import Loaded, LoadError, Subscription, WasmRuntime, cron_payload, http_payload, result_json
from node.cre.wasm.toolchain import Toolchain
from node.errors import Forbidden, Invalid, NotFound, StartupError, Unauthenticated, Unavailable
from node.lifecycle import Supervised, Supervisor
from node.logs import get_logger
from node.secrets import SecretBox
from node.server.egress import EgressPolicy
from node.server.http import bearer_token, json_response, parse_json, query_limit
from node.storage import Database, Migration
from node.timefmt import iso_utc

log = get_logger(__name__)

PREFIX = "/api/cre/wasm"
MAX_INPUT_BYTES = 1 << 20  # an HTTP trigger's input, as JSON text
STATUSES = ("running", "succeeded", "failed")

MIGRATIONS = [
    Migration(
        "crewasm.0001",
        """
        CREATE TABLE cre_wasm_executions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            execution_id TEXT NOT NULL UNIQUE,
            workflow TEXT NOT NULL,
            trigger_kind TEXT NOT NULL,
            trigger_index INTEGER NOT NULL,
            trigger TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
            result TEXT,
            error TEXT,
            logs TEXT,
            calls TEXT,
            started_at REAL NOT NULL,
            duration_ms REAL
        );
        CREATE INDEX cre_wasm_executions_workflow ON cre_wasm_executions (workflow, id);
        """,
    ),
    Migration(
        "crewasm.0002",
        """
        CREATE TABLE cre_wasm_used_jti (
            jti TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        );
        """,
    ),    Migration(
        # the status document counts executions per workflow and status about once a second:
        # from this index, not from the rows (which carry their logs)
        "crewasm.0006",
        "CREATE INDEX cre_wasm_executions_status ON cre_wasm_executions (workflow, status, id);",
    ),
]


class ExecutionObserver(Protocol):
    """Told of each execution's end (the node's metrics)."""

    def cre_execution(self, workflow: str, trigger: str, ok: bool, seconds: float) -> None: ...


class ExecutionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(self) -> int:
        """Migrate, and fail the executions a previous process left running. Returns how many."""
        await self._db.migrate(MIGRATIONS)
        await self._db.migrate(logtrigger.MIGRATIONS)
        await self._db.migrate(secret_store.MIGRATIONS)
        return await self._db.execute(
            "UPDATE cre_wasm_executions SET status = 'failed', error = 'interrupted: the node stopped during the "
            "execution' WHERE status = 'running'")

    async def begin(self, execution_id: str, workflow: str, sub: Subscription, trigger: dict[str, Any]) -> None:
        """Record an execution as running. An id seen before (an EVM log execution run again after
        a restart cut it short) takes over its record: one record per execution."""
        await self._db.execute(
            "INSERT INTO cre_wasm_executions (execution_id, workflow, trigger_kind, trigger_index, trigger, status,"
            " started_at) VALUES (?, ?, ?, ?, ?, 'running', ?) ON CONFLICT (execution_id) DO UPDATE SET"
            " status = 'running', trigger = excluded.trigger, result = NULL, error = NULL, logs = NULL,"
            " calls = NULL, started_at = excluded.started_at, duration_ms = NULL",
            (execution_id, workflow, sub.kind, sub.index, json.dumps(trigger), time.time()))

    async def finish(self, execution_id: str, outcome: Outcome) -> None:
        """Complete the record and, in the same transaction, mark the EVM log claim it ran for (if
        any) executed: a crash cannot leave one done without the other."""
        values = ("succeeded" if outcome.ok else "failed", json.dumps(result_json(outcome)), outcome.failure,
                  json.dumps(outcome.logs), json.dumps([c.as_dict() for c in outcome.calls]), outcome.duration_ms,
                  execution_id)

        def op(conn: Any) -> None:
            conn.execute("UPDATE cre_wasm_executions SET status = ?, result = ?, error = ?, logs = ?, calls = ?,"
                         " duration_ms = ? WHERE execution_id = ?", values)
            conn.execute("UPDATE cre_wasm_log_fired SET executed_at = ?, payload = NULL WHERE execution_id = ?"
                         " AND executed_at IS NULL", (time.time(), execution_id))

        await self._db.run_in_transaction(op)

    async def by_workflow(self) -> dict[str, dict[str, Any]]:
        """Per workflow: executions kept by status, the last one, the last failure."""
        out: dict[str, dict[str, Any]] = {}
        for row in await self._db.fetchall(
                "SELECT workflow, status, COUNT(*) FROM cre_wasm_executions GROUP BY workflow, status"):
            out.setdefault(row[0], {"counts": {}, "last": None, "lastFailure": None})["counts"][row[1]] = row[2]
        for name, part in out.items():
            last = await self._db.fetchone(
                "SELECT * FROM cre_wasm_executions WHERE workflow = ? ORDER BY id DESC LIMIT 1", (name,))
            part["last"] = _brief(last) if last is not None else None
            if part["counts"].get("failed"):
                failed = await self._db.fetchone("SELECT * FROM cre_wasm_executions WHERE workflow = ?"
                                                 " AND status = 'failed' ORDER BY id DESC LIMIT 1", (name,))
                part["lastFailure"] = _brief(failed) if failed is not None else None
        return out

    async def get(self, execution_id: str) -> dict[str, Any] | None:
        row = await self._db.fetchone("SELECT * FROM cre_wasm_executions WHERE execution_id = ?", (execution_id,))
        return _record(row) if row is not None else None

    async def list(self, workflow: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
        where, params = [], []
        if workflow:
            where.append("workflow = ?")
            params.append(workflow)
        if status:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM cre_wasm_executions" + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self._db.fetchall(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_summary(r) for r in rows]

    async def prune(self, keep: int) -> int:
        await self._db.execute("DELETE FROM cre_wasm_used_jti WHERE expires_at < ?", (time.time() - 60,))
        return await self._db.execute(
            "DELETE FROM cre_wasm_executions WHERE id <= (SELECT MAX(id) FROM cre_wasm_executions) - ?", (keep,))

    async def use_jti(self, jti: str, expires_at: float) -> bool:
        """Claim a gateway JWT's id; False if it was used before (kept past its expiry)."""
        return await self._db.execute(
            "INSERT INTO cre_wasm_used_jti (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
            (jti, expires_at)) == 1


def _record(row: Any) -> dict[str, Any]:
    return {
        "executionId": row["execution_id"],
        "workflow": row["workflow"],
        "trigger": {"kind": row["trigger_kind"], "index": row["trigger_index"], **json.loads(row["trigger"])},
        "status": row["status"],
        "result": json.loads(row["result"]) if row["result"] is not None else None,
        "error": row["error"],
        "logs": json.loads(row["logs"]) if row["logs"] else [],
        "calls": json.loads(row["calls"]) if row["calls"] else [],
        "startedAt": iso_utc(row["started_at"]),
        "durationMs": row["duration_ms"],
    }


def _brief(row: Any) -> dict[str, Any]:
    """What the status document shows of one execution."""
    return {"executionId": row["execution_id"], "trigger": row["trigger_kind"], "status": row["status"],
            "startedAt": iso_utc(row["started_at"]), "durationMs": row["duration_ms"],
            "error": (row["error"] or "")[:300] or None}


def _summary(row: Any) -> dict[str, Any]:
    """A record without its logs and calls (their counts instead): a listing stays small."""
    out = _record(row)
    out["logCount"] = len(out.pop("logs"))
    out["callCount"] = len(out.pop("calls"))
    return out


class _Workflow:
    def __init__(self, config: CreWasmWorkflow, loaded: Loaded, capabilities: Capabilities) -> None:
        self.config = config
        self.loaded = loaded
        self.capabilities = capabilities
        self.inflight = 0
        self.workflow_id = config.workflow_id or hashlib.sha256(
            b"\0".join([config.name.encode(), loaded.digest.encode(), loaded.config])).hexdigest()


class WasmWorkflows:
    """The configured workflows, their triggers and their execution records."""

    def __init__(self, config: CreConfig, db: Database, supervisor: Supervisor, *, base_dir: Path | None = None,
                 toolchain: Toolchain | None = None, observer: ExecutionObserver | None = None,
                 secret_box: Callable[[], SecretBox] | None = None) -> None:
        self._config = config
        self._observer = observer
        self.secrets = secret_store.SecretStore(db, secret_box) if secret_box is not None else None
        self._wasm = config.wasm
        self._supervisor = supervisor
        self._base = base_dir or Path.cwd()
        self._db = db
        self.store = ExecutionStore(db)
        self._tasks: list[Supervised] = []  # triggers and pruning
        self._log_triggers: list[logtrigger.LogTrigger] = []  # their RPC connections are closed at stop
        wasm = config.wasm
        self._toolchain = toolchain or Toolchain(Path(wasm.toolchain_dir) if wasm.toolchain_dir else None)
        self._runtime: WasmRuntime | None = None
        self._egress = EgressPolicy(wasm.http_allowed_networks, max_response_bytes=wasm.max_http_response_bytes)
        self._session: Any = None
        self.workflows: dict[str, _Workflow] = {}
        self._backlog = 2 * wasm.workers  # executions of one workflow waiting or running, at most
        # cron executions under way (bounded by the backlog): one-shot tasks the Supervisor drains
        self._firings = supervisor.group("cre-wasm-cron-firings")

    async def start(self) -> None:
        """Load every enabled workflow and start its triggers; on a failure, undo and raise
        StartupError naming the workflow."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        interrupted = await self.store.start()
        if interrupted:
            log.warning("cre.wasm.interrupted_executions", count=interrupted)
        wasm = self._wasm
        self._runtime = WasmRuntime(self._toolchain, workers=wasm.workers, limits=Limits(
            timeout=wasm.timeout, memory_bytes=wasm.memory_mb << 20, max_response_bytes=wasm.max_response_bytes,
            max_logs_per_mode=wasm.max_logs, max_capability_calls=wasm.max_capability_calls))
        self._session = self._egress.session()
        loop = asyncio.get_running_loop()
        for wf in self._config.workflows:
            if not wf.enabled:
                continue
            capabilities = Capabilities(
                loop, egress=self._egress, session=self._session, http_timeout=wasm.http_timeout,
                chains=wasm.selectors(), secrets={("main", k): v.get_secret_value() for k, v in wf.secrets.items()},
                forwarders=wasm.forwarder_selectors(), sealed=self._sealed_lookup(wf.name))
            path = Path(wf.file) if Path(wf.file).is_absolute() else self._base / wf.file
            started = time.perf_counter()
            try:
                loaded = await self._runtime.load(wf.name, path, wf.config_bytes(), capabilities)
            except LoadError as exc:
                await capabilities.close()
                raise StartupError(f"cre.workflows[{wf.name}]: {exc}") from None
            workflow = _Workflow(wf, loaded, capabilities)
            if wasm.don_key is not None and wasm.don_key.get_secret_value():
                capabilities.set_reporter(Reporter(wasm.don_key.get_secret_value(), workflow.workflow_id, wf.name,
                                                   wf.owner, wasm.don_id))
            self.workflows[wf.name] = workflow
            log.info("cre.wasm.loaded", workflow=wf.name, digest=loaded.digest[:16],
                     triggers=",".join(s.kind for s in loaded.subscriptions),
                     ms=round((time.perf_counter() - started) * 1000))
            if wf.cron:
                for sub in loaded.subscriptions:
                    if sub.cron is not None:
                        self._tasks.append(self._supervisor.spawn(f"cre-wasm-cron-{wf.name}-{sub.index}",
                                                                  self._cron_factory(wf.name, sub)))
            for sub in loaded.subscriptions:
                if sub.kind == "evm-log":
                    self._follow_logs(wf.name, sub)
        self._tasks.append(self._supervisor.periodic("cre-wasm-prune", 60,
                                                     lambda: self.store.prune(wasm.keep_executions)))

    def _sealed_lookup(self, name: str) -> Callable[[str, str], Any] | None:
        store = self.secrets
        if store is None:
            return None

        async def lookup(namespace: str, secret_id: str) -> str | None:
            return await store.get(name, namespace, secret_id)

        return lookup

    def _follow_logs(self, name: str, sub: Subscription) -> None:
        url = self._wasm.selectors().get(sub.selector or 0)
        if url is None:
            raise StartupError(f"cre.workflows[{name}]: handler {sub.index} is a log trigger on chain selector "
                               f"{sub.selector}, which cre.wasm.chains does not name")

        async def fire(s: Subscription, payload: Any, trigger: dict[str, Any], execution_id: str) -> None:
            await self._fire_logged(name, s, payload, trigger, execution_id)

        follower = logtrigger.LogTrigger(self._db, name, sub, url, self._wasm.log_confirmations, fire,
                                         self._wasm.log_poll_interval, self.workflows[name].workflow_id)
        self._log_triggers.append(follower)
        self._tasks.append(self._supervisor.loop(f"cre-wasm-logs-{name}-{sub.index}", follower.round,
                                                 follower.poll_interval, follower.wake))

    async def stop(self) -> None:
        """Stop the triggers first (through the Supervisor, so none is restarted), then the
        executions under way, then the host."""
        for entry in self._tasks:
            await entry.stop(timeout=5)
        self._tasks = []
        for trigger in self._log_triggers:
            await trigger.close()
        self._log_triggers = []
        await self._firings.drain(0)  # executions under way are cancelled (their rows end failed)
        for workflow in self.workflows.values():
            await workflow.capabilities.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    # -- firing --------------------------------------------------------------------------

    def _cron_factory(self, name: str, sub: Subscription):
        async def loop() -> None:
            assert sub.cron is not None
            while True:
                now = datetime.now(UTC)
                when = sub.cron.next_after(now)
                await asyncio.sleep(max((when - datetime.now(UTC)).total_seconds(), 0))
                workflow = self.workflows[name]
                if workflow.inflight >= self._backlog:
                    log.warning("cre.wasm.cron_skipped", workflow=name, scheduled=when.isoformat(),
                                reason=f"{workflow.inflight} executions still in flight")
                    continue
                self._firings.spawn(f"{name}@{when.isoformat()}",
                                    self._fire_logged(name, sub, cron_payload(when), {"scheduled": when.isoformat()}))

        return loop

    async def _fire_logged(self, name: str, sub: Subscription, payload: Any, trigger: dict[str, Any],
                           execution_id: str | None = None) -> None:
        try:
            await self.fire(name, sub, payload, trigger, execution_id)
        except Exception as exc:  # noqa: BLE001 - a cron firing has no caller: its failure must be a log line
            log.exception("cre.wasm.fire_failed", workflow=name, error=repr(exc)[:300])

    async def fire(self, name: str, sub: Subscription, payload: Any, trigger: dict[str, Any],
                   execution_id: str | None = None) -> dict[str, Any]:
        """Run one trigger of a workflow and record it. Returns the execution record."""
        workflow = self.workflows[name]
        if self._runtime is None:
            raise Unavailable("the CRE workflow host is stopped")
        execution_id = execution_id or new_execution_id(name, f"{sub.index}")
        workflow.inflight += 1
        try:
            await self.store.begin(execution_id, name, sub, trigger)
            outcome = await self._runtime.run(workflow.loaded, sub.index, payload, workflow.capabilities,
                                              execution_id)
            await self.store.finish(execution_id, outcome)
        finally:
            workflow.inflight -= 1
        if self._observer is not None:
            try:
                self._observer.cre_execution(name, sub.kind, outcome.ok, outcome.duration_ms / 1000)
            except Exception:  # noqa: BLE001 - metrics never fail an execution
                log.exception("cre.wasm.observer_failed", workflow=name)
        if outcome.ok:
            log.info("cre.wasm.execution", workflow=name, trigger=sub.kind, execution=execution_id[:16],
                     ms=outcome.duration_ms, calls=len(outcome.calls))
        else:
            log.warning("cre.wasm.execution_failed", workflow=name, trigger=sub.kind, execution=execution_id[:16],
                        ms=outcome.duration_ms, error=(outcome.failure or "")[:300])
        record = await self.store.get(execution_id)
        assert record is not None
        return record

    async def status(self) -> list[dict[str, Any]]:
        """The operator status document's `cre_workflows` part: each workflow this node runs, its
        triggers, executions in flight, its last execution, its failures among those kept."""
        seen = await self.store.by_workflow()
        out = []
        for name, w in self.workflows.items():
            part = seen.get(name, {"counts": {}, "last": None, "lastFailure": None})
            counts = part["counts"]
            out.append({"name": name, "workflowId": w.workflow_id, "triggers": [s.kind for s in w.loaded.subscriptions],
                        "inflight": w.inflight, "executions": sum(counts.values()),
                        "failures": counts.get("failed", 0), "counts": counts,
                        "lastExecution": part["last"], "lastFailure": part["lastFailure"]})
        return out

    # -- API -----------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{PREFIX}/workflows", self.list_workflows),
            web.post(f"{PREFIX}/workflows/{{name}}/trigger", self.http_trigger),
            web.post(f"{PREFIX}/gateway", self.gateway_trigger),
            web.get(f"{PREFIX}/executions", self.list_executions),
            web.get(f"{PREFIX}/executions/{{execution_id}}", self.get_execution),
        ]

    def _check(self, request: web.Request) -> None:
        key = self._wasm.api_key.get_secret_value() if self._wasm.api_key else ""
        if not key:
            raise Forbidden("the CRE workflow routes are closed: set cre.wasm.api_key to use them")
        token = bearer_token(request)
        if not (token is not None and hmac.compare_digest(token.encode(), key.encode())):
            raise Unauthenticated("Authorization: Bearer <cre.wasm.api_key> is required")

    async def list_workflows(self, request: web.Request) -> web.Response:
        """The CRE workflows this node runs, with their triggers"""
        self._check(request)
        data = [{"name": name, "workflowId": w.workflow_id, "file": w.config.file, "digest": w.loaded.digest,
                 "triggers": [s.describe() for s in w.loaded.subscriptions], "inflight": w.inflight}
                for name, w in self.workflows.items()]
        return json_response({"success": True, "data": {"workflows": data}})

    async def http_trigger(self, request: web.Request) -> web.Response:
        """Fire a workflow's HTTP trigger with {"input": …} and answer with the execution record"""
        self._check(request)
        name = request.match_info["name"]
        workflow = self.workflows.get(name)
        if workflow is None:
            raise NotFound(f"no workflow named {name[:64]!r}")
        sub = workflow.loaded.first("http")
        if sub is None:
            raise Invalid(f"workflow {name} has no HTTP trigger")
        raw = await request.read()
        body = parse_json(raw) if raw else None
        if not isinstance(body, dict) or "input" not in body:
            raise Invalid('input: required (the body is {"input": <JSON>})')
        text = json.dumps(body["input"], separators=(",", ":")).encode()
        if len(text) > MAX_INPUT_BYTES:
            raise Invalid(f"input: over {MAX_INPUT_BYTES} bytes")
        if workflow.inflight >= self._backlog:
            raise Unavailable(f"workflow {name} has {workflow.inflight} executions in flight; try again later",
                              {"retryAfter": 1})
        record = await self.fire(name, sub, http_payload(text), {"inputBytes": len(text)})
        return json_response({"success": True, "data": record})

    async def gateway_trigger(self, request: web.Request) -> web.Response:
        """The HTTP trigger in the CRE gateway's form: JSON-RPC workflows.execute with an ETH-signed JWT"""
        raw = await request.read()
        req = gateway_trigger.parse(raw, request.headers.get("Authorization", ""), time.time())
        workflow = next((w for w in self.workflows.values()
                         if (req.workflow_id is not None and w.workflow_id == req.workflow_id)
                         or (req.workflow_id is None and w.config.name == req.workflow_name)), None)
        if workflow is None:
            raise NotFound("params.workflow: no such workflow on this node")
        sub = workflow.loaded.first("http")
        if sub is None:
            raise Invalid(f"workflow {workflow.config.name} has no HTTP trigger")
        allowed = {key.lower() for key in sub.authorized_keys}
        if not allowed:
            raise Forbidden(f"workflow {workflow.config.name}'s HTTP trigger authorizes no keys")
        if req.signer.lower() not in allowed:
            raise Forbidden(f"{req.signer} is not an authorized key of workflow {workflow.config.name}")
        text = json.dumps(req.input, separators=(",", ":")).encode()
        if len(text) > MAX_INPUT_BYTES:
            raise Invalid(f"params.input: over {MAX_INPUT_BYTES} bytes")
        if workflow.inflight >= self._backlog:
            raise Unavailable(f"workflow {workflow.config.name} has {workflow.inflight} executions in flight",
                              {"retryAfter": 1})
        if not await self.store.use_jti(req.jti, req.expires_at):
            raise Unauthenticated("JWT jti was already used")
        record = await self.fire(workflow.config.name, sub, http_payload(text),
                                 {"inputBytes": len(text), "signer": req.signer, "requestId": req.request_id})
        return json_response({"jsonrpc": "2.0", "id": req.request_id, "result": {
            "workflowID": workflow.workflow_id, "workflowExecutionID": record["executionId"],
            "status": record["status"], "result": record["result"], "error": record["error"]}})

    async def list_executions(self, request: web.Request) -> web.Response:
        """Executions of the CRE workflows, newest first (filters: workflow, status), without their logs"""
        self._check(request)
        status = request.query.get("status")
        if status is not None and status not in STATUSES:
            raise Invalid(f"status: one of {', '.join(STATUSES)}")
        items = await self.store.list(request.query.get("workflow"), status, query_limit(request, 50, 500))
        return json_response({"success": True, "data": {"executions": items, "count": len(items)}})

    async def get_execution(self, request: web.Request) -> web.Response:
        """One execution of a CRE workflow: trigger, logs, capability calls, result or error"""
        self._check(request)
        record = await self.store.get(request.match_info["execution_id"])
        if record is None:
            raise NotFound("no such execution")
        return json_response({"success": True, "data": record})
