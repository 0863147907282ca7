"""Observability: Prometheus metrics, the operator status endpoint, CLI and page, and the problem watchdog."""
