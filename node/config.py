"""The node's configuration: `config.yaml` parsed into one `NodeConfig`.

Each subsystem owns its section's model (node/<subsystem>/config.py; shared field types in
node/fields.py). This module only assembles them, checks the references between sections
(pipelines and routes naming containers), replaces `${VAR}` / `${VAR:-default}` in every
string, and loads the file. Unknown keys are errors (a typo must never silently disable a
feature) and secrets are `SecretStr` so they never show up in logs or reprs. Environment
fallbacks are read once, here, through the validation context (`parse_config(env=...)`).

The file may also be Ritual Infernet node's `config.json`, unmodified (node/infernet_config.py
translates it): recognised by a `.json` name or by keys only Infernet's form has. `read_config`
says which form was read, what the translation ignored (one note per key, to be logged), and the
file's hash and load time (shown on the status page, so an operator sees which file is live).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, model_validator

from node.chain.config import ChainConfig
from node.containers.config import ContainerConfig, DockerConfig, JobsConfig
from node.cre.config import CreConfig
from node.fields import ConfigModel
from node.gateway.config import GatewayConfig
from node.infernet_config import SIDECAR_NAME, InfernetFormError, looks_like_infernet, read_infernet
from node.logs import get_logger
from node.observe.config import ObserveConfig
from node.registry.config import RegistryConfig
from node.server.config import LogConfig, ServerConfig
from node.storage.config import StorageConfig

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class ConfigError(Exception):
    """A config that cannot be used; the message names the file and the field."""


# Keys that moved, as (old dotted path, new top-level key): an old config still loads, the old
# key fills the new one, and the load says so once.
_MOVED = (("gateway.master_key_path", "master_key_path"),)


class NodeConfig(ConfigModel):
    # The node's, not one subsystem's: the gateway and CRE both seal with it (node/secrets.py).
    master_key_path: str = Field("node.key", description="The node's master key: AES-256-GCM key sealing the "
                                 "gateway's API secret keys and CRE workflow secrets (created 0600 if missing; "
                                 "relative to the config file). Was gateway.master_key_path, still read")
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    docker: DockerConfig = DockerConfig()
    manage_containers: bool = True
    startup_wait: float = Field(60.0, ge=0, description="Seconds to wait for containers to answer")
    containers: list[ContainerConfig] = []
    jobs: JobsConfig = JobsConfig()
    log: LogConfig = LogConfig()
    chain: ChainConfig = ChainConfig()
    # Validated even when absent, so their environment fallbacks are read from this parse's env.
    cre: CreConfig = Field(default_factory=dict, validate_default=True)
    gateway: GatewayConfig = Field(default_factory=dict, validate_default=True)
    registry: RegistryConfig = RegistryConfig()
    observe: ObserveConfig = ObserveConfig()

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any, info: ValidationInfo) -> Any:
        """`gateway.master_key_path` (before the key became the node's) fills `master_key_path`;
        both set to different files is an error: which one seals the secrets must be plain."""
        if not isinstance(data, dict):
            return data
        for old, new in _MOVED:
            section, key = old.split(".")
            if not isinstance(data.get(section), dict) or key not in data[section]:
                continue
            value = data[section][key]
            if new in data and data[new] != value:
                raise ValueError(f"{old} ({value!r}) and {new} ({data[new]!r}) are both set and differ: "
                                 f"keep {new} only")
            data = {**data, section: {k: v for k, v in data[section].items() if k != key}, new: value}
            if info.context is not None:
                info.context.setdefault("deprecated", []).append(f"{old} is deprecated: read as {new}")
        return data

    def _swarm_fields_consistent(self) -> None:
        swarm = self.docker.mode == "swarm"
        if swarm and not self.manage_containers:
            raise ValueError("docker.mode: swarm needs manage_containers true (the node runs the services)")
        for index, c in enumerate(self.containers):
            where = f"containers.{index}"
            if not swarm:
                for name, used in (("replicas", c.replicas != 1), ("placement", bool(c.placement)),
                                   ("resources", c.resources.is_set())):
                    if used:
                        raise ValueError(f"{where}.{name}: only used with docker.mode: swarm")
            elif c.gpu and c.url is None:
                raise ValueError(f"{where}.gpu: in swarm mode ask for GPUs with resources.generic "
                                 "(e.g. {NVIDIA-GPU: 1}) and a placement constraint")

    @model_validator(mode="after")
    def _containers_consistent(self) -> NodeConfig:
        seen: set[str] = set()
        for index, container in enumerate(self.containers):
            where = f"containers.{index}"
            if container.id in seen:
                raise ValueError(f"{where}.id: duplicate container id {container.id!r}")
            seen.add(container.id)
            if container.url is None:
                if self.manage_containers and not (container.image or container.build):
                    raise ValueError(f"{where}.image: a managed container needs image or build (or url)")
                if not self.manage_containers and container.port is None:
                    raise ValueError(
                        f"{where}: with manage_containers false, give url or port of the running service"
                    )
        self._swarm_fields_consistent()
        known = {c.id for c in self.containers}
        for index, pipeline in enumerate(self.chain.pipelines):
            unknown = [c for c in pipeline if c not in known]
            if unknown or not pipeline:
                raise ValueError(f"chain.pipelines.{index}: unknown or empty container chain {pipeline}")
        for cid, route in self.registry.tasks.items():
            unknown = [c for c in route.containers if c not in known]
            if unknown:
                raise ValueError(f"registry.tasks.{cid}.containers: unknown container(s) {unknown}")
        for action_type, action_route in self.cre.actions.items():
            unknown = [c for c in action_route.containers if c not in known]
            if unknown:
                raise ValueError(f"cre.actions.{action_type}.containers: unknown container(s) {unknown}")
        return self


def substitute_env(value: Any, env: dict[str, str], path: str = "") -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of a parsed YAML tree."""
    if isinstance(value, dict):
        return {k: substitute_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")

        return _ENV_REF.sub(repl, value)
    return value


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config", env: dict[str, str] | None = None) -> NodeConfig:
    """Validate a parsed config; a deprecated key read is logged here (one line each)."""
    config, deprecated = _validate(data, source, env)
    for note in deprecated:
        get_logger("node.config").warning("config.deprecated", source=source, note=note)
    return config


def _validate(data: Any, source: str, env: dict[str, str] | None) -> tuple[NodeConfig, tuple[str, ...]]:
    """The config and the deprecated keys it used (for the caller to report once)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    env = dict(os.environ) if env is None else env
    data = substitute_env(data, env)
    context: dict[str, Any] = {"env": env}
    try:
        config = NodeConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    return config, tuple(context.get("deprecated", ()))


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from."""

    config: NodeConfig
    path: Path
    form: str  # "yaml" (ours) or "infernet" (Ritual's config.json)
    notes: tuple[str, ...]  # Infernet keys that mean nothing here, and what the node does instead
    sha256: str  # of the file's bytes (and node.yaml beside an Infernet config)
    loaded_at: float  # Unix time
    deprecated: tuple[str, ...] = ()  # keys read under an old name, and the name they now have

    def status(self) -> dict[str, object]:
        return {"path": str(self.path), "form": self.form, "sha256": self.sha256, "loaded_at": self.loaded_at}


def read_config(path: str | Path, env: dict[str, str] | None = None) -> LoadedConfig:
    """Read, substitute and validate a config file, ours or Infernet's. Relative paths inside it
    (storage, build contexts, log file) are resolved against the file's folder."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    digest = hashlib.sha256(text)
    notes: tuple[str, ...] = ()
    form = "yaml"
    try:
        if path.suffix.lower() == ".json":
            form = "infernet"
            translation = read_infernet(path)
        else:
            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from None
            if looks_like_infernet(raw):
                form = "infernet"
                translation = read_infernet(path, raw)
    except InfernetFormError as exc:
        raise ConfigError(str(exc)) from None
    if form == "infernet":
        raw, notes = translation.data, tuple(translation.notes)
        sidecar = path.parent / SIDECAR_NAME
        if sidecar.is_file():
            digest.update(sidecar.read_bytes())
    config, deprecated = _validate(raw, str(path), env)
    return LoadedConfig(resolve_paths(config, path.resolve().parent), path.resolve(), form, notes, digest.hexdigest(),
                        time.time(), deprecated)


def load_config(path: str | Path, env: dict[str, str] | None = None) -> NodeConfig:
    """`read_config`'s config alone."""
    return read_config(path, env).config


def resolve_paths(config: NodeConfig, base: Path) -> NodeConfig:
    def absolute(p: str) -> str:
        return p if p == ":memory:" or os.path.isabs(p) else str(base / p)

    containers = [
        c.model_copy(update={"build": c.build.model_copy(update={"context": absolute(c.build.context)})})
        if c.build
        else c
        for c in config.containers
    ]
    update: dict[str, Any] = {
        "storage": config.storage.model_copy(update={"path": absolute(config.storage.path)}),
        "containers": containers,
    }
    oauth = config.gateway.oauth
    providers = {name: p.model_copy(update={"jwks_file": absolute(p.jwks_file)}) if p.jwks_file else p
                 for name, p in oauth.providers.items()}
    update["gateway"] = config.gateway.model_copy(update={"oauth": oauth.model_copy(update={"providers": providers})})
    update["master_key_path"] = absolute(config.master_key_path)
    if config.log.path:
        update["log"] = config.log.model_copy(update={"path": absolute(config.log.path)})
    return config.model_copy(update=update)
