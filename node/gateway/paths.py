"""Where the gateway's REST API lives; each resource module builds its routes under it."""

PREFIX = "/api/v1"
