"""The governance gateway (seed 002): accounts and API keys, HMAC-signed SDK calls, workflows
with budgets, policies, the kill switch, audit log, health probes and the WebSocket control
plane. Its JobGate governs every job the orchestrator runs."""
