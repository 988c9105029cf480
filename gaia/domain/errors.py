"""The platform's error hierarchy.

Every error a user can cause is a ``GaiaError`` with a stable ``code`` (the JSON error body's
``code``), a message that says what to do, and structured ``details``. The API layer maps each class
to one HTTP status; nothing below the API knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class GaiaError(Exception):
    """Base of all errors that are the caller's to fix (or to retry)."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(GaiaError):
    code = "invalid_request"


class Unauthenticated(GaiaError):
    code = "unauthenticated"


class Forbidden(GaiaError):
    code = "forbidden"


class NotFound(GaiaError):
    code = "not_found"


class Conflict(GaiaError):
    code = "conflict"


class NotManaged(Conflict):
    """An object in a cluster exists but Gaia did not make it (no managed-by label): Gaia never
    overwrites or deletes it."""

    code = "not_managed"


class TooManyRequests(GaiaError):
    """Refused for now; ``retry_after`` says in how many seconds a retry may succeed (the API
    sends it as ``Retry-After``)."""

    code = "too_many_requests"

    def __init__(
        self, message: str, *, retry_after: int | None = None, details: Any = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class QuotaExceeded(GaiaError):
    """An admission that does not fit; ``details`` lists every dimension that overflows."""

    code = "quota_exceeded"


class ClusterUnavailable(GaiaError):
    """The cluster did not answer; the request may succeed once it is back."""

    code = "cluster_unavailable"


class Unsupported(GaiaError):
    """The operation exists but this kind of cluster does not offer it (yet)."""

    code = "unsupported"
