"""THE route table of the EHR API: every route, who may call it, and its handler, in one list.

Each row is (method, path, handler, roles). Handlers are module-level functions ``handler(api, request)``
(api/context.py); role groups come from core.auth; request and response contracts are in api/schemas.py
under the same (method, path) keys, checked against this table by tests/unit/test_route_table.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, update_wrapper

from ..services import Services
from ..viewer.revocations import RevocationList
from . import admin_session, management, openapi, orders, reconciliation, studies, system, tags, uploads, viewer
from .context import Api
from .router import Request, Response, Router

P = "/api/v1/dicom"


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Callable[[Api, Request], Response]
    roles: frozenset[str]


ROUTES: tuple[RouteSpec, ...] = (
    # --- orders ----------------------------------------------------------------------------------------------
    # (rows)

    # --- reconciliation --------------------------------------------------------------------------------------
    # (rows)

    # --- system, admin session, OpenAPI ----------------------------------------------------------------------
    # (rows)

    # --- studies, images, downloads, summaries, upload history -----------------------------------------------
    # (rows)

    # --- tags ------------------------------------------------------------------------------------------------
    # (rows)

    # --- uploads ---------------------------------------------------------------------------------------------
    # (rows)

    # --- viewer tokens and URLs ------------------------------------------------------------------------------
    # (rows)
)


def register_all(router: Router, services: Services, revocations: RevocationList) -> None:
    api = Api.build(services, revocations, router)
    for spec in ROUTES:
        # The bound handler keeps the function's name and docstring (the OpenAPI document reads them).
        bound = update_wrapper(partial(spec.handler, api), spec.handler)
        router.add(spec.method, spec.path, bound, roles=spec.roles)
    # Modules not yet in the table register their own closures (being folded into ROUTES).
    viewer.register(router, services, revocations)
    system.register(router, services)
    admin_session.register(router, services)
    orders.register(router, services)
    reconciliation.register(router, services)
    uploads.register(router, services, api.jobs)
    tags.register(router, services)
    studies.register(router, services)
    management.register(router, services, api.downloads)
    openapi.register(router)  # last: it describes the routes above
