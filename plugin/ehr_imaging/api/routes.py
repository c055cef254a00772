"""THE route table of the EHR API: every route, who may call it, and its handler, in one list.

Each row is (method, path, handler, roles, contract). Handlers are module-level functions
``handler(api, request)`` (api/context.py); role groups come from core.auth; contracts (what a route answers
and the body it reads, as JSON Schemas) are named in api/schemas.py. The router, the HTTP filter's body check
and the OpenAPI document all read this table; there is no other list of routes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial, update_wrapper

from ..app.token_revocations import RevocationList
from ..core import auth
from ..services import Services
from . import (
    admin_session,
    deletions,
    images,
    openapi,
    orders,
    reconciliation,
    schemas,
    studies,
    system,
    tags,
    upload_history,
    uploads,
)
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
    contract: schemas.Contract  # what it answers and the body it reads (the OpenAPI document says the same)


ROUTES: tuple[RouteSpec, ...] = (
    # --- orders ----------------------------------------------------------------------------------------------
    # Reading an order: viewing (it carries the patient's demographics and, once matched, the study).
    RouteSpec("PUT",    f"{P}/orders/{{order_id}}",               orders.put_order,               auth.ORDER_WRITING, schemas.PUT_ORDER),
    RouteSpec("GET",    f"{P}/orders/{{order_id}}",               orders.get_order,               auth.VIEWING,       schemas.ORDER),
    RouteSpec("DELETE", f"{P}/orders/{{order_id}}",               orders.cancel_order,            auth.ORDER_WRITING, schemas.ORDER),
    RouteSpec("GET",    f"{P}/orders",                            orders.list_orders,             auth.VIEWING,       schemas.LIST_ORDERS),

    # --- reconciliation --------------------------------------------------------------------------------------
    # The match status names the order (and its patient): viewing. Forcing a link is checked inside link().
    RouteSpec("GET",    f"{P}/unmatched",                         reconciliation.list_unmatched,  auth.RECONCILING,   schemas.LIST_UNMATCHED),
    RouteSpec("GET",    f"{P}/studies/{{study_uid}}/match",       reconciliation.match,           auth.VIEWING,       schemas.MATCH),
    RouteSpec("POST",   f"{P}/studies/{{study_uid}}/link",        reconciliation.link,            auth.RECONCILING,   schemas.LINK),
    RouteSpec("POST",   f"{P}/studies/{{study_uid}}/unlink",      reconciliation.unlink,          auth.RECONCILING,   schemas.UNLINK),

    # --- system, admin session, OpenAPI ----------------------------------------------------------------------
    # OpenAPI: any role, not public: it carries the plugin version and who may call what; every consumer holds a token.
    RouteSpec("GET",    f"{P}/health",                            system.health,                  PUBLIC,             schemas.HEALTH),
    RouteSpec("GET",    f"{P}/stats",                             system.stats,                   ANY_ROLE,           schemas.STATS),
    RouteSpec("GET",    f"{P}/admin/login",                       admin_session.login,            PUBLIC,             schemas.LOGIN),
    RouteSpec("POST",   f"{P}/admin/logout",                      admin_session.logout,           PUBLIC,             schemas.LOGOUT),
    RouteSpec("GET",    f"{P}/openapi.json",                      openapi.openapi,                ANY_ROLE,           schemas.OPENAPI),

    # --- studies, images, downloads, summaries, upload history -----------------------------------------------
    RouteSpec("GET",    f"{P}/studies",                           studies.list_studies,           auth.VIEWING,       schemas.LIST_STUDIES),
    RouteSpec("GET",    f"{P}/studies/patient/{{patient_id}}",    studies.patient_studies,        auth.VIEWING,       schemas.STUDIES),
    RouteSpec("GET",    f"{P}/studies/order/{{order_id}}",        studies.order_studies,          auth.VIEWING,       schemas.STUDIES),
    RouteSpec("GET",    f"{P}/studies/accession/{{accession}}",   studies.accession_studies,      auth.VIEWING,       schemas.STUDIES),
    RouteSpec("GET",    f"{P}/studies/{{study_uid}}",             studies.get_study,              auth.VIEWING,       schemas.GET_STUDY),
    RouteSpec("DELETE", f"{P}/studies/{{study_uid}}",             studies.delete_study,           auth.DELETING,      schemas.DELETE_STUDY),
    # Deletion requests (DeletionApproval 'required') and deletions (restorable until purged): admins.
    RouteSpec("GET",    f"{P}/deletion-requests",                 deletions.list_requests,        auth.DELETION_MANAGING, schemas.DELETION_REQUESTS),
    RouteSpec("POST",   f"{P}/deletion-requests/{{request_id}}/approve", deletions.approve,      auth.DELETION_MANAGING, schemas.APPROVE_DELETION),
    RouteSpec("POST",   f"{P}/deletion-requests/{{request_id}}/reject",  deletions.reject,       auth.DELETION_MANAGING, schemas.REJECT_DELETION),
    RouteSpec("GET",    f"{P}/deletions",                         deletions.list_deletions,       auth.DELETION_MANAGING, schemas.DELETIONS),
    RouteSpec("POST",   f"{P}/deletions/{{deletion_id}}/restore", deletions.restore,              auth.DELETION_MANAGING, schemas.RESTORE_DELETION),
    RouteSpec("POST",   f"{P}/deletions/purge",                   deletions.purge,                auth.DELETION_MANAGING, schemas.PURGE_DELETIONS),
    RouteSpec("GET",    f"{P}/download/{{study_uid}}",            images.download,                auth.VIEWING,       schemas.DOWNLOAD),
    RouteSpec("GET",    f"{P}/thumbnail/{{study_uid}}",           images.thumbnail,               auth.VIEWING,       schemas.THUMBNAIL),
    RouteSpec("GET",    f"{P}/render/{{sop_instance_uid}}",       images.render,                  auth.VIEWING,       schemas.RENDER),
    RouteSpec("POST",   f"{P}/clinical-summary/{{study_uid}}",    images.summary,                 auth.VIEWING,       schemas.SUMMARY),
    RouteSpec("GET",    f"{P}/uploads",                           upload_history.list_uploads,    auth.AUDITING,      schemas.UPLOAD_PAGE),
    RouteSpec("GET",    f"{P}/uploads/patient/{{patient_id}}",    upload_history.patient_uploads, auth.AUDITING,      schemas.UPLOAD_PAGE),
    RouteSpec("GET",    f"{P}/uploads/{{upload_id}}",             upload_history.get_upload,      auth.AUDITING,      schemas.GET_UPLOAD),

    # --- tags ------------------------------------------------------------------------------------------------
    RouteSpec("POST",   f"{P}/validate",                          tags.validate,                  auth.UPLOADING,     schemas.VALIDATE),
    RouteSpec("POST",   f"{P}/read-tags",                         tags.read_tags,                 auth.FILE_READING,  schemas.READ_TAGS),
    RouteSpec("POST",   f"{P}/modify-tags",                       tags.modify_tags,               auth.UPLOADING,     schemas.MODIFY_TAGS),
    RouteSpec("POST",   f"{P}/deidentify",                        tags.deidentify,                auth.UPLOADING,     schemas.DEIDENTIFY),
    RouteSpec("GET",    f"{P}/tags/{{study_uid}}",                tags.study_tags,                auth.VIEWING,       schemas.STUDY_TAGS),

    # --- uploads ---------------------------------------------------------------------------------------------
    RouteSpec("POST",   f"{P}/upload",                            uploads.upload,                 auth.UPLOADING,     schemas.UPLOAD),
    RouteSpec("POST",   f"{P}/upload-multiple",                   uploads.upload_multiple,        auth.UPLOADING,     schemas.UPLOAD_MULTIPLE),
    RouteSpec("POST",   f"{P}/upload-zip",                        uploads.upload_zip,             auth.UPLOADING,     schemas.UPLOAD_ZIP),
    RouteSpec("GET",    f"{P}/upload-jobs/{{job_id}}",            uploads.upload_job,             auth.UPLOADING,     schemas.UPLOAD_JOB),
    RouteSpec("POST",   f"{P}/offline/metadata",                  uploads.offline_metadata,       auth.UPLOADING,     schemas.OFFLINE_METADATA),
    RouteSpec("POST",   f"{P}/offline/binary",                    uploads.offline_binary,         auth.UPLOADING,     schemas.OFFLINE_BINARY),
    RouteSpec("POST",   f"{P}/offline/ack",                       uploads.offline_ack,            auth.UPLOADING,     schemas.OFFLINE_ACK),

    # --- viewer tokens and URLs ------------------------------------------------------------------------------
    RouteSpec("POST",   f"{P}/viewer-token",                      viewer.viewer_token,            auth.VIEWING,       schemas.VIEWER_TOKEN),
    RouteSpec("POST",   f"{P}/viewer-token/revoke",               viewer.revoke,                  auth.VIEWING,       schemas.REVOKE),
    RouteSpec("GET",    f"{P}/viewer-url/{{study_uid}}",          viewer.viewer_url_study,        auth.VIEWING,       schemas.VIEWER_URL),
    RouteSpec("GET",    f"{P}/viewer-url/order/{{order_id}}",     viewer.viewer_url_order,        auth.VIEWING,       schemas.VIEWER_URL),
    RouteSpec("GET",    f"{P}/viewer-url/patient/{{patient_id}}", viewer.viewer_url_patient,      auth.VIEWING,       schemas.VIEWER_URL),
)


def register_all(router: Router, services: Services, revocations: RevocationList) -> Api:
    """Every row of the table on ``router``, bound to one ``Api``; returned so that its workers can be started."""
    api = Api.build(services, revocations, router)
    for spec in ROUTES:
        # The bound handler keeps the function's name and docstring (the OpenAPI document reads them).
        bound = update_wrapper(partial(spec.handler, api), spec.handler)
        router.add(spec.method, spec.path, bound, roles=spec.roles, contract=spec.contract)
    return api
