"""Containers as Docker Swarm services (`docker.mode: swarm`): one node, many machines.

Each configured container becomes a service `<name_prefix><id>` on an attachable overlay network,
with its replicas, placement constraints and resources. The node stays the one control point:
at start it reconciles (adopts a service whose spec matches, scales one whose only change is
`replicas`, rolls an update through one whose spec changed; never removes and recreates), then
watches every service's tasks and tells the orchestrator where calls may go.

Three ways to reach a service (`docker.swarm.connect_via`):
- tasks: every task publishes port 3000 on its machine (host mode, a port the engine picks) and
  the node spreads calls over the running tasks itself. Needs nothing but the engine (no IPVS),
  and the node sees which task is where.
- mesh: one port published through the routing mesh on every machine; Swarm spreads the calls.
- vip: the node runs on the overlay network; calls go to the service's virtual IP by name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
import docker
import docker.errors
from docker.types import EndpointSpec, Resources, RestartPolicy, ServiceMode, UpdateConfig

from node.containers.config import ContainerConfig, DockerConfig
from node.containers.manager import (
    CONTAINER_PORT,
    LABEL_CONFIG,
    LABEL_MANAGED,
    ContainerManager,
    ContainerSetupError,
    ContainerState,
    answers,
)
from node.logs import get_logger

log = get_logger(__name__)

TARGET_PORT = int(CONTAINER_PORT.split("/")[0])
LABEL_IMAGE = "node-daemon.image"
UNPLACEABLE = "no suitable node"  # the scheduler's words for an unmet constraint or resource


@dataclass
class ServiceState(ContainerState):
    """A configured container run as a Swarm service."""

    mode: str = "swarm"
    retry_dropped: ClassVar[bool] = True
    replicas_desired: int = 0
    replicas_running: int = 0
    task_urls: list[str] = field(default_factory=list)

    def urls(self) -> list[str]:
        return list(self.task_urls) or [self.url]


class SwarmManager(ContainerManager):
    """The ContainerManager interface (start, wait_ready, monitor, stop, states) over services."""

    def __init__(
        self,
        containers: list[ContainerConfig],
        docker_config: DockerConfig,
        client: docker.DockerClient | None = None,
    ) -> None:
        super().__init__(containers, docker_config, manage=True, client=client)
        self._swarm = docker_config.swarm
        self.network = self._swarm.network or f"{docker_config.name_prefix or 'node-daemon-'}net"
        self._network_created = False
        self._node_addrs: dict[str, str] = {}
        self._problems: dict[str, str] = {}  # the last problem logged per container
        for cid, state in list(self.states.items()):
            if state.managed:
                self.states[cid] = ServiceState(
                    cid, self._fixed_url(cid, state.name or cid), managed=True, name=state.name,
                    image=state.image, status="starting", replicas_desired=self._configs[cid].replicas,
                )

    def _fixed_url(self, cid: str, name: str) -> str:
        """The one address of a service reached through Swarm's own balancing ('' for tasks)."""
        if self._swarm.connect_via == "vip":
            return f"http://{name}:{TARGET_PORT}"
        if self._swarm.connect_via == "mesh":
            return f"http://{self._swarm.mesh_host}:{self._ports[cid]}"
        return ""

    # -- start-up -------------------------------------------------------------------------

    async def start(self) -> None:
        # Every managed state is a ServiceState (__init__ replaced each): the filter only tells mypy.
        managed = [s for s in self._managed() if isinstance(s, ServiceState)]
        if not managed:
            return
        try:
            info = await asyncio.to_thread(self.client.info)
        except Exception as exc:  # noqa: BLE001 - docker-py raises many kinds here; each means the engine is not usable
            raise ContainerSetupError(f"Docker engine not reachable: {exc}") from None
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise ContainerSetupError(
                "docker.mode is swarm but this engine is not a swarm manager: run `docker swarm init` "
                "here (or point docker.base_url at a manager)"
            )
        started = time.perf_counter()
        for state in managed:
            await asyncio.to_thread(self._ensure_image, self._configs[state.id], state)
        await asyncio.to_thread(self._ensure_network)
        await asyncio.gather(*(asyncio.to_thread(self._reconcile, self._configs[s.id], s) for s in managed))
        log.info("containers.services_reconciled", count=len(managed), network=self.network,
                 s=round(time.perf_counter() - started, 2))

    def _ensure_network(self) -> None:
        found = [n for n in self.client.networks.list(names=[self.network]) if n.name == self.network]
        if found:
            attrs = found[0].attrs
            if attrs.get("Driver") != "overlay" or attrs.get("Scope") != "swarm":
                raise ContainerSetupError(
                    f"docker.swarm.network: {self.network!r} exists but is not a swarm overlay network")
            log.info("containers.network_reused", network=self.network)
            return
        try:
            self.client.networks.create(self.network, driver="overlay", attachable=True,
                                        labels={LABEL_MANAGED: "true"})
        except docker.errors.APIError as exc:
            raise ContainerSetupError(f"docker.swarm.network: cannot create {self.network!r}: "
                                      f"{exc.explanation or exc}") from None
        self._network_created = True
        log.info("containers.network_created", network=self.network, driver="overlay")

    def _find(self, name: str) -> Any | None:
        found = [s for s in self.client.services.list(filters={"name": name}) if s.name == name]
        return found[0] if found else None

    def _config_hash(self, config: ContainerConfig, image_id: str, port: int) -> str:
        material = {
            "image": image_id,
            "env": config.env,
            "command": config.command,
            "volumes": config.volumes,
            "placement": config.placement,
            "resources": config.resources.model_dump(),
            "network": self.network,
            "connect_via": self._swarm.connect_via,
            "port": port if self._swarm.connect_via == "mesh" else None,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]

    def _endpoint_spec(self, port: int) -> EndpointSpec:
        if self._swarm.connect_via == "tasks":  # the engine picks a free port per task
            return EndpointSpec(mode="vip", ports={None: (TARGET_PORT, "tcp", "host")})
        if self._swarm.connect_via == "mesh":
            return EndpointSpec(mode="vip", ports={port: (TARGET_PORT, "tcp", "ingress")})
        return EndpointSpec(mode="vip")

    @staticmethod
    def _resources(config: ContainerConfig) -> Resources | None:
        r = config.resources
        if not r.is_set():
            return None
        nano = lambda cpus: int(cpus * 1e9) if cpus else None  # noqa: E731 - a one-line unit conversion
        return Resources(
            cpu_limit=nano(r.cpu_limit), mem_limit=r.memory_limit,
            cpu_reservation=nano(r.cpu_reservation), mem_reservation=r.memory_reservation,
            generic_resources=dict(r.generic) or None,
        )

    def _spec(self, config: ContainerConfig, state: ServiceState, image_ref: str, wanted: str, port: int) -> dict:
        labels = {LABEL_MANAGED: "true", LABEL_CONFIG: wanted}
        spec: dict[str, Any] = {
            "image": image_ref,
            "name": state.name,
            "env": [f"{k}={v}" for k, v in config.env.items()],
            "labels": {**labels, LABEL_IMAGE: state.image},
            "container_labels": labels,  # in the task template: a changed hash rolls the tasks
            "networks": [self.network],
            "mounts": list(config.volumes),
            "constraints": list(config.placement),
            "mode": ServiceMode("replicated", replicas=config.replicas),
            "endpoint_spec": self._endpoint_spec(port),
            "resources": self._resources(config),
            # One task at a time, the new one started before the old one stops: capacity holds.
            "update_config": UpdateConfig(parallelism=1, delay=0, order="start-first", failure_action="pause"),
            "restart_policy": RestartPolicy(condition="any", delay=500_000_000),
        }
        if config.command:
            spec["args"] = shlex.split(config.command) if isinstance(config.command, str) else list(config.command)
        return spec

    def _reconcile(self, config: ContainerConfig, state: ServiceState) -> None:
        """Adopt, scale, update or create the service; never remove and recreate."""
        image = self.client.images.get(state.image)
        # A locally built image is referenced by ID: the engine then never asks a registry for it
        # (there may be none). A named image is referenced by name so other machines can pull it.
        image_ref = image.id if config.build else state.image
        service = self._find(state.name or config.id)
        port = self._ports[config.id]
        if service is not None:
            spec = service.attrs.get("Spec", {})
            labels = spec.get("Labels") or {}
            if labels.get(LABEL_MANAGED) != "true":
                raise ContainerSetupError(
                    f"container {config.id}: a service named {state.name} exists that no node manages")
            published = [p.get("PublishedPort") for p in (spec.get("EndpointSpec") or {}).get("Ports") or []
                         if p.get("PublishMode") == "ingress" and p.get("PublishedPort")]
            if self._swarm.connect_via == "mesh" and config.port is None and published:
                port = self._ports[config.id] = published[0]  # keep the port the service has
                state.url = self._fixed_url(config.id, state.name or config.id)
        wanted = self._config_hash(config, image.id, port)
        body = self._spec(config, state, image_ref, wanted, port)
        try:
            if service is None:
                service = self.client.services.create(**body)
                log.info("containers.service_created", container=config.id, service=state.name,
                         replicas=config.replicas)
            else:
                spec = service.attrs.get("Spec", {})
                replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas")
                if (spec.get("Labels") or {}).get(LABEL_CONFIG) != wanted:
                    service.update(**body)
                    log.info("containers.service_updating", container=config.id, service=state.name,
                             reason="configuration changed", replicas=config.replicas)
                elif replicas != config.replicas:
                    self._scale(service, config.replicas)
                    log.info("containers.service_scaled", container=config.id, service=state.name,
                             replicas_from=replicas, replicas_to=config.replicas)
                else:
                    log.info("containers.service_adopted", container=config.id, service=state.name)
        except docker.errors.APIError as exc:
            state.status = "failed"
            state.last_error = str(exc.explanation or exc)
            raise ContainerSetupError(f"container {config.id}: service {state.name}: {state.last_error}") from None
        state.docker_id = service.id
        state.replicas_desired = config.replicas
        state.started_at = time.time()

    def _scale(self, service: Any, replicas: int) -> None:
        """Change only the replica count. The spec goes back exactly as stored: the SDK's own
        scale() sends it with the engine's defaults filled in, which the engine takes for a new
        task template and replaces every running task."""
        spec = service.attrs["Spec"]
        self.client.api.update_service(
            service.id, service.version, name=spec["Name"], labels=spec.get("Labels"),
            mode={"Replicated": {"Replicas": replicas}}, task_template=spec["TaskTemplate"],
            update_config=spec.get("UpdateConfig"), rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"), fetch_current_spec=False,
        )

    # -- tasks ----------------------------------------------------------------------------

    def _node_addr(self, node_id: str) -> str:
        if node_id not in self._node_addrs:
            addr = self.client.nodes.get(node_id).attrs.get("Status", {}).get("Addr") or "127.0.0.1"
            self._node_addrs[node_id] = "127.0.0.1" if addr == "0.0.0.0" else addr
        return self._node_addrs[node_id]

    def _task_url(self, task: dict) -> str | None:
        for port in (task.get("Status", {}).get("PortStatus") or {}).get("Ports") or []:
            if port.get("TargetPort") == TARGET_PORT and port.get("PublishedPort"):
                return f"http://{self._node_addr(task['NodeID'])}:{port['PublishedPort']}"
        return None

    def _refresh(self, state: ServiceState) -> bool:
        """Read the service's tasks into `state`; True when the call addresses changed."""
        try:
            service = self.client.services.get(state.docker_id or state.name)
        except docker.errors.NotFound:
            log.warning("containers.service_vanished", container=state.id, service=state.name)
            self._reconcile(self._configs[state.id], state)
            state.restarts += 1
            return False
        spec = service.attrs.get("Spec", {})
        desired = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
        history = service.tasks()  # the live tasks and the few last ended ones
        tasks = [t for t in history if t.get("DesiredState") == "running"]
        running = [t for t in tasks if t.get("Status", {}).get("State") == "running"]
        stuck = [t["Status"].get("Err") or "" for t in tasks
                 if t.get("Status", {}).get("State") == "pending" and UNPLACEABLE in (t["Status"].get("Err") or "")]
        state.replicas_desired, state.replicas_running = desired, len(running)
        if stuck:
            state.status = "unschedulable"
            state.last_error = f"{len(stuck)} of {desired} task(s) cannot be placed: {stuck[0]}"
        elif len(running) >= desired and desired > 0:
            state.status, state.last_error = "running", None
        else:
            state.status = "starting" if not running else "degraded"
            # Why the last task ended, e.g. "No such image" on a machine without a local build.
            ended = sorted((t for t in history if t.get("Status", {}).get("State") in ("failed", "rejected")
                            and t["Status"].get("Err")), key=lambda t: t["Status"].get("Timestamp", ""))
            last = ended[-1]["Status"] if ended else None
            state.last_error = f"last task {last['State']}: {last['Err']}" if last else None
        problem = state.last_error or ""
        if problem != self._problems.get(state.id, ""):
            self._problems[state.id] = problem
            if state.status == "unschedulable":
                log.error("containers.unschedulable", container=state.id, service=state.name, error=problem,
                          placement=",".join(self._configs[state.id].placement) or "-")
            elif problem:
                log.warning("containers.task_failed", container=state.id, service=state.name, error=problem,
                            running=len(running), desired=desired)
        if self._swarm.connect_via != "tasks":
            return False
        urls = sorted(u for u in (self._task_url(t) for t in running) if u)
        if urls == state.task_urls:
            return False
        state.task_urls = urls
        if urls:
            state.url = urls[0]
        return True

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float) -> list[str]:
        """Wait until every service runs its desired tasks and each task answers HTTP; a service
        that cannot be placed is reported at once (not waited for). Returns the ids not ready."""
        deadline = time.monotonic() + timeout

        async def ready(state: ServiceState) -> bool:
            while True:
                await asyncio.to_thread(self._refresh, state)
                if state.status == "unschedulable":
                    return False
                if state.status == "running":
                    if all([await answers(session, u) for u in state.urls()]):
                        return True
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(0.2)

        services = [s for s in self.states.values() if isinstance(s, ServiceState)]
        answered = await asyncio.gather(*(ready(s) for s in services))
        silent = [s for s, ok in zip(services, answered, strict=True) if not ok]
        for state in silent:
            log.warning("containers.not_ready", container=state.id, status=state.status,
                        waited_s=round(timeout - max(0.0, deadline - time.monotonic()), 1),
                        running=state.replicas_running, desired=state.replicas_desired)
        others = [s for s in self.states.values() if not isinstance(s, ServiceState)]  # url: elsewhere
        return [s.id for s in silent] + await self._wait_answering(session, others, deadline)

    def readiness_check(self) -> Callable[[], Awaitable[bool]] | None:
        async def services() -> bool:
            """Ready while every service has a running task; otherwise an error naming each."""
            idle = [s for s in self._managed() if isinstance(s, ServiceState) and s.replicas_running == 0]
            if idle:
                raise ContainerSetupError("; ".join(
                    f"{s.id}: {s.replicas_running}/{s.replicas_desired} running ({s.last_error or s.status})"
                    for s in idle))
            return True

        return services

    # -- monitoring -----------------------------------------------------------------------

    def _check_once(self, loop: asyncio.AbstractEventLoop) -> None:
        for state in self._managed():
            if isinstance(state, ServiceState) and self._refresh(state):
                log.info("containers.tasks_changed", container=state.id, running=state.replicas_running,
                         desired=state.replicas_desired, urls=",".join(state.task_urls))
                self._notify(loop, state)

    # -- shutdown -------------------------------------------------------------------------

    async def stop(self) -> None:
        await super().stop()
        if self._docker_config.stop_on_exit and self._network_created:
            await asyncio.to_thread(self._remove_network)

    def _remove(self, state: ContainerState) -> None:
        try:
            self.client.services.get(state.docker_id).remove()
            state.status = "exited"
        except docker.errors.NotFound:
            pass

    def _remove_network(self) -> None:
        deadline = time.monotonic() + 15  # tasks leave the network a moment after their service
        while True:
            try:
                self.client.networks.get(self.network).remove()
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if time.monotonic() > deadline:
                    log.warning("containers.network_kept", network=self.network, error=str(exc.explanation or exc))
                    return
                time.sleep(0.5)
