"""The plugin's error vocabulary: what it refuses, in its own words, without HTTP.

``core/``, ``store/``, the use cases and the Orthanc adapter raise these; the HTTP adapter (api/router.py,
``STATUS``) is the one place that turns each kind into a status. Each carries a ``detail`` safe to show
the caller.
"""

from __future__ import annotations

from collections.abc import Mapping


class DomainError(Exception):
    def __init__(self, detail: str, facts: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.facts = dict(facts or {})  # machine-readable facts the caller may act on (the API sends them as headers)


class FieldError(ValueError):
    """A rule of core/ found one named field invalid (``field``); the caller turns it into Invalid."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Malformed(DomainError):
    """The request cannot be read as sent: no JSON where JSON is due, a file missing from its field."""


class UnsupportedMedia(DomainError):
    """The content is of a type this operation does not take."""


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
    """A dependency is away, or a capacity is used up, for now: retry after ``retry_after_seconds``."""

    def __init__(self, detail: str, retry_after_seconds: int = 5) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


class StorageFull(Unavailable):
    """The archive's storage cannot take what was sent (a full volume): nothing of it was kept; retry once space
    is back (503, ``Retry-After`` a minute)."""

    def __init__(self, detail: str, retry_after_seconds: int = 60) -> None:
        super().__init__(detail, retry_after_seconds)


class RateLimited(DomainError):
    """The caller sent more than its allowance (requests or megabytes per minute): retry after
    ``retry_after_seconds``."""

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


class ArchiveError(Exception):
    """Orthanc answered an in-process call with an error other than "unknown resource" (the Orthanc adapter
    raises it with Orthanc's code). Not part of the vocabulary above: a caller that knows what the refusal
    means says so in its own words (a file Orthanc will not store, an image it cannot decode); anything
    else is an internal error (500, logged)."""

    def __init__(self, where: str, description: str, code: int | None = None) -> None:
        super().__init__(f"Orthanc refused {where}: {description}")
        self.detail = str(self)
        self.description = description  # Orthanc's own words
        self.code = code
