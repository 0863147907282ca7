"""Docker container management (the docker SDK, always off the event loop)."""

from __future__ import annotations

from node.config import ContainerConfig, DockerConfig
from node.containers.manager import ContainerManager


def container_manager(containers: list[ContainerConfig], docker: DockerConfig, manage: bool) -> ContainerManager:
    """The manager for `docker.mode`: local containers, or Swarm services (same interface)."""
    if docker.mode == "swarm" and manage:
        from node.containers.swarm import SwarmManager

        return SwarmManager(containers, docker)
    return ContainerManager(containers, docker, manage)
