"""The services a route or hook needs, built once at start-up by ``plugin.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from .config import Settings
from .core.auth import Authenticator
from .store.links import MatchPolicy


class Pacs(Protocol):
    """What the plugin asks of Orthanc (implemented in-process by ``pacs.OrthancPacs``)."""

    def get_json(self, uri: str) -> Any: ...

    def system(self) -> dict[str, Any]: ...

    def statistics(self) -> dict[str, Any]: ...


@dataclass
class Services:
    settings: Settings
    engine: Engine
    pacs: Pacs
    authenticator: Authenticator
    signing_secret: str  # HMAC key for the plugin's own tokens (admin sessions)

    @property
    def match_policy(self) -> MatchPolicy:
        return MatchPolicy(window_days=self.settings.MatchWindowDays, timezone=ZoneInfo(self.settings.Timezone))
