"""Docker container management (the docker SDK, always off the event loop).

The managers are imported when one is made, so loading the config (node.containers.config)
does not load the docker SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.containers.config import ContainerConfig, DockerConfig

if TYPE_CHECKING:
    from node.containers.manager import ContainerManager


def container_manager(containers: list[ContainerConfig], docker: DockerConfig, manage: bool) -> ContainerManager:
    """The manager for `docker.mode`: local containers, or Swarm services (same interface)."""
    if docker.mode == "swarm" and manage:
        from node.containers.swarm import SwarmManager

        return SwarmManager(containers, docker)
    from node.containers.manager import ContainerManager

    return ContainerManager(containers, docker, manage)
