"""Config reload without a restart (`SIGHUP`, `node-daemon reload`): what changed, and what of it
can apply to a running node.

A restart drops streams, WebSocket clients and in-flight jobs and re-runs start-up, so the keys
operators tune often apply live: containers (added, removed, changed), the rate limits, the log
level, and each container's allow-lists, limits and prices. Everything else is wired into
subsystems at start-up (the database, the listener's address, the chain, the gateway's keys...),
so a change there is listed, once, and left for the next start: the running node keeps the old
value, and says so, rather than half-applying it.

`plan` compares two validated configs; the node (node/app.py) applies the plan, the containers
through node/jobs/rollout.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.config import NodeConfig
from node.containers.config import ContainerConfig

# Container keys that change the container itself (it is rolled: a successor replaces it).
# Any other container key (allow-lists, external, timeout, concurrency, prices, ...) only changes
# how the node calls it.
ROLLED_KEYS = ("image", "build", "env", "command", "volumes", "port", "gpu", "url")
# Keys applied live outside `containers`.
LIVE_KEYS = ("log.level", "server.rate_limit", "server.auth_rate_limit")


@dataclass
class ReloadPlan:
    added: list[ContainerConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rolled: list[ContainerConfig] = field(default_factory=list)  # the container itself changed
    retuned: list[ContainerConfig] = field(default_factory=list)  # only how it is called changed
    live: list[str] = field(default_factory=list)  # LIVE_KEYS that changed
    restart: list[str] = field(default_factory=list)  # changed keys that need a restart

    @property
    def containers_changed(self) -> bool:
        return bool(self.added or self.removed or self.rolled or self.retuned)

    def summary(self) -> dict[str, Any]:
        return {"added": [c.id for c in self.added], "removed": self.removed,
                "rolled": [c.id for c in self.rolled], "retuned": [c.id for c in self.retuned],
                "live": self.live, "restart_needed": self.restart}


def _changed_keys(old: Any, new: Any, path: str) -> list[str]:
    """Dotted keys whose values differ, two levels deep (section.key)."""
    if isinstance(old, dict) and isinstance(new, dict) and path.count(".") < 1:
        keys: list[str] = []
        for key in sorted(old.keys() | new.keys()):
            keys += _changed_keys(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return keys
    return [] if old == new else [path]


def plan(old: NodeConfig, new: NodeConfig, containers_live: bool = True) -> ReloadPlan:
    """What `new` changes on a node running `old`. `containers_live` is False where containers
    cannot change live (Swarm mode): a container change then needs a restart."""
    result = ReloadPlan()
    before = {c.id: c for c in old.containers}
    after = {c.id: c for c in new.containers}
    if containers_live:
        result.added = [c for cid, c in after.items() if cid not in before]
        result.removed = [cid for cid in before if cid not in after]
        for cid, c in after.items():
            if cid in before and c != before[cid]:
                rolled = any(getattr(c, k) != getattr(before[cid], k) for k in ROLLED_KEYS)
                (result.rolled if rolled else result.retuned).append(c)
    exclude: dict[str, Any] = {"log": {"level"}, "server": {"rate_limit", "auth_rate_limit"}}
    if containers_live:
        exclude["containers"] = True
    for key in LIVE_KEYS:
        section, name = key.split(".")
        if getattr(getattr(old, section), name) != getattr(getattr(new, section), name):
            result.live.append(key)
    result.restart = _changed_keys(old.model_dump(exclude=exclude), new.model_dump(exclude=exclude), "")
    # Secrets dump as '**********' on both sides: compare them by value.
    for section, name in (("chain", "wallet"), ("server", "admin_token")):
        a, b = getattr(getattr(old, section), name), getattr(getattr(new, section), name)
        key = f"{section}.{name}"
        if a != b and key not in result.restart:
            result.restart.append(key)
    return result


def applied(old: NodeConfig, new: NodeConfig, reload_plan: ReloadPlan) -> NodeConfig:
    """The config the node runs after the reload: `new` where it applied live, `old` elsewhere."""
    update: dict[str, Any] = {
        "log": old.log.model_copy(update={"level": new.log.level}),
        "server": old.server.model_copy(update={"rate_limit": new.server.rate_limit,
                                                "auth_rate_limit": new.server.auth_rate_limit}),
    }
    if reload_plan.containers_changed:
        update["containers"] = new.containers
    return old.model_copy(update=update)
