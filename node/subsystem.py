"""What a subsystem is, and what it hands the node: the one contract between `node/app.py` and
each subsystem package (jobs, cre, gateway, chain, registry, observe).

Why: a subsystem used to be spread over four places in app.py, and three lists had to agree
(the error-shape families, `add_routes`, construction): a family left out of the first silently
answered errors in the Infernet shape, and the pruner and the metrics sampler named every other
subsystem's tables. Now a subsystem is one object, in its own package's `subsystem.py`, with one
lifespan, and app.py is the list of them.

The shape is aiohttp's cleanup context: `lifespan(ctx)` is an async context manager that starts
what the subsystem owns (its store and migrations, its services), yields a `Mount` (what the node
puts into its server and side services), and after the yield stops what it started: in a
`finally`, so a start-up failing after its mount (the port taken, a later subsystem refusing)
stops it too, and with its own background loops (a loop left to the Supervisor's close would
run on after the subsystems it reads are gone). `Node.start`
enters the enabled subsystems in list order on its exit stack, so a failed start-up stops exactly
what had started and a shutdown stops them in reverse. Everything a subsystem needs comes through
its constructor (its config section) or the one `Context` (shared infrastructure): nothing reaches
into the node.

What a `Mount` carries, and who reads it:
- `family` and `routes`: the app builder adds the routes and gives every path under the family's
  prefixes the family's error shape. The two come from one object, so they cannot disagree.
- `gates` (the orchestrator's admission hooks), `checks` (/health), `middlewares` (route
  middlewares, e.g. the gateway's request binding), `auth_prefixes` (sign-in routes under the
  node's auth rate limit).
- `lane`: handlers for some of `routes` that the fast lane (node/server/fastlane.py) may call for
  their plain requests; the app builder keeps only those no route middleware needs to see.
- `expiry`: the pruner's rules for the subsystem's own expiring tables (node/storage/prune.py
  names no table). `samples`: callbacks that fill the metrics snapshot from the subsystem's own
  tables and services (node/observe/sampler.py names no table). `status`: named status blocks
  for the operator status page; `flags`: named on/off facts for `node_subsystem_enabled`.
- `serving`: async context managers entered once the node serves (after the HTTP server and the
  containers, as the chain listener, the relayer and the watchers must), so they stop first, before
  in-flight jobs are drained; one whose start fails stops what it had opened before raising.
  `stop_first`: run first at shutdown, with the server refusing new requests (the gateway stops
  its WebSocket pushes; a failed start-up never runs these, so nothing is closed only here).
  `drains`: run right after the jobs drain (CRE's action runner waits for the results of the
  jobs it submitted). `bound`: told the address the server bound.
- `onchain` (the chain subsystem's face for the jobs API) and `on_containers` (a config reload
  changed the container list).

The jobs subsystem is the core: every other one submits work to its orchestrator, so it is
entered first and its orchestrator and store are in the `Context` the others get. A subsystem sees
what the subsystems before it mounted through `Context.mounted` (a live list: observe, entered
last, samples what every other one yields). Adding a subsystem: a package with a `subsystem.py`
holding a class with `name`, `enabled`, `lifespan(ctx)` and `flags(mount)`, and one line in
`SUBSYSTEMS` in app.py; its command-line commands, if any, are one more line, in
`COMMAND_GROUPS` (node/cli.py; why apart, see there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

    from node.config import NodeConfig
    from node.containers.config import ContainerConfig
    from node.containers.manager import ContainerManager
    from node.jobs.api import OnChain
    from node.jobs.orchestrator import JobGate, Orchestrator
    from node.jobs.store import JobStore
    from node.lifecycle import Supervisor
    from node.observe.metrics import NodeMetrics
    from node.observe.sampler import Snapshot
    from node.secrets import SecretBox
    from node.server.fastlane import LaneHandler
    from node.server.http import ApiFamily, RouteMiddleware
    from node.storage import Database
    from node.storage.prune import ExpiryRule

Check = Callable[[], Awaitable[bool]]
Sample = Callable[["Snapshot"], Awaitable[None]]
Serving = Callable[[], AbstractAsyncContextManager[None]]


@dataclass
class Mount:
    """What one subsystem hands the node while it runs (see the module docstring)."""

    name: str
    family: ApiFamily | None = None
    routes: Sequence[web.RouteDef] = ()
    gates: Sequence[JobGate] = ()
    checks: Mapping[str, Check] = field(default_factory=dict)
    middlewares: Sequence[RouteMiddleware] = ()
    # Routes of `routes` the fast lane may also answer, for their plain requests (server.fast_lane).
    lane: Mapping[tuple[str, str], LaneHandler] = field(default_factory=dict)
    auth_prefixes: tuple[str, ...] = ()
    expiry: Sequence[ExpiryRule] = ()
    samples: Mapping[str, Sample] = field(default_factory=dict)
    status: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    serving: Sequence[Serving] = ()
    stop_first: Sequence[Callable[[], Awaitable[None]]] = ()
    drains: Sequence[Callable[[], Awaitable[None]]] = ()
    bound: Sequence[Callable[[int], None]] = ()
    onchain: OnChain | None = None
    on_containers: Callable[[list[ContainerConfig]], None] | None = None


@dataclass
class Context:
    """The shared infrastructure every subsystem may use: one database, one HTTP client session,
    one supervisor, the containers, the node's secrets (loaded on first use: a node that seals
    nothing needs no master key), the metrics observer when observe is on, the jobs core, and the
    mounts of the subsystems entered before."""

    config: NodeConfig
    db: Database
    session: aiohttp.ClientSession
    supervisor: Supervisor
    containers: ContainerManager
    secrets: Callable[[], SecretBox]
    metrics: NodeMetrics | None
    started: Callable[[], bool]  # the node serves (set after every start step, cleared first at stop)
    subsystems: Callable[[], dict[str, bool]]  # which optional subsystems are on (node_subsystem_enabled)
    config_status: Callable[[], dict[str, Any] | None]  # the live config's file, hash, load time
    reload: Callable[[], Awaitable[dict[str, Any]]]  # re-read the config file (POST /api/node/reload)
    orchestrator: Orchestrator | None = None  # None only while the jobs core itself is entered
    jobs: JobStore | None = None
    mounted: list[Mount] = field(default_factory=list)

    @property
    def core(self) -> Orchestrator:
        assert self.orchestrator is not None, "the jobs core is entered first"
        return self.orchestrator

    def onchain(self) -> OnChain | None:
        """The chain subsystem's face for the jobs API, once mounted."""
        return next((m.onchain for m in self.mounted if m.onchain is not None), None)


class Subsystem(Protocol):
    name: str

    @property
    def enabled(self) -> bool: ...

    def lifespan(self, ctx: Context) -> AbstractAsyncContextManager[Mount]: ...

    def flags(self, mount: Mount | None) -> dict[str, bool]:
        """Its `node_subsystem_enabled` entries, e.g. `{name: mount is not None}` (the jobs core and
        observe list none)."""
        ...
