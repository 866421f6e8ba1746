"""What the domain refuses, in its own words: :func:`app.errors.refusal` answers each, the same
within Quart and below it (:mod:`app.front`). Storage trouble is the store's own
(:class:`app.store.StorageUnavailableError`)."""

from __future__ import annotations

import math


class UnknownTokenError(Exception):
    """A token that does not verify, has expired, or opens no session."""


class InvalidWaitError(ValueError):
    """A ``wait`` that is no number of seconds the status API holds an answer for."""


class TooManyRequestsError(Exception):
    """Over a limit: come back in ``retry_after`` seconds (whole, at least 1)."""

    def __init__(self, wait: float) -> None:
        super().__init__("too many requests; try again later")
        self.retry_after = math.ceil(wait)


class RefusedWebhookError(Exception):
    """A request to the webhook route that is no webhook of the provider's: answered ``status``
    with ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
