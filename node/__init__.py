"""The node daemon: chained Docker container jobs behind an Infernet-compatible API."""

__version__ = "0.1.0"
