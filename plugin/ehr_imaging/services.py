"""The services a route or hook needs, built once at start-up by ``plugin.py``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from .config import Settings
from .core.auth import Authenticator, TokenVerifier
from .core.events import Endpoint
from .core.holds import StudyHolds
from .core.metrics import Metrics
from .core.rate_limit import RateLimiter
from .store.audit_spool import AuditSpool
from .store.db import Breaker, Engine
from .store.links import MatchPolicy


class Pacs(Protocol):
    """What the plugin asks of Orthanc (implemented in-process by ``pacs.OrthancPacs``)."""

    def get_json(self, uri: str) -> Any: ...

    def get_bytes(self, uri: str, *, after_plugins: bool = False) -> bytes:
        """A binary answer; ``after_plugins`` reaches the routes of other plugins (DICOMweb)."""
        ...

    def lookup(self, uid: str, level: str) -> str | None:
        """The Orthanc ID of the resource of ``level`` ("Study", "Instance", ...) with this DICOM UID, if stored."""
        ...

    def find_study_ids(self, study_uid: str) -> list[str]:
        """Orthanc's IDs of every study with this StudyInstanceUID (one, or more if UIDs collide)."""
        ...

    def post_json(self, uri: str, body: Any) -> Any: ...

    def post_bytes(self, uri: str, body: bytes | memoryview | str) -> bytes: ...

    def post_json_bytes(self, uri: str, body: bytes | memoryview) -> Any: ...

    def delete(self, uri: str) -> None: ...

    def system(self) -> dict[str, Any]: ...

    def statistics(self) -> dict[str, Any]: ...


def _ignore(orthanc_study_id: str) -> None:
    return None


def _no_limit() -> RateLimiter:
    return RateLimiter(0, 0, time.monotonic)


@dataclass
class Services:
    settings: Settings
    engine: Engine
    pacs: Pacs
    authenticator: Authenticator
    signing_secret: str  # HMAC key for the plugin's own tokens (admin sessions, viewer tokens)
    viewer_tokens: TokenVerifier  # verifies the viewer tokens the plugin issued
    # Called with an Orthanc study ID after a link made outside ingest (a person, a late order, an upload),
    # so the ingest worker revisits it for tag coercion. plugin.py connects it to the worker only when
    # CoerceTags is on: otherwise the study is already recorded and revisiting would repeat the work.
    revisit_study: Callable[[str], None] = _ignore
    # Queue a study for the ingest worker (plugin.py connects it): an upload that stored files but could not
    # record them (database down) hands its studies over, so they are recorded once it is back.
    ingest_later: Callable[[str], None] = _ignore
    # Hand the ingest worker a study Orthanc no longer holds, to audit its deletion (the paged repair's findings).
    ingest_deleted: Callable[[str], None] = _ignore
    tls: bool = False  # Orthanc's port is served over TLS (SslEnabled): cookies get the Secure flag
    node: str = ""  # this Orthanc node (host:HTTP port): who runs an upload job whose archive is on its disk
    log_error: Callable[[str], None] = _ignore
    log_warning: Callable[[str], None] = _ignore
    holds: StudyHolds = field(default_factory=StudyHolds)  # studies an upload is writing (here; others' as read)
    metrics: Metrics = field(default_factory=Metrics)  # this node's metrics (app/metrics_publisher.py)
    upload_limiter: RateLimiter = field(default_factory=_no_limit)  # per caller, this node (app/upload_limits.py)
    # Open while the database does not answer (app/database_monitor.py): the engine refuses at once (503).
    database: Breaker = field(default_factory=Breaker)
    event_endpoints: tuple[Endpoint, ...] = ()  # EventEndpoints, parsed (app/event_delivery.py sends to them)
    # Where audit rows go while PostgreSQL is away (DIMSE queries; store/dimse_audit.py); None: refused instead.
    audit_spool: AuditSpool | None = None

    @property
    def match_policy(self) -> MatchPolicy:
        return MatchPolicy(window_days=self.settings.MatchWindowDays, timezone=ZoneInfo(self.settings.Timezone),
                           order_status_updates=self.settings.OrderStatusUpdates)
