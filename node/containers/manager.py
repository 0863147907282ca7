"""The container manager: images, lifecycle and health of the containers the node runs.

The docker SDK is blocking, so every call runs in a worker thread (`asyncio.to_thread`).
Containers publish their port 3000 on 127.0.0.1 only (never 0.0.0.0: the node is the only
way in). A container whose name exists with a different configuration (image, env, command,
ports, volumes) is replaced, never silently reused.

A config reload changes the set while jobs run (`add`, `remove`, and for a changed container
`start_successor` + `swap` + `retire`): the successor starts beside the running container under
a temporary name and its own port, calls move to it once it answers, and the old one is removed
only after its in-flight calls are done (the node drains them); the successor then takes the
container's name. States are swapped, never edited, so the monitor (in a worker thread) works
on whole states and skips one that is no longer current.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import aiohttp
import docker
import docker.errors
from docker.types import DeviceRequest

from node.containers.config import ContainerConfig, DockerConfig
from node.logs import get_logger

log = get_logger(__name__)

CONTAINER_PORT = "3000/tcp"
LABEL_MANAGED = "node-daemon.managed"
LABEL_CONFIG = "node-daemon.config-hash"


class ContainerSetupError(Exception):
    pass


@dataclass
class ContainerState:
    id: str
    url: str  # the address jobs use now
    managed: bool
    published_url: str | None = None  # http://127.0.0.1:<port> of a managed container
    network_url: str | None = None  # http://<container ip>:3000 on its Docker network
    name: str | None = None
    image: str = ""
    status: str = "unknown"  # starting | running | exited | restarting | external | failed
    restarts: int = 0
    last_error: str | None = None
    started_at: float | None = None
    docker_id: str | None = field(default=None, repr=False)
    host_port: int | None = None  # the port a managed container publishes on 127.0.0.1
    # A call the container never received may be sent again (to another replica of a Swarm service).
    retry_dropped: ClassVar[bool] = False

    def urls(self) -> list[str]:
        """Where calls may go now (a local container has one address)."""
        return [self.url]

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("docker_id")
        return out


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free port on 127.0.0.1 below the kernel's ephemeral range (32768-60999 by default), so a
    probe of a port nobody listens on yet can never self-connect through an ephemeral port."""
    for _ in range(200):
        port = random.randrange(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ContainerSetupError(f"no free port in {low}-{high}")


async def answers(session: aiohttp.ClientSession, url: str) -> bool:
    """Does anything answer HTTP (any status) at `url` within a second?"""
    try:
        async with session.get(f"{url}/", timeout=aiohttp.ClientTimeout(total=1)) as resp:
            await resp.read()
            return True
    except (TimeoutError, aiohttp.ClientError):
        return False


def local_image_tag(config: ContainerConfig) -> str:
    return config.image or f"node-local/{config.id.lower()}:latest"


def build_with_progress(client: docker.DockerClient, config: ContainerConfig, tag: str) -> None:
    """Build from the engine's stream, logging each step with the time so far (a slow build
    says where it is instead of going quiet)."""
    assert config.build is not None
    started, steps = time.perf_counter(), 0
    stream = client.api.build(path=config.build.context, dockerfile=config.build.dockerfile, tag=tag,
                              rm=True, forcerm=True, decode=True)
    for chunk in stream:
        if "error" in chunk:
            raise docker.errors.BuildError(chunk["error"].strip(), [])
        line = str(chunk.get("stream", "")).strip()
        if line.startswith("Step "):
            steps += 1
            elapsed = time.perf_counter() - started
            log.info("containers.build_step", container=config.id, step=line.split(" :")[0][5:],
                     instruction=line.partition(" : ")[2][:120], s=round(elapsed, 2),
                     steps_per_s=round(steps / max(elapsed, 1e-6), 2))
    client.images.get(tag)  # raises ImageNotFound (an APIError) if nothing was tagged
    log.info("containers.built", container=config.id, image=tag, steps=steps, s=round(time.perf_counter() - started, 2))


def ensure_image(client: docker.DockerClient, config: ContainerConfig, tag: str, docker_config: DockerConfig) -> None:
    """Build the image (config.build), or make sure it is here, pulling it when it is not."""
    if config.build:
        log.info("containers.building", container=config.id, image=tag, context=config.build.context)
        try:
            build_with_progress(client, config, tag)
        except (docker.errors.BuildError, docker.errors.APIError, TypeError, OSError) as exc:
            detail = getattr(exc, "msg", None) or str(exc)
            raise ContainerSetupError(f"container {config.id}: building {tag} failed: {detail}") from None
        return
    try:
        client.images.get(tag)
        return
    except docker.errors.ImageNotFound:
        pass
    creds = docker_config.credentials
    auth = {"username": creds.username, "password": creds.password.get_secret_value()} if creds else None
    log.info("containers.pulling", container=config.id, image=tag)
    try:
        client.images.pull(tag, auth_config=auth)
    except docker.errors.APIError as exc:
        raise ContainerSetupError(
            f"container {config.id}: image {tag} is not available locally and pulling it failed: "
            f"{exc.explanation or exc}"
        ) from None


class ContainerManager:
    def __init__(
        self,
        containers: list[ContainerConfig],
        docker_config: DockerConfig,
        manage: bool,
        client: docker.DockerClient | None = None,
    ) -> None:
        self._configs = {c.id: c for c in containers}
        self._docker_config = docker_config
        self.manage = manage
        self._client = client
        self.states: dict[str, ContainerState] = {}
        self._ports: dict[str, int] = {}
        for c in containers:
            self.states[c.id] = self._new_state(c)
        # Called on the event loop with (container id, urls) when a restart moved a container. The
        # monitor that notices runs in a worker thread; it hands the call to the loop, because what
        # listens (the jobs' endpoints) is the loop's and is read there without locks.
        self.on_url_change: Callable[[str, list[str]], None] | None = None

    def _new_state(self, c: ContainerConfig, suffix: str = "") -> ContainerState:
        """A container's state before it starts (a managed one gets its host port here; a
        successor, `suffix` "-next", is not the container's yet)."""
        if c.url:
            return ContainerState(c.id, c.url, managed=False, status="external", image=c.image)
        if not self.manage:
            return ContainerState(c.id, f"http://127.0.0.1:{c.port}", managed=False, status="external",
                                  image=c.image)
        port = c.port or free_port()
        if not suffix:
            self._ports[c.id] = port
        return ContainerState(c.id, f"http://127.0.0.1:{port}", managed=True,
                              published_url=f"http://127.0.0.1:{port}",
                              name=f"{self._docker_config.name_prefix}{c.id}{suffix}",
                              image=local_image_tag(c), status="starting", host_port=port)

    # -- docker client ------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            if self._docker_config.base_url:
                self._client = docker.DockerClient(base_url=self._docker_config.base_url, timeout=120)
            else:
                self._client = docker.from_env(timeout=120)
        return self._client

    def _managed(self) -> list[ContainerState]:
        return [s for s in list(self.states.values()) if s.managed]

    async def ping(self) -> bool:
        """Is the Docker engine reachable? (False when nothing is managed: not needed.)"""
        try:
            return bool(await asyncio.to_thread(self.client.ping))
        except Exception:  # noqa: BLE001 - any failure means unreachable
            return False

    def readiness_check(self) -> Callable[[], Awaitable[bool]] | None:
        """An extra /health/ready check for this kind of manager (none for local containers)."""
        return None

    # -- start-up -------------------------------------------------------------------------

    async def start(self) -> None:
        """Make sure every managed container's image exists and the container runs."""
        managed = self._managed()
        if not managed:
            return
        try:
            await asyncio.to_thread(self.client.ping)
        except Exception as exc:  # noqa: BLE001 - docker-py raises many kinds here; each means the engine is not usable
            raise ContainerSetupError(f"Docker engine not reachable: {exc}") from None
        started = time.perf_counter()
        for state in managed:  # images one by one: builds compete for the same 2 cores anyway
            await asyncio.to_thread(self._ensure_image, self._configs[state.id], state)
        await asyncio.gather(*(asyncio.to_thread(self._run, self._configs[s.id], s) for s in managed))
        log.info("containers.started", count=len(managed), s=round(time.perf_counter() - started, 2))

    def _ensure_image(self, config: ContainerConfig, state: ContainerState) -> None:
        ensure_image(self.client, config, state.image, self._docker_config)


    def _config_hash(self, config: ContainerConfig, image_id: str, port: int) -> str:
        material = {
            "image": image_id,
            "env": config.env,
            "command": config.command,
            "volumes": config.volumes,
            "port": port,
            "gpu": config.gpu,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]

    def _run(self, config: ContainerConfig, state: ContainerState) -> None:
        port = state.host_port or self._ports[config.id]
        image = self.client.images.get(state.image)
        wanted = self._config_hash(config, image.id, port)
        try:
            existing = self.client.containers.get(state.name)
        except docker.errors.NotFound:
            existing = None
        if existing is not None:
            if existing.labels.get(LABEL_CONFIG) == wanted:
                if existing.status != "running":
                    existing.start()
                self._mark_running(state, existing)
                log.info("containers.reused", container=config.id, name=state.name)
                return
            log.info("containers.replacing", container=config.id, name=state.name, reason="configuration changed")
            existing.remove(force=True)
        kwargs: dict[str, Any] = {
            "name": state.name,
            "detach": True,
            "environment": config.env,
            "ports": {CONTAINER_PORT: ("127.0.0.1", port)},
            "volumes": config.volumes or None,
            "labels": {LABEL_MANAGED: "true", LABEL_CONFIG: wanted},
        }
        if config.command:
            kwargs["command"] = config.command
        if config.gpu:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        try:
            container = self.client.containers.run(image.id, **kwargs)
        except docker.errors.APIError as exc:
            state.status = "failed"
            state.last_error = str(exc.explanation or exc)
            raise ContainerSetupError(f"container {config.id}: cannot start: {state.last_error}") from None
        self._mark_running(state, container)
        log.info("containers.created", container=config.id, name=state.name, url=state.published_url)

    def _mark_running(self, state: ContainerState, container: Any) -> None:
        container.reload()
        state.docker_id = container.id
        state.status = "running"
        state.started_at = time.time()
        networks = container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
        ips = [n.get("IPAddress") for n in networks.values() if n.get("IPAddress")]
        state.network_url = f"http://{ips[0]}:3000" if ips else None
        if state.url not in (state.published_url, state.network_url):
            state.url = state.published_url or state.url

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float) -> list[str]:
        """Wait until every container answers HTTP (any status); returns the ids that did not."""
        return await self._wait_answering(session, list(self.states.values()), time.monotonic() + timeout)

    async def _wait_answering(
        self, session: aiohttp.ClientSession, states: list[ContainerState], deadline: float
    ) -> list[str]:
        started = time.monotonic()

        async def probe(state: ContainerState) -> bool:
            while True:
                for url in self._candidates(state):
                    if await answers(session, url):
                        if url != state.url:
                            state.url = url
                        return True
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(0.1)

        answered = await asyncio.gather(*(probe(s) for s in states))
        silent = [s.id for s, ok in zip(states, answered, strict=True) if not ok]
        for cid in silent:
            log.warning("containers.not_answering", container=cid, waited_s=round(time.monotonic() - started, 1),
                        url=self.states[cid].url)
        return silent

    def _candidates(self, state: ContainerState) -> list[str]:
        if not state.managed:
            return [state.url]
        urls = []
        if self._docker_config.connect_via == "auto" and state.network_url:
            urls.append(state.network_url)
        if state.published_url:
            urls.append(state.published_url)
        return urls

    # -- monitoring -----------------------------------------------------------------------

    def monitored(self) -> bool:
        """Whether there is anything for `check` to watch (containers this node manages)."""
        return bool(self._managed())

    @property
    def monitor_interval(self) -> float:
        return self._docker_config.monitor_interval

    async def check(self) -> None:
        """One round of watching, run every `monitor_interval` by the node's supervisor: restart
        what died, notice what moved."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._check_once, loop)
        except Exception as exc:  # noqa: BLE001 - the engine may be down; the next round looks again
            log.warning("containers.monitor_failed", error=str(exc))

    def _notify(self, loop: asyncio.AbstractEventLoop, state: ContainerState) -> None:
        """From the monitor's worker thread: the new URLs (read here, a snapshot) go to the loop."""
        if self.on_url_change is not None:
            loop.call_soon_threadsafe(self.on_url_change, state.id, state.urls())

    def _check_once(self, loop: asyncio.AbstractEventLoop) -> None:
        for state in self._managed():
            if self.states.get(state.id) is not state:  # removed or replaced by a reload meanwhile
                continue
            try:
                container = self.client.containers.get(state.docker_id or state.name)
            except docker.errors.NotFound:
                log.warning("containers.vanished", container=state.id, name=state.name)
                state.status = "starting"
                self._run(self._configs[state.id], state)
                state.restarts += 1
                self._notify(loop, state)
                continue
            if container.status in ("exited", "dead", "created"):
                exit_code = container.attrs.get("State", {}).get("ExitCode")
                log.warning("containers.restarting", container=state.id, status=container.status, exit_code=exit_code)
                state.status = "restarting"
                container.start()
                state.restarts += 1
                self._mark_running(state, container)
                self._notify(loop, state)
            elif container.status == "running" and state.status != "running":
                state.status = "running"

    # -- live changes (config reload) ------------------------------------------------------

    async def _start_one(self, config: ContainerConfig, state: ContainerState) -> None:
        if state.managed:
            await asyncio.to_thread(self._ensure_image, config, state)
            await asyncio.to_thread(self._run, config, state)

    async def add(self, config: ContainerConfig) -> ContainerState:
        """Start one more container; it is registered (and monitored) once it runs."""
        state = self._new_state(config)
        try:
            await self._start_one(config, state)
        except Exception:
            self._ports.pop(config.id, None)
            await asyncio.to_thread(self._remove, state)
            raise
        self._configs[config.id] = config
        self.states[config.id] = state
        return state

    async def remove(self, cid: str) -> None:
        """Forget a container (no longer monitored) and remove it."""
        state = self.states.pop(cid)
        self._configs.pop(cid, None)
        self._ports.pop(cid, None)
        if state.managed:
            await asyncio.to_thread(self._remove, state)

    def can_run_beside(self, config: ContainerConfig) -> bool:
        """Can the changed container's successor run beside it? Not on the same fixed host port."""
        old = self.states[config.id]
        return not (old.managed and config.port is not None and config.port == self._ports.get(config.id))

    async def start_successor(self, config: ContainerConfig) -> ContainerState:
        """The changed container's successor, started under a temporary name and its own port."""
        state = self._new_state(config, suffix="-next")
        try:
            await self._start_one(config, state)
        except Exception:
            await asyncio.to_thread(self._remove, state)
            raise
        return state

    def swap(self, config: ContainerConfig, successor: ContainerState) -> ContainerState:
        """Make the successor the container (monitored from now on); returns the old state."""
        old = self.states[config.id]
        self._configs[config.id] = config
        if successor.host_port is not None:
            self._ports[config.id] = successor.host_port
        else:
            self._ports.pop(config.id, None)
        self.states[config.id] = successor
        return old

    async def retire(self, old: ContainerState, successor: ContainerState) -> None:
        """Remove the old container (its calls drained), and give the successor its name."""
        if old.managed:
            await asyncio.to_thread(self._remove, old)
        if successor.managed and old.name and successor.docker_id:
            def rename() -> None:
                self.client.containers.get(successor.docker_id).rename(old.name)

            await asyncio.to_thread(rename)
            successor.name = old.name

    async def wait_answering(self, session: aiohttp.ClientSession, states: list[ContainerState],
                             timeout: float) -> list[str]:
        """Wait until these containers answer HTTP; returns the ids that did not."""
        return await self._wait_answering(session, states, time.monotonic() + timeout)

    # -- shutdown -------------------------------------------------------------------------

    async def stop(self) -> None:
        if not self._docker_config.stop_on_exit:
            return
        managed = [s for s in self._managed() if s.docker_id]
        await asyncio.gather(*(asyncio.to_thread(self._remove, s) for s in managed), return_exceptions=True)
        if managed:
            log.info("containers.stopped", count=len(managed))

    def _remove(self, state: ContainerState) -> None:
        if not state.docker_id:
            return
        try:
            container = self.client.containers.get(state.docker_id)
            container.stop(timeout=5)
            container.remove(force=True)
            state.status = "exited"
        except docker.errors.NotFound:
            pass
