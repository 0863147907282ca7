"""Domain errors: what went wrong, in the terms of the service that found it.

Services, stores and background loops raise these; they never name an HTTP status. The HTTP edge
(`node/server/http.py`'s error middleware) maps each kind to its status once and renders it in
the error shape of the request's API family, exactly as it renders an `ApiError` raised by a
handler. A background loop (the relayer, a watcher) catches them as what they are: a refusal,
not a transport failure.

`params` carries extra fields for the family's error shape (for example the registry's seed
word `{"error": "Unauthorized"}` on a 409). `retry_after` (seconds) says when the same request may
succeed: the edge sends it as a `Retry-After` header (whole seconds, at least 1); put it in
`params` too when the body should carry it.

The kinds and the status the edge gives each (`DOMAIN_STATUS` in node/server/http.py): Invalid
400, Unauthenticated 401, PaymentRequired 402, Forbidden 403, NotFound 404, Conflict 409, Busy
429, Unavailable 503.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    def __init__(self, message: str, params: dict[str, Any] | None = None, *,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.params = params
        self.retry_after = retry_after


class Invalid(DomainError):
    """The request is well-formed but its content is not acceptable (400)."""


class Unauthenticated(DomainError):
    """A credential or signature is missing, wrong, expired or already used (401)."""


class PaymentRequired(DomainError):
    """The work is allowed but not paid for: no budget, or the payer cannot pay (402)."""


class Forbidden(DomainError):
    """The caller is known but not allowed to do this (403)."""


class NotFound(DomainError):
    """The thing named does not exist, or not for this caller (404)."""


class Conflict(DomainError):
    """The thing's current state does not allow this (409)."""


class Busy(DomainError):
    """This node (or this caller's share of it) is at capacity right now; try again after
    `retry_after` seconds (429)."""

    def __init__(self, message: str, params: dict[str, Any] | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message, params, retry_after=retry_after)


class Unavailable(DomainError):
    """This node is not set up to do this (503)."""


class StartupError(Exception):
    """The node cannot start as configured; the message says what to change. The command line
    prints it as one log line and exits 1 (not a domain error: no request is involved)."""
