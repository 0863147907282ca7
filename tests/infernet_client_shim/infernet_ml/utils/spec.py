"""`ServiceResources`, the only name infernet-client imports from infernet-ml.

The client uses it only as a type (`cast(dict[str, ServiceResources], body)`), so a plain
dict subclass is enough: the client hands back the node's JSON unchanged either way.
"""

from typing import Any


class ServiceResources(dict[str, Any]):
    """A container's `/service-resources` answer, as the client returns it (plain JSON)."""
