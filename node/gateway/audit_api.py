"""The audit log for dashboard sessions and the SDK's `runtime.audit.*` calls (issue 25):
`GET /orgs/{org}/audit-log` (filtered, `data` + `meta`), `…/audit-log/verify` (the first broken
link of the org's keyed hash chain), and export jobs (`POST`/`GET …/audit-log/export`,
`GET …/export/{job}/status`, `GET …/export/{job}/file`: JSON lines).

Who may read: members of the org (any role) and the org's API keys, read-only. A key bound to a
workflow sees, lists and exports only rows about that workflow, and only its own kind of export
jobs (same scope); verify walks the whole org chain (it answers hashes and counts, no content).
The SDK accepts only HTTP 200 on these, so success is always 200 (export creation included).

Exports are written by `run_exports`, a Supervisor task: the job row is committed before the
answer names it, and a job a stopped node left half done starts over at the next round."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from node.gateway.auth import Actor, GatewayAuth
from node.gateway.paths import PREFIX
from node.gateway.store import GatewayStore
from node.logs import get_logger
from node.server.http import ApiError, int_param, json_response, query_limit

log = get_logger(__name__)

EXPORT_WINDOW = 30 * 86400  # the SDK's create_export covers the trailing 30 days
MAX_OPEN_EXPORTS = 2  # per org: work done for one caller is bounded
TEXT_FILTERS = {  # query parameter -> SQL condition over the audit row (with event_type, decision)
    "action": "action = ?", "event_type": "event_type = ?", "actor": "actor = ?",
    "resource_type": "target_type = ?", "resource_id": "target_id = ?", "decision": "decision = ?",
    "policy_id": "json_extract(after, '$.policy_id') = ?",
}


def parse_time(value: str, name: str) -> float:
    """RFC 3339 (`2026-12-04T10:00:00Z`, as the SDK sends) or Unix seconds; else a 400 naming it."""
    try:
        if value.replace(".", "", 1).isdigit():
            return float(value)
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise ApiError(400, f"{name}: expected an RFC 3339 time or Unix seconds, got {value[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class AuditApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, export_dir: Path) -> None:
        self.store = store
        self.auth = auth
        self.export_dir = export_dir

    def routes(self) -> list[web.RouteDef]:
        a = f"{PREFIX}/orgs/{{org_id}}/audit-log"
        return [
            web.get(a, self.list_rows),
            web.get(f"{a}/verify", self.verify),
            web.post(f"{a}/export", self.create_export),
            web.get(f"{a}/export", self.list_exports),
            web.get(f"{a}/export/{{job_id}}/status", self.export_status),
            web.get(f"{a}/export/{{job_id}}/file", self.export_file),
        ]

    async def _reader(self, request: web.Request, body: bytes = b"") -> tuple[str, Actor]:
        org_id = request.match_info["org_id"]
        return org_id, await self.auth.org(request, org_id, allow_key=True, body=body)

    async def list_rows(self, request: web.Request) -> web.Response:
        org_id, actor = await self._reader(request)
        q = request.query
        where: list[tuple[str, list[Any]]] = []
        for name, cond in TEXT_FILTERS.items():
            if q.get(name):
                where.append((cond, [q[name]]))
        if q.get("execution_id"):
            where.append(("(target_type = 'execution' AND target_id = ?)"
                          " OR json_extract(after, '$.execution_id') = ?", [q["execution_id"]] * 2))
        for name, op in (("since", ">="), ("until", "<=")):
            if q.get(name):
                where.append((f"created_at {op} ?", [parse_time(q[name], name)]))
        filtered = bool(where)
        if actor.workflow_scope is not None:
            where.append(("json_extract(after, '$.workflow_id') = ?", [actor.workflow_scope]))
        limit = query_limit(request, 100, 1000)
        before = q.get("before_id")
        rows, total = await self.store.audit_query(org_id, where, limit,
                                                   int_param(before, "before_id") if before else None)
        meta = {"total_returned": len(rows), "total_matching": total, "filtered": filtered, "limit": limit}
        return json_response({"data": rows, "meta": meta, "entries": rows})

    async def verify(self, request: web.Request) -> web.Response:
        org_id, _ = await self._reader(request)
        since = request.query.get("since")
        return json_response(await self.store.audit_verify(org_id, parse_time(since, "since") if since else None))

    # -- exports -------------------------------------------------------------------------------

    def _file_url(self, request: web.Request, job: dict[str, Any]) -> str | None:
        if job["status"] != "completed":
            return None
        return f"{request.scheme}://{request.host}{PREFIX}/orgs/{job['org_id']}/audit-log/export/{job['id']}/file"

    def _view(self, request: web.Request, job: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in job.items() if k not in ("file_path", "org_id")}
        return {**out, "file_url": self._file_url(request, job)}

    async def _job(self, request: web.Request) -> tuple[dict[str, Any], Actor]:
        org_id, actor = await self._reader(request)
        job_id = request.match_info["job_id"]
        job = await self.store.export_job(org_id, job_id)
        # A key sees only jobs of its own scope; another scope's job is answered as missing.
        if job is None or (actor.kind == "key" and job["workflow_scope"] != actor.workflow_scope):
            raise ApiError(404, f"export job {job_id!r} not found", {"error_code": "EXPORT_NOT_FOUND"})
        return job, actor

    async def create_export(self, request: web.Request) -> web.Response:
        raw = await request.read()
        org_id, actor = await self._reader(request, raw)
        if await self.store.open_exports(org_id) >= MAX_OPEN_EXPORTS:
            raise ApiError(429, f"{MAX_OPEN_EXPORTS} audit exports are already under way for this org;"
                                " wait for one to finish")
        now = time.time()
        job = await self.store.create_export(org_id, actor.workflow_scope, actor.label, now - EXPORT_WINDOW, now)
        return json_response({**self._view(request, job), "job_id": job["id"], "status": "pending"})

    async def list_exports(self, request: web.Request) -> web.Response:
        org_id, actor = await self._reader(request)
        jobs = await self.store.export_jobs(org_id, actor.workflow_scope, everyone=actor.kind == "user")
        return json_response({"exports": [self._view(request, job) for job in jobs]})

    async def export_status(self, request: web.Request) -> web.Response:
        job, _ = await self._job(request)
        return json_response(self._view(request, job))

    async def export_file(self, request: web.Request) -> web.StreamResponse:
        job, _ = await self._job(request)
        if job["status"] != "completed" or not job["file_path"] or not Path(job["file_path"]).exists():
            raise ApiError(404, f"export {job['id']} has no file (status {job['status']})",
                           {"error_code": "EXPORT_NOT_READY"})
        return web.FileResponse(job["file_path"], headers={
            "Content-Type": "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="audit-{job["id"]}.jsonl"'})

    async def run_exports(self) -> None:
        """One round of the Supervisor's export task: write every waiting job's file."""
        for job in await self.store.claim_exports():
            try:
                path, count = await self._write(job)
            except OSError as exc:
                log.warning("gateway.audit_export_failed", job=job["id"], error=repr(exc)[:200])
                await self.store.finish_export(job["id"], None, None, f"could not write the export: {exc}")
                continue
            await self.store.finish_export(job["id"], str(path), count, None)
            log.info("gateway.audit_exported", job=job["id"], rows=count)

    async def _write(self, job: dict[str, Any]) -> tuple[Path, int]:
        await asyncio.to_thread(self.export_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
        path = self.export_dir / f"{job['id']}.jsonl"
        partial = path.with_suffix(".part")
        await asyncio.to_thread(_truncate, partial)
        count, after_id = 0, 0
        while True:
            page = await self.store.export_rows(job["org_id"], job["workflow_scope"], job["since"], job["until"],
                                                after_id)
            if not page:
                break
            lines = "".join(json.dumps(row, separators=(",", ":")) + "\n" for _, row in page)
            await asyncio.to_thread(_append, partial, lines)
            count += len(page)
            after_id = page[-1][0]
        await asyncio.to_thread(os.replace, partial, path)
        return path, count


def _truncate(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
