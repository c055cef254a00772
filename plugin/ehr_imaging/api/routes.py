"""THE route table of the EHR API: every route, who may call it, and its handler, in one list.

Each row is (method, path, handler, roles). Handlers are module-level functions ``handler(api, request)``
(api/context.py); role groups come from core.auth; request and response contracts are in api/schemas.py
under the same (method, path) keys, checked against this table by tests/unit/test_route_table.py.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial, update_wrapper

from ..core import auth
from ..services import Services
from ..viewer.revocations import RevocationList
from . import admin_session, management, openapi, orders, reconciliation, studies, system, tags, uploads, viewer
from .context import Api
from .router import ANY_ROLE, PUBLIC, Request, Response, Router

P = "/api/v1/dicom"


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Callable[[Api, Request], Response]
    roles: Collection[str]  # a role group of core/auth.py (a tuple), or router.PUBLIC / ANY_ROLE


ROUTES: tuple[RouteSpec, ...] = (
    # --- orders ----------------------------------------------------------------------------------------------
    # Reading an order: viewing (it carries the patient's demographics and, once matched, the study).
    RouteSpec("PUT",    f"{P}/orders/{{order_id}}",          orders.put_order,              auth.ORDER_WRITING),
    RouteSpec("GET",    f"{P}/orders/{{order_id}}",          orders.get_order,              auth.VIEWING),
    RouteSpec("DELETE", f"{P}/orders/{{order_id}}",          orders.cancel_order,           auth.ORDER_WRITING),
    RouteSpec("GET",    f"{P}/orders",                       orders.list_orders,            auth.VIEWING),

    # --- reconciliation --------------------------------------------------------------------------------------
    # The match status names the order (and its patient): viewing. Forcing a link is checked inside link().
    RouteSpec("GET",    f"{P}/unmatched",                    reconciliation.list_unmatched, auth.RECONCILING),
    RouteSpec("GET",    f"{P}/studies/{{study_uid}}/match",  reconciliation.match,          auth.VIEWING),
    RouteSpec("POST",   f"{P}/studies/{{study_uid}}/link",   reconciliation.link,           auth.RECONCILING),
    RouteSpec("POST",   f"{P}/studies/{{study_uid}}/unlink", reconciliation.unlink,         auth.RECONCILING),

    # --- system, admin session, OpenAPI ----------------------------------------------------------------------
    # OpenAPI: any role, not public: it carries the plugin version and who may call what; every consumer holds a token.
    RouteSpec("GET",    f"{P}/health",                       system.health,                 PUBLIC),
    RouteSpec("GET",    f"{P}/stats",                        system.stats,                  ANY_ROLE),
    RouteSpec("GET",    f"{P}/admin/login",                  admin_session.login,           PUBLIC),
    RouteSpec("POST",   f"{P}/admin/logout",                 admin_session.logout,          PUBLIC),
    RouteSpec("GET",    f"{P}/openapi.json",                 openapi.openapi,               ANY_ROLE),

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
    uploads.register(router, services, api.jobs)
    tags.register(router, services)
    studies.register(router, services)
    management.register(router, services, api.downloads)
