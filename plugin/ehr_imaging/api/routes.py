"""THE route table of the EHR API: every route, who may call it, and its handler, in one list.

Each row is (method, path, handler, roles). Handlers are module-level functions ``handler(api, request)``
(api/context.py); role groups come from core.auth; request and response contracts are in api/schemas.py
under the same (method, path) keys, checked against this table by tests/unit/test_route_table.py.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial, update_wrapper

from ..app.token_revocations import RevocationList
from ..core import auth
from ..services import Services
from . import admin_session, management, openapi, orders, reconciliation, studies, system, tags, uploads
from . import viewer_tokens as viewer
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
    RouteSpec("PUT",    f"{P}/orders/{{order_id}}",               orders.put_order,              auth.ORDER_WRITING),
    RouteSpec("GET",    f"{P}/orders/{{order_id}}",               orders.get_order,              auth.VIEWING),
    RouteSpec("DELETE", f"{P}/orders/{{order_id}}",               orders.cancel_order,           auth.ORDER_WRITING),
    RouteSpec("GET",    f"{P}/orders",                            orders.list_orders,            auth.VIEWING),

    # --- reconciliation --------------------------------------------------------------------------------------
    # The match status names the order (and its patient): viewing. Forcing a link is checked inside link().
    RouteSpec("GET",    f"{P}/unmatched",                         reconciliation.list_unmatched, auth.RECONCILING),
    RouteSpec("GET",    f"{P}/studies/{{study_uid}}/match",       reconciliation.match,          auth.VIEWING),
    RouteSpec("POST",   f"{P}/studies/{{study_uid}}/link",        reconciliation.link,           auth.RECONCILING),
    RouteSpec("POST",   f"{P}/studies/{{study_uid}}/unlink",      reconciliation.unlink,         auth.RECONCILING),

    # --- system, admin session, OpenAPI ----------------------------------------------------------------------
    # OpenAPI: any role, not public: it carries the plugin version and who may call what; every consumer holds a token.
    RouteSpec("GET",    f"{P}/health",                            system.health,                 PUBLIC),
    RouteSpec("GET",    f"{P}/stats",                             system.stats,                  ANY_ROLE),
    RouteSpec("GET",    f"{P}/admin/login",                       admin_session.login,           PUBLIC),
    RouteSpec("POST",   f"{P}/admin/logout",                      admin_session.logout,          PUBLIC),
    RouteSpec("GET",    f"{P}/openapi.json",                      openapi.openapi,               ANY_ROLE),

    # --- studies, images, downloads, summaries, upload history -----------------------------------------------
    RouteSpec("GET",    f"{P}/studies",                           studies.list_studies,          auth.VIEWING),
    RouteSpec("GET",    f"{P}/studies/patient/{{patient_id}}",    studies.patient_studies,       auth.VIEWING),
    RouteSpec("GET",    f"{P}/studies/order/{{order_id}}",        studies.order_studies,         auth.VIEWING),
    RouteSpec("GET",    f"{P}/studies/accession/{{accession}}",   studies.accession_studies,     auth.VIEWING),
    RouteSpec("GET",    f"{P}/studies/{{study_uid}}",             studies.get_study,             auth.VIEWING),
    RouteSpec("DELETE", f"{P}/studies/{{study_uid}}",             studies.delete_study,          auth.DELETING),
    RouteSpec("GET",    f"{P}/download/{{study_uid}}",            management.download,           auth.VIEWING),
    RouteSpec("GET",    f"{P}/thumbnail/{{study_uid}}",           management.thumbnail,          auth.VIEWING),
    RouteSpec("GET",    f"{P}/render/{{sop_instance_uid}}",       management.render,             auth.VIEWING),
    RouteSpec("POST",   f"{P}/clinical-summary/{{study_uid}}",    management.summary,            auth.VIEWING),
    RouteSpec("GET",    f"{P}/uploads",                           management.list_uploads,       auth.AUDITING),
    RouteSpec("GET",    f"{P}/uploads/patient/{{patient_id}}",    management.patient_uploads,    auth.AUDITING),
    RouteSpec("GET",    f"{P}/uploads/{{upload_id}}",             management.get_upload,         auth.AUDITING),

    # --- tags ------------------------------------------------------------------------------------------------
    RouteSpec("POST",   f"{P}/validate",                          tags.validate,                 auth.UPLOADING),
    RouteSpec("POST",   f"{P}/read-tags",                         tags.read_tags,                auth.FILE_READING),
    RouteSpec("POST",   f"{P}/modify-tags",                       tags.modify_tags,              auth.UPLOADING),
    RouteSpec("POST",   f"{P}/deidentify",                        tags.deidentify,               auth.UPLOADING),
    RouteSpec("GET",    f"{P}/tags/{{study_uid}}",                tags.study_tags,               auth.VIEWING),

    # --- uploads ---------------------------------------------------------------------------------------------
    RouteSpec("POST",   f"{P}/upload",                            uploads.upload,                auth.UPLOADING),
    RouteSpec("POST",   f"{P}/upload-multiple",                   uploads.upload_multiple,       auth.UPLOADING),
    RouteSpec("POST",   f"{P}/upload-zip",                        uploads.upload_zip,            auth.UPLOADING),
    RouteSpec("GET",    f"{P}/upload-jobs/{{job_id}}",            uploads.upload_job,            auth.UPLOADING),
    RouteSpec("POST",   f"{P}/offline/metadata",                  uploads.offline_metadata,      auth.UPLOADING),
    RouteSpec("POST",   f"{P}/offline/binary",                    uploads.offline_binary,        auth.UPLOADING),
    RouteSpec("POST",   f"{P}/offline/ack",                       uploads.offline_ack,           auth.UPLOADING),

    # --- viewer tokens and URLs ------------------------------------------------------------------------------
    RouteSpec("POST",   f"{P}/viewer-token",                      viewer.viewer_token,           auth.VIEWING),
    RouteSpec("POST",   f"{P}/viewer-token/revoke",               viewer.revoke,                 auth.VIEWING),
    RouteSpec("GET",    f"{P}/viewer-url/{{study_uid}}",          viewer.viewer_url_study,       auth.VIEWING),
    RouteSpec("GET",    f"{P}/viewer-url/order/{{order_id}}",     viewer.viewer_url_order,       auth.VIEWING),
    RouteSpec("GET",    f"{P}/viewer-url/patient/{{patient_id}}", viewer.viewer_url_patient,     auth.VIEWING),
)


def register_all(router: Router, services: Services, revocations: RevocationList) -> None:
    api = Api.build(services, revocations, router)
    for spec in ROUTES:
        # The bound handler keeps the function's name and docstring (the OpenAPI document reads them).
        bound = update_wrapper(partial(spec.handler, api), spec.handler)
        router.add(spec.method, spec.path, bound, roles=spec.roles)
