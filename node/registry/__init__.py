"""The task registry of seed 004 (accounts, tasks, projects, maintainers, signed configs, oracle
inputs, relayer executions, intents and solver proposals), and the node as one of its relayers:
configs with a cron trigger run on the node as container jobs."""
