"""The chain subsystem: watch a Coordinator, run subscriptions as container jobs through the
node's orchestrator, deliver results on chain from the node's wallet."""
