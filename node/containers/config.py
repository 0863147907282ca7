"""The `docker:` and `containers:` sections: the engine, and the containers jobs run on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, SecretStr, field_validator

from node.fields import ConfigModel, HttpUrl, LowerAddress, Network


class RegistryCredentials(ConfigModel):
    username: str
    password: SecretStr
    registry: str | None = None


class SwarmConfig(ConfigModel):
    """How the node runs and reaches its containers in `docker.mode: swarm`."""

    # The attachable overlay network the services join (created if missing, reused if there);
    # default "<name_prefix>net" ("node-daemon-net" without a prefix).
    network: str | None = None
    # tasks: each task publishes port 3000 on its machine (host mode) and the node spreads calls
    #        over the running tasks itself (works without IPVS; the node sees every task).
    # mesh:  one port published through the routing mesh on every machine; calls go to
    #        http://<mesh_host>:<port> and Swarm spreads them.
    # vip:   the node runs on the overlay network; calls go to http://<service name>:3000.
    connect_via: Literal["tasks", "mesh", "vip"] = "tasks"
    mesh_host: str = "127.0.0.1"
    # Give up waiting for a new or updated service to converge after this many seconds.
    converge_timeout: float = Field(120.0, gt=0)


class DockerConfig(ConfigModel):
    base_url: str | None = Field(None, description="Engine URL; DOCKER_HOST or the local socket if unset")
    credentials: RegistryCredentials | None = None
    name_prefix: str = Field("", description="Prefix of managed container names")
    # How the node reaches managed containers: "auto" tries the container's own IP on its
    # Docker network first (no userland proxy in the way) and falls back to the port published
    # on 127.0.0.1; "published" always uses the published port.
    connect_via: Literal["auto", "published"] = "auto"
    stop_on_exit: bool = True
    monitor_interval: float = Field(1.0, gt=0)
    # local: one container per configured container on this engine. swarm: one Swarm service
    # per configured container, its tasks spread over the swarm's machines.
    mode: Literal["local", "swarm"] = "local"
    swarm: SwarmConfig = SwarmConfig()


class BuildConfig(ConfigModel):
    context: str
    dockerfile: str | None = None


class ResourcesConfig(ConfigModel):
    """Swarm task resources: limits cap a task, reservations steer placement."""

    cpu_limit: float | None = Field(None, gt=0, description="CPUs (1.5 = one and a half cores)")
    memory_limit: int | None = Field(None, gt=0, description="Bytes")
    cpu_reservation: float | None = Field(None, gt=0)
    memory_reservation: int | None = Field(None, gt=0)
    # Generic resources a machine advertises (dockerd --node-generic-resource), e.g. {"NVIDIA-GPU": 1}.
    generic: dict[str, int] = {}

    def is_set(self) -> bool:
        return self != ResourcesConfig()


class ContainerConfig(ConfigModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    image: str = ""
    build: BuildConfig | None = None
    description: str = ""
    external: bool = True
    port: int | None = Field(None, ge=1, le=65535)
    url: HttpUrl | None = None
    bearer: SecretStr | None = None
    env: dict[str, str] = {}
    command: str | list[str] | None = None
    volumes: list[str] = []
    gpu: bool = False
    generates_proofs: bool = False
    # What this container charges a paid on-chain subscription: {token address: minimum amount in
    # the token's smallest unit}; the zero address is ETH. Empty: it asks nothing (serves free and paid).
    accepted_payments: dict[LowerAddress, NonNegativeInt] = {}
    allowed_ips: list[Network] = []
    allowed_addresses: list[LowerAddress] = []
    allowed_delegate_addresses: list[LowerAddress] = []
    timeout: float = Field(180.0, gt=0)
    concurrency: int = Field(64, ge=1)
    cost_usd: float = Field(0.0, ge=0, description="Charged to a governed job's workflow budget per call")
    # docker.mode swarm only: tasks of the service, where they may run, what each may use.
    replicas: int = Field(1, ge=0)
    placement: list[str] = []
    resources: ResourcesConfig = ResourcesConfig()
    idempotent: bool = Field(False, description="Jobs a crash interrupted are run again (at-least-once)")

    @field_validator("build", mode="before")
    @classmethod
    def _build_shorthand(cls, value: Any) -> Any:
        return {"context": value} if isinstance(value, str) else value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        for item in value:
            if len(item.split(":")) not in (2, 3):
                raise ValueError(f"{item!r} is not 'host:container[:mode]'")
        return value


class JobsConfig(ConfigModel):
    """The `jobs:` section: how much of the containers one client may hold, and for how long.

    The node serves anonymous clients (as the Infernet node does), so these are per client
    address: without them one client's batches could take every in-flight slot
    (`server.max_inflight_jobs`) and one slow reader could hold a container's concurrency."""

    max_inflight_per_client: int = Field(256, ge=0, description="Jobs one client address may have running at "
                                         "once (submit, batch items, streams); over it 429 (0: no cap)")
    max_links_per_request: int = Field(4096, ge=1, description="Container calls one request may ask for: the "
                                       "sum over a batch's jobs of their containers")
    max_job_seconds: float = Field(600.0, gt=0, description="Total time one job may run, all its containers "
                                   "(and a stream's whole output) included; past it the job fails")
    max_streams_per_client: int = Field(8, ge=0, description="Open POST /api/jobs/stream responses per client "
                                        "address; over it 429 (0: no cap)")
    stream_write_timeout: float = Field(30.0, gt=0, description="Seconds a stream client may leave the node's "
                                        "writes unread before it is disconnected")
    poll_hold: float = Field(0.01, ge=0, le=1.0, description="Seconds a GET /api/jobs?id= (without wait=) for "
                             "a running job may wait for its result before answering \"running\": the same "
                             "answer, at most this much later, and one poll per job instead of several (0: at once)")
    # What a container's answer may make the node hold (docs/security/jobs.md, "What a container may
    # send back"): a call's answer is held whole until it is parsed and stored, a stream's is
    # relayed as it comes but kept whole for the job's result. 1 KiB at least (smaller would
    # refuse an ordinary error message), 1 GiB / 16 GiB at most.
    max_output_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1024 ** 3, description="Bytes a container "
                                  "may answer to one call (or announce in its Content-Length); over it the job "
                                  "fails with \"container output over N bytes\"")
    max_stream_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=16 * 1024 ** 3, description="Bytes a container "
                                  "may send in one POST /api/jobs/stream answer; over it the stream ends and the "
                                  "job fails with \"container output over N bytes\"")
