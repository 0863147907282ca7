"""What the node counts as work happens: jobs by source, container chain and outcome, job and
container-call latencies, SQLite commit latency, CRE workflow executions (node/cre/wasm) by
workflow, trigger and outcome with their duration. One `CollectorRegistry` per node (built in
node/app.py, never prometheus_client's global one), so two nodes in one process never mix.

Labels stay bounded: sources and container ids come from the code and the config, outcomes are
fixed words, CRE workflow names come from the config; never job ids, client addresses or error
messages. Container *chains* are chosen
by clients (any sequence of configured ids), so only the first `max_chains` distinct chains get
their own label; later ones are counted as `other`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from node.jobs.models import Job

# Container calls range from a millisecond (echo) to minutes (inference).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600)
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
WINDOW_SECONDS = 15 * 60


@dataclass
class WindowCounts:
    seconds: float
    finished: int
    failed: int

    @property
    def per_minute(self) -> float:
        return round(self.finished / (self.seconds / 60), 2)


class RecentWindow:
    """Outcomes per second over the last 15 minutes, for "rate and failures lately" without
    scanning the jobs table."""

    def __init__(self, span: float = WINDOW_SECONDS) -> None:
        self._span = span
        self._buckets: deque[list[int]] = deque()  # [second, finished, failed]

    def add(self, failed: bool, now: float | None = None) -> None:
        second = int(now if now is not None else time.time())
        if self._buckets and self._buckets[-1][0] == second:
            bucket = self._buckets[-1]
        else:
            bucket = [second, 0, 0]
            self._buckets.append(bucket)
            while self._buckets and self._buckets[0][0] < second - self._span:
                self._buckets.popleft()
        bucket[1] += 1
        bucket[2] += failed

    def counts(self, seconds: float, now: float | None = None) -> WindowCounts:
        since = (now if now is not None else time.time()) - seconds
        finished = failed = 0
        for second, done, bad in reversed(self._buckets):
            if second < since:
                break
            finished += done
            failed += bad
        return WindowCounts(seconds, finished, failed)


class NodeMetrics:
    """The push-style families, and the orchestrator's `JobObserver`."""

    def __init__(self, max_chains: int = 100) -> None:
        self._max_chains = max_chains
        self._chains: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter("node_jobs", "Jobs finished, by source, container chain and outcome",
                            ["source", "containers", "outcome"], registry=r)
        self.job_seconds = Histogram("node_job_duration_seconds", "Job run time (all containers), by source",
                                     ["source", "outcome"], buckets=LATENCY_BUCKETS, registry=r)
        self.calls = Counter("node_container_calls", "Container /service_output calls, by container and outcome",
                             ["container", "outcome"], registry=r)
        self.call_seconds = Histogram("node_container_call_duration_seconds", "One container call's latency",
                                      ["container"], buckets=LATENCY_BUCKETS, registry=r)
        self.commit_seconds = Histogram("node_sqlite_commit_duration_seconds", "SQLite COMMIT latency",
                                        buckets=COMMIT_BUCKETS, registry=r)
        self.config_reloads = Counter("node_config_reloads", "Config reloads, by outcome (applied, invalid, failed)",
                                      ["outcome"], registry=r)
        self.cre_executions = Counter("node_cre_workflow_executions", "CRE workflow executions, by workflow, "
                                      "trigger (cron, http, evm-log) and outcome (succeeded, failed)",
                                      ["workflow", "trigger", "outcome"], registry=r)
        self.cre_seconds = Histogram("node_cre_workflow_duration_seconds", "One CRE workflow execution's run time",
                                     ["workflow"], buckets=LATENCY_BUCKETS, registry=r)
        self.recent = RecentWindow()
        self._job_children: dict[tuple, tuple] = {}
        self._call_children: dict[tuple, tuple] = {}

    # -- JobObserver -----------------------------------------------------------------------

    def job_finished(self, job: Job, seconds: float) -> None:
        failed = job.status != "success"
        key = (job.source, tuple(job.containers), failed)
        children = self._job_children.get(key)
        if children is None:  # labels() validates and locks: look each label set up once
            outcome = "failed" if failed else "success"
            chain = ",".join(job.containers)
            if chain not in self._chains:
                if len(self._chains) >= self._max_chains:
                    chain = "other"
                else:
                    self._chains.add(chain)
            children = (self.jobs.labels(job.source, chain, outcome), self.job_seconds.labels(job.source, outcome))
            if chain != "other":
                self._job_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        self.recent.add(failed)

    def container_called(self, container: str, seconds: float, ok: bool) -> None:
        children = self._call_children.get((container, ok))
        if children is None:
            children = self._call_children[(container, ok)] = (
                self.calls.labels(container, "ok" if ok else "error"), self.call_seconds.labels(container))
        children[0].inc()
        children[1].observe(seconds)

    # -- CRE workflows (node/cre/wasm ExecutionObserver) ------------------------------------

    def cre_execution(self, workflow: str, trigger: str, ok: bool, seconds: float) -> None:
        self.cre_executions.labels(workflow, trigger, "succeeded" if ok else "failed").inc()
        self.cre_seconds.labels(workflow).observe(seconds)

    # -- storage -----------------------------------------------------------------------------

    def commit(self, seconds: float) -> None:
        self.commit_seconds.observe(seconds)
