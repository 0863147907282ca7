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

Three shapes, one each way:

- `loop(name, fn, every, wake=None)` is the one way to run a tick loop: `fn()` is one round,
  called every `every` seconds, or at once when `wake` (an `asyncio.Event` its owner sets: a new
  head, a new subscription, more blocks to read) fires. A failed round is logged with its
  traceback (further failures in a row in one line each, `in_a_row`) and the next one runs; the
  loop never dies of a round. Stopping is the Supervisor's: `stop()` on the handle (or `close()`)
  ends the loop after the round under way (up to the grace, then cancelled; a round waiting in
  `retry_pause` between RPC retries ends at once); no loop keeps a stop event of its own. `periodic(name, every, fn)` is a loop
  whose first round waits one interval.
- `spawn(name, factory)` runs a long-lived coroutine that is not a tick loop (a WebSocket
  subscription, a cron schedule), restarted with backoff when it ends on its own.
- `group(name)` is the one way to run one-shot work in the background (a delivery, the watch of
  one transaction, an interval's run, a webhook post): each task runs once, is not restarted, and
  an exception it raises is logged with its traceback (not lost in a task nobody awaits).

One drain policy for every group: `drain(grace)` waits for the tasks running now up to `grace`
seconds (`GRACE` unless the owner has a reason for another), then cancels the rest and logs their
names (`task.stragglers`). Owners drain their groups when they stop; `close()` drains whatever is
left.

Critical tasks: a task is critical when the node has no reason to run without it and the loop
cannot be started again in this process. A loop never dies of a failed round, so what kills one
is outside it: its task cancelled by something other than the Supervisor, or a `BaseException`.
For a critical task that death calls `on_fatal` (the node stops and exits 1, for the process
manager to restart it); any other task is logged (`task.crashed`) and restarted with backoff.
Critical in production: `chain-listener` and `chain-processor` (an Infernet node that neither
follows the Coordinator nor delivers is down while `/health` says up). Everything else (heads,
RPC health, the registry relayer and watchers, the CRE triggers, the watchdog, expiry and prune
rounds) restarts: each is optional to the node's main job or recovers its state from SQLite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from node.logs import get_logger

log = get_logger(__name__)

Factory = Callable[[], Awaitable[None]]

GRACE = 10.0  # seconds a stopping loop's round, or a group's tasks, get before they are cancelled

# The stop signal of the supervised task the current code runs in (None outside one).
_halt: ContextVar[asyncio.Event | None] = ContextVar("supervised_halt", default=None)


async def retry_pause(seconds: float) -> None:
    """Wait `seconds` before retrying (an RPC call that failed): a round waiting here when the
    Supervisor stops its loop ends at once (CancelledError), not after the grace."""
    halt = _halt.get()
    if halt is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(halt.wait(), seconds)
    except TimeoutError:
        return
    raise asyncio.CancelledError


@dataclass
class Supervised:
    """One supervised task: what runs it, how it has fared, and how to stop it."""

    name: str
    factory: Factory
    critical: bool
    restarts: int = 0
    last_error: str | None = None
    task: asyncio.Task | None = None  # the Supervisor's watch over the runs
    current: asyncio.Task | None = None  # the run under way (cancelling it from outside kills the run)
    stopping: bool = False
    graceful: bool = False  # a loop: stop() lets the round under way end before it cancels
    _halt: asyncio.Event = field(default_factory=asyncio.Event)  # set by stop(); a loop's pause wakes on it
    _wakes: list[asyncio.Event] = field(default_factory=list)
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self, signal: Callable[[], None] | None = None, timeout: float = GRACE) -> None:
        """Stop on purpose: a loop ends after the round under way, another task is asked through its
        own stop `signal` (if any); either gets up to `timeout` seconds, then is cancelled."""
        self.stopping = True
        self._halt.set()
        for wake in self._wakes:
            wake.set()
        if self.task is None:
            return
        if signal is not None:
            signal()
        if signal is not None or self.graceful:
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
        self._groups: dict[str, TaskSet] = {}

    def spawn(self, name: str, factory: Factory, *, critical: bool = False) -> Supervised:
        """Run `factory()` until stopped, restarting it (or failing the node, if critical) when it
        ends on its own. `factory` is called again for each restart."""
        if name in self._tasks and self._tasks[name].running:
            raise ValueError(f"a task named {name!r} is already running")
        entry = Supervised(name, factory, critical)
        self._tasks[name] = entry
        entry.task = asyncio.create_task(self._watch(entry), name=name)
        return entry

    def loop(self, name: str, fn: Callable[[], Awaitable[object]], every: float,
             wake: asyncio.Event | None = None, *, critical: bool = False, first_after: float = 0.0) -> Supervised:
        """Call `fn()` (one round) now (or after `first_after` seconds), then every `every` seconds
        or as soon as `wake` is set, whichever is first. `wake` is cleared just before each round,
        so a wake-up that comes during a round runs the next one at once. A failed round is logged
        with its traceback and the next runs; stop() ends the loop after the round under way."""
        entry: Supervised

        async def pause(seconds: float, event: asyncio.Event) -> None:
            if entry._halt.is_set():
                return
            try:
                await asyncio.wait_for(event.wait(), seconds)
            except TimeoutError:
                pass

        async def rounds() -> None:
            if first_after > 0:
                await pause(first_after, entry._halt)
            failing = 0  # rounds failed in a row: the first is logged with its traceback, the rest in one line
            while not entry._halt.is_set():
                if wake is not None:
                    wake.clear()
                started = time.perf_counter()
                try:
                    await fn()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one failed round; the next one runs
                    failing += 1
                    fields = {"task": name, "error": repr(exc)[:300], "in_a_row": failing,
                              "ms": round((time.perf_counter() - started) * 1000, 1)}
                    if failing == 1:
                        log.exception("task.round_failed", **fields)
                    else:
                        log.error("task.round_failed", **fields)
                else:
                    if failing:
                        log.info("task.rounds_recovered", task=name, failed=failing)
                    failing = 0
                await pause(every, wake if wake is not None else entry._halt)

        entry = self.spawn(name, rounds, critical=critical)
        entry.graceful = True
        if wake is not None:
            entry._wakes.append(wake)
        return entry

    def periodic(self, name: str, interval: float, fn: Callable[[], Awaitable[object]], *,
                 critical: bool = False) -> Supervised:
        """A loop whose first round comes after one interval (pruning, expiry, health checks)."""
        return self.loop(name, fn, interval, critical=critical, first_after=interval)

    def group(self, name: str) -> TaskSet:
        """The group of one-shot tasks called `name` (made on first use), drained by close()."""
        if name not in self._groups:
            self._groups[name] = TaskSet(name)
        return self._groups[name]

    def task(self, name: str) -> Supervised | None:
        """The supervised task called `name` (None if there is none)."""
        return self._tasks.get(name)

    def groups(self) -> list[TaskSet]:
        return list(self._groups.values())

    async def _watch(self, entry: Supervised) -> None:
        backoff = self._backoff_initial
        me = asyncio.current_task()
        try:
            while not entry.stopping:
                started = time.monotonic()
                token = _halt.set(entry._halt)  # the run's context sees its stop signal (retry_pause)
                run = asyncio.create_task(_awaited(entry.factory), name=f"{entry.name}:run")
                _halt.reset(token)
                entry.current = run
                try:
                    await run
                    if entry.stopping:
                        return
                    entry.last_error = "returned while it was meant to run"
                    log.error("task.ended", task=entry.name, critical=entry.critical)
                except asyncio.CancelledError:
                    if entry.stopping or (me is not None and me.cancelling()):
                        return  # stopped: by the Supervisor, or the loop itself is closing
                    # The run's own task was cancelled by something else: the loop is dead.
                    entry.last_error = "cancelled from outside the Supervisor"
                    log.error("task.crashed", task=entry.name, critical=entry.critical, error=entry.last_error)
                except Exception as exc:  # noqa: BLE001 - this is where background failures are seen
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
        """Stop every task still running (loops after their round, others by cancellation: tasks
        with their own stop signal should have been stopped through their handle first) and
        drain every group."""
        await asyncio.gather(*(e.stop(timeout=timeout) for e in self._tasks.values()),
                             *(s.drain(timeout) for s in self._groups.values()), return_exceptions=True)


async def _awaited(factory: Factory) -> None:
    await factory()


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
        """Run `coro` once as the task `<group name>:<label>`."""
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

    async def drain(self, grace: float = GRACE) -> None:
        """The one drain policy: wait up to `grace` seconds for the tasks running now, then cancel
        the rest and log them."""
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
