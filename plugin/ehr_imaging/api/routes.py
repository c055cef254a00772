"""Every route of the EHR API, registered on one router: the one list plugin.py and the tests share."""

from __future__ import annotations

from ..services import Services
from ..viewer.revocations import RevocationList
from . import admin_session, management, openapi, orders, reconciliation, studies, system, tags, uploads, viewer
from .router import Router


def register_all(router: Router, services: Services, revocations: RevocationList) -> None:
    viewer.register(router, services, revocations)
    system.register(router, services)
    admin_session.register(router, services)
    orders.register(router, services)
    reconciliation.register(router, services)
    uploads.register(router, services)
    tags.register(router, services)
    studies.register(router, services)
    management.register(router, services)
    openapi.register(router)  # last: it describes the routes above
