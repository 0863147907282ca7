"""The CRE workflow actions of seed 001: typed requests, and a local CRE-compatible runtime
that executes them against the chain (reports through a forwarder), for offline development."""
