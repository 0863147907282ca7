"""Background work of the node, watched.

A background loop that dies quietly is the failure node operators complain of most: the process
is up, `/health` is green, and nothing happens. So no subsystem calls `asyncio.create_task` for
long-lived work; it asks the node's `Supervisor`, which

- runs the coroutine as a named task and logs, with its traceback, any way it ends that nobody
  asked for (an exception, or a return while it was meant to run);
- restarts it with exponential backoff (reset once a run has lasted `healthy_after` seconds), or,
  for a task marked critical, calls `on_fatal` so the node exits non-zero and a process manager
  restarts the whole process;
- stops tasks on request: a task's own stop signal first (so it can finish in-flight work), then
  cancellation after a timeout.

`periodic(name, interval, fn)` is the one way to run work every N seconds: a failing round is
logged with its traceback and the next round runs on schedule.

`task_set(name)` is the one way to run one-shot work in the background (a delivery, the watch of
one transaction): each task runs once, is not restarted, and an exception it raises is logged
with its traceback (not lost in a task nobody awaits). `drain(grace)` at stop waits for them up
to `grace` seconds, then cancels the rest and logs their names; `close()` drains every set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field

from node.logs import get_logger

log = get_logger(__name__)

Factory = Callable[[], Awaitable[None]]


@dataclass
class Supervised:
    """One supervised task: what runs it, how it has fared, and how to stop it."""

    name: str
    factory: Factory
    critical: bool
    restarts: int = 0
    last_error: str | None = None
    task: asyncio.Task | None = None
    stopping: bool = False
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self, signal: Callable[[], None] | None = None, timeout: float = 10.0) -> None:
        """Stop on purpose: call the task's own stop signal (if any) and wait up to `timeout` for it
        to end, then cancel it."""
        self.stopping = True
        if self.task is None:
            return
        if signal is not None:
            signal()
            try:
                await asyncio.wait_for(self._done.wait(), timeout)
            except TimeoutError:
                log.warning("task.stop_timeout", task=self.name, s=timeout)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        await self._done.wait()


class Supervisor:
    def __init__(self, on_fatal: Callable[[str], None], *, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, healthy_after: float = 60.0) -> None:
        self._on_fatal = on_fatal
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._healthy_after = healthy_after
        self._tasks: dict[str, Supervised] = {}
        self._sets: dict[str, TaskSet] = {}

    def spawn(self, name: str, factory: Factory, *, critical: bool = False) -> Supervised:
        """Run `factory()` until stopped, restarting it (or failing the node, if critical) when it
        ends on its own. `factory` is called again for each restart."""
        if name in self._tasks and self._tasks[name].running:
            raise ValueError(f"a task named {name!r} is already running")
        entry = Supervised(name, factory, critical)
        self._tasks[name] = entry
        entry.task = asyncio.create_task(self._watch(entry), name=name)
        return entry

    def task_set(self, name: str) -> TaskSet:
        """The set of one-shot tasks called `name` (made on first use), drained by close()."""
        if name not in self._sets:
            self._sets[name] = TaskSet(name)
        return self._sets[name]

    def periodic(self, name: str, interval: float, fn: Callable[[], Awaitable[object]], *,
                 critical: bool = False) -> Supervised:
        """Call `fn()` every `interval` seconds (first call after one interval)."""

        async def every() -> None:
            while True:
                await asyncio.sleep(interval)
                started = time.perf_counter()
                try:
                    await fn()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one failed round; the next one runs on schedule
                    log.exception("task.round_failed", task=name, error=repr(exc)[:300],
                                  ms=round((time.perf_counter() - started) * 1000, 1))

        return self.spawn(name, every, critical=critical)

    async def _watch(self, entry: Supervised) -> None:
        backoff = self._backoff_initial
        try:
            while not entry.stopping:
                started = time.monotonic()
                try:
                    await entry.factory()
                    if entry.stopping:
                        return
                    entry.last_error = "returned while it was meant to run"
                    log.error("task.ended", task=entry.name, critical=entry.critical)
                except asyncio.CancelledError:
                    if entry.stopping:
                        return
                    raise
                except Exception as exc:  # this is where background failures are seen
                    if entry.stopping:
                        return
                    entry.last_error = repr(exc)[:300]
                    log.exception("task.crashed", task=entry.name, critical=entry.critical,
                                  error=entry.last_error)
                if entry.critical:
                    log.error("task.fatal", task=entry.name, error=entry.last_error)
                    self._on_fatal(entry.name)
                    return
                if time.monotonic() - started >= self._healthy_after:
                    backoff = self._backoff_initial
                entry.restarts += 1
                log.warning("task.restarting", task=entry.name, restarts=entry.restarts, in_s=round(backoff, 2))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)
        finally:
            entry._done.set()

    def status(self) -> list[dict[str, object]]:
        """Each task: name, running, critical, restarts, last error (for status endpoints)."""
        return [{"name": e.name, "running": e.running, "critical": e.critical, "restarts": e.restarts,
                 "last_error": e.last_error} for e in self._tasks.values()]

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every task still running (cancellation; tasks with their own stop signal should
        have been stopped through their handle first)."""
        await asyncio.gather(*(e.stop(timeout=timeout) for e in self._tasks.values()),
                             *(s.drain(timeout) for s in self._sets.values()), return_exceptions=True)


class TaskSet:
    """One-shot background tasks of one kind, seen and drained (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task]:
        """The tasks running now (a copy: they leave the set as they end)."""
        return iter(set(self._tasks))

    def spawn(self, label: str, coro: Coroutine[object, object, object]) -> asyncio.Task:
        """Run `coro` once as the task `<set name>:<label>`."""
        task = asyncio.get_running_loop().create_task(self._run(label, coro), name=f"{self.name}:{label}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, label: str, coro: Coroutine[object, object, object]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is where one-shot failures are seen
            log.exception("task.crashed", task=f"{self.name}:{label}", critical=False, error=repr(exc)[:300])

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for the tasks running now, then cancel the rest and log them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        if not pending:
            return
        log.warning("task.stragglers", task=self.name, cancelled=len(pending), grace_s=grace,
                    names=sorted(t.get_name() for t in pending)[:20])
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=5)
