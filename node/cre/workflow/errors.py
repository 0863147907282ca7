"""Errors of the workflow runtime (kept apart so importing them does not load web3)."""


class ActionError(Exception):
    """A clear, user-facing failure of an action (bad signature, expired, reverted, …)."""
