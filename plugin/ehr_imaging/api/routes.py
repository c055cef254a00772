"""THE route table of the EHR API: every route, who may call it, and its handler, in one list.

Each row is (method, path, handler, roles). Handlers are module-level functions ``handler(api, request)``
(api/context.py); role groups come from core.auth; request and response contracts are in api/schemas.py
under the same (method, path) keys, checked against this table by tests/unit/test_route_table.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, update_wrapper

from ..core import auth
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
    RouteSpec("POST", f"{P}/upload",                 uploads.upload,           frozenset(auth.UPLOADING)),
    RouteSpec("POST", f"{P}/upload-multiple",        uploads.upload_multiple,  frozenset(auth.UPLOADING)),
    RouteSpec("POST", f"{P}/upload-zip",             uploads.upload_zip,       frozenset(auth.UPLOADING)),
    RouteSpec("GET",  f"{P}/upload-jobs/{{job_id}}", uploads.upload_job,       frozenset(auth.UPLOADING)),
    RouteSpec("POST", f"{P}/offline/metadata",       uploads.offline_metadata, frozenset(auth.UPLOADING)),
    RouteSpec("POST", f"{P}/offline/binary",         uploads.offline_binary,   frozenset(auth.UPLOADING)),
    RouteSpec("POST", f"{P}/offline/ack",            uploads.offline_ack,      frozenset(auth.UPLOADING)),

    # --- viewer tokens and URLs ------------------------------------------------------------------------------
    RouteSpec("POST", f"{P}/viewer-token",                      viewer.viewer_token,       frozenset(auth.VIEWING)),
    RouteSpec("POST", f"{P}/viewer-token/revoke",               viewer.revoke,             frozenset(auth.VIEWING)),
    RouteSpec("GET",  f"{P}/viewer-url/{{study_uid}}",          viewer.viewer_url_study,   frozenset(auth.VIEWING)),
    RouteSpec("GET",  f"{P}/viewer-url/order/{{order_id}}",     viewer.viewer_url_order,   frozenset(auth.VIEWING)),
    RouteSpec("GET",  f"{P}/viewer-url/patient/{{patient_id}}", viewer.viewer_url_patient, frozenset(auth.VIEWING)),
)


def register_all(router: Router, services: Services, revocations: RevocationList) -> None:
    api = Api.build(services, revocations, router)
    for spec in ROUTES:
        # The bound handler keeps the function's name and docstring (the OpenAPI document reads them).
        bound = update_wrapper(partial(spec.handler, api), spec.handler)
        router.add(spec.method, spec.path, bound, roles=spec.roles)
    # Modules not yet in the table register their own closures (being folded into ROUTES).
    system.register(router, services)
    admin_session.register(router, services)
    orders.register(router, services)
    reconciliation.register(router, services)
    tags.register(router, services)
    studies.register(router, services)
    management.register(router, services, api.downloads)
    openapi.register(router)  # last: it describes the routes above
