"""Jobs across crashes and aborts: interrupted jobs of idempotent containers run again, others
fail; a job's state is visible only once committed; an abandoned stream settles its job; finished
jobs and expired sessions, tokens and nonces are pruned."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from node.jobs.client import ContainerClient
from node.jobs.models import Job
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.orchestrator import Orchestrator
from node.storage import Database
from node.gateway.subsystem import EXPIRY as GATEWAY_EXPIRY
from node.registry.subsystem import EXPIRY as REGISTRY_EXPIRY
from node.storage.prune import prune_expired
from tests.helpers import NodeProcess, workload_process
from tests.jobs.stores import open_store


@pytest.fixture
def faulty_service():
    proc, url = workload_process("faulty")
    yield url
    proc.kill()
    proc.wait()


@pytest.mark.docker
@pytest.mark.slow
def test_interrupted_jobs_of_idempotent_containers_run_again_and_others_fail(tmp_path, faulty_service):
    node = NodeProcess(tmp_path, [{"id": "again", "url": faulty_service, "idempotent": True},
                                  {"id": "once", "url": faulty_service}],
                       extra={"manage_containers": False})
    node.start(timeout=60)
    http = node.http()
    rerun = http.submit(["again"], {"mode": "sleep", "seconds": 1.5})
    failed = http.submit(["once"], {"mode": "sleep", "seconds": 1.5})
    time.sleep(0.5)
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait()
    node.start(timeout=60)
    job = http.wait_job(rerun)
    assert job["status"] == "success" and job["result"]["output"]["data"] == {"mode": "sleep", "seconds": 1.5}
    assert len(job["runs"]) == 2 and "interrupted_at" in job["runs"][0] and "interrupted_at" not in job["runs"][1]
    job = http.wait_job(failed)
    assert job["status"] == "failed" and job["result"]["error"] == "node stopped while the job was running"
    node.stop()


async def test_a_job_state_is_visible_only_after_its_commit(tmp_path):
    db, store = await open_store(tmp_path)
    job = Job(id="j1", client="c", containers=["echo"])
    await store.save(job)
    job.finish([{"container": "echo", "output": 1}])
    saving = asyncio.ensure_future(store.save(job))
    assert store.cached("j1").status == "running"  # the finish has not committed yet
    await saving
    assert store.cached("j1").status == "success"
    row = await db.fetchone("SELECT status FROM jobs WHERE id = 'j1'")
    assert row[0] == "success"
    await db.close()


async def test_finished_jobs_past_retention_are_pruned_and_running_ones_kept(tmp_path):
    db, store = await open_store(tmp_path)
    old = Job(id="old", client="c", containers=["echo"], updated_at=time.time() - 100)
    old.finish([{"container": "echo", "output": 1}])
    old.updated_at = time.time() - 100
    await store.save(old)
    await store.save(Job(id="running", client="c", containers=["echo"], updated_at=time.time() - 100))
    fresh = Job(id="fresh", client="c", containers=["echo"])
    fresh.finish([{"container": "echo", "output": 2}])
    await store.save(fresh)
    assert await store.prune(0) == 0  # 0 keeps everything
    assert await store.prune(50) == 1
    assert [j.id for j in await store.get_many(["old", "running", "fresh"])] == ["running", "fresh"]
    await db.close()


async def test_expired_sessions_tokens_and_nonces_are_pruned(tmp_path):
    db = Database(str(tmp_path / "p.db"))
    await db.open()
    for table in ("gw_sessions", "reg_tokens", "reg_nonces"):
        await db.execute(f"CREATE TABLE {table} (k TEXT, expires_at REAL)")
        await db.execute(f"INSERT INTO {table} VALUES ('gone', ?), ('kept', ?)", (time.time() - 1, time.time() + 60))
    counts = await prune_expired(db, [*GATEWAY_EXPIRY, *REGISTRY_EXPIRY])
    assert counts == {"gw_sessions": 1, "reg_tokens": 1, "reg_nonces": 1}
    for table in counts:
        assert [r[0] for r in await db.fetchall(f"SELECT k FROM {table}")] == ["kept"]
    await db.close()


class _Ticket:
    def __init__(self) -> None:
        self.settled: list[Job] = []

    async def finished(self, job: Job) -> None:
        self.settled.append(job)


class _Gate:
    def __init__(self) -> None:
        self.ticket = _Ticket()

    async def admit(self, admission):
        return self.ticket


async def test_a_stream_closed_before_it_ran_fails_its_job_and_settles_its_reservation(tmp_path):
    db, store = await open_store(tmp_path)
    gate = _Gate()
    orchestrator = Orchestrator({"echo": ContainerEndpoint("echo", "http://127.0.0.1:9")}, ContainerClient(), store,
                                [gate], max_inflight=1)
    job, stream = await orchestrator.stream("echo", {}, client="c")
    assert orchestrator.inflight == 1
    await stream.close()
    await stream.close()  # once only
    assert orchestrator.inflight == 0
    stored = store.cached(job.id)
    assert stored.status == "failed" and "client went away" in stored.result["error"]
    assert [j.id for j in gate.ticket.settled] == [job.id]
    await db.close()
