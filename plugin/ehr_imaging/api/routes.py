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
    RouteSpec("GET",    f"{P}/studies",                         studies.list_studies,       frozenset(auth.VIEWING)),
    RouteSpec("GET",    f"{P}/studies/patient/{{patient_id}}",  studies.patient_studies,    frozenset(auth.VIEWING)),
    RouteSpec("GET",    f"{P}/studies/order/{{order_id}}",      studies.order_studies,      frozenset(auth.VIEWING)),
    RouteSpec("GET",    f"{P}/studies/accession/{{accession}}", studies.accession_studies,  frozenset(auth.VIEWING)),
    RouteSpec("GET",    f"{P}/studies/{{study_uid}}",           studies.get_study,          frozenset(auth.VIEWING)),
    RouteSpec("DELETE", f"{P}/studies/{{study_uid}}",           studies.delete_study,       frozenset(auth.DELETING)),
    RouteSpec("GET",    f"{P}/download/{{study_uid}}",          management.download,        frozenset(auth.VIEWING)),
    RouteSpec("GET",    f"{P}/thumbnail/{{study_uid}}",         management.thumbnail,       frozenset(auth.VIEWING)),
    RouteSpec("GET",    f"{P}/render/{{sop_instance_uid}}",     management.render,          frozenset(auth.VIEWING)),
    RouteSpec("POST",   f"{P}/clinical-summary/{{study_uid}}",  management.summary,         frozenset(auth.VIEWING)),
    RouteSpec("GET",    f"{P}/uploads",                         management.list_uploads,    frozenset(auth.AUDITING)),
    RouteSpec("GET",    f"{P}/uploads/patient/{{patient_id}}",  management.patient_uploads, frozenset(auth.AUDITING)),
    RouteSpec("GET",    f"{P}/uploads/{{upload_id}}",           management.get_upload,      frozenset(auth.AUDITING)),

    # --- tags ------------------------------------------------------------------------------------------------
    RouteSpec("POST", f"{P}/validate",           tags.validate,    frozenset(auth.UPLOADING)),
    RouteSpec("POST", f"{P}/read-tags",          tags.read_tags,   frozenset(auth.FILE_READING)),
    RouteSpec("POST", f"{P}/modify-tags",        tags.modify_tags, frozenset(auth.UPLOADING)),
    RouteSpec("POST", f"{P}/deidentify",         tags.deidentify,  frozenset(auth.UPLOADING)),
    RouteSpec("GET",  f"{P}/tags/{{study_uid}}", tags.study_tags,  frozenset(auth.VIEWING)),

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
    openapi.register(router)  # last: it describes the routes above
