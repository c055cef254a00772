"""The plugin's error vocabulary: what it refuses, in its own words, without HTTP.

``core/``, ``store/``, the use cases and the Orthanc adapter raise these; the HTTP adapter (api/router.py,
``STATUS``) is the one place that turns each kind into a status. Each carries a ``detail`` safe to show
the caller.
"""

from __future__ import annotations


class DomainError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Invalid(DomainError):
    """The request is well formed but its content is not acceptable."""


class NotFound(DomainError):
    """What it names does not exist (or is not the caller's to know of)."""


class Conflict(DomainError):
    """It contradicts the current state: a link taken, an order cancelled, a UID held by another patient."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class TooLarge(DomainError):
    """Over a configured limit."""


class Unavailable(DomainError):
    """A dependency is away for now: retry later."""
