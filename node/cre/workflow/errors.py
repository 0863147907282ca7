"""Errors of the workflow runtime (kept apart so importing them does not load web3)."""


class ActionError(Exception):
    """A clear, user-facing failure of an action (bad signature, expired, reverted, …)."""


class ActionConflict(ActionError):
    """The action would overwrite something that exists (an agent's key): answered 409."""
