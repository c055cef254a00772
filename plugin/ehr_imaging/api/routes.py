"""THE route table of the EHR API: every route, who may call it, and its handler, in one list.

Each row is (method, path, handler, roles, patient scope, contract[, rate_limited][, query_token]). Handlers
are module-level functions ``handler(api, request)`` (api/context.py); role groups come from core.auth; contracts (what a route answers
and the body it reads, as JSON Schemas) are named in api/schemas.py. The router, the HTTP filter's body check
and the OpenAPI document all read this table; there is no other list of routes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import update_wrapper

from ..app.access_log import AccessLog
from ..app.token_revocations import RevocationList
from ..core import auth
from ..core.access import IID_PATH
from ..core.fhir import FHIR_ROOT
from ..services import Services
from . import (
    admin_session,
    audit,
    deletions,
    event_schemas,
    events,
    fhir,
    fhir_schemas,
    iid,
    image_urls,
    images,
    ingest_schemas,
    openapi,
    orders,
    reconciliation,
    repair,
    schemas,
    studies,
    system,
    tags,
    upload_history,
    uploads,
)
from . import patient_scope as scope
from . import viewer_tokens as viewer
from .context import Api
from .patient_scope import Names
from .router import ANY_ROLE, PUBLIC, SIGNED_URL, Request, Response, Router

P = "/api/v1/dicom"
F = FHIR_ROOT  # "/fhir"


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Callable[[Api, Request], Response]
    roles: Collection[str]  # a role group of core/auth.py (a tuple), or router.PUBLIC / ANY_ROLE / SIGNED_URL
    scope: Names  # what it names, for a patient-scoped caller (api/patient_scope.py)
    contract: schemas.Contract  # what it answers and the body it reads (the OpenAPI document says the same)
    # Each request is admitted by the per-caller upload rate limit first (429 + Retry-After above it).
    rate_limited: bool = False
    # A short-lived user JWT in the URL (``?token=``) is accepted as well as the header (core/query_token.py).
    query_token: bool = False


ROUTES: tuple[RouteSpec, ...] = (
    # --- orders ----------------------------------------------------------------------------------------------
    # Reading an order: viewing (it carries the patient's demographics and, once matched, the study).
    RouteSpec("PUT",    f"{P}/orders/{{order_id}}",                      orders.put_order,               auth.ORDER_WRITING, scope.REFUSED,  schemas.PUT_ORDER),
    RouteSpec("GET",    f"{P}/orders/{{order_id}}",                      orders.get_order,               auth.VIEWING,       scope.ORDER,    schemas.ORDER),
    RouteSpec("DELETE", f"{P}/orders/{{order_id}}",                      orders.cancel_order,            auth.ORDER_WRITING, scope.REFUSED,  schemas.ORDER),
    RouteSpec("GET",    f"{P}/orders",                                   orders.list_orders,             auth.VIEWING,       scope.LIST,     schemas.LIST_ORDERS),

    # --- reconciliation --------------------------------------------------------------------------------------
    # The match status names the order (and its patient): viewing. Forcing a link is checked inside link().
    RouteSpec("GET",    f"{P}/unmatched",                                reconciliation.list_unmatched,  auth.RECONCILING,   scope.REFUSED,  schemas.LIST_UNMATCHED),
    RouteSpec("GET",    f"{P}/studies/{{study_uid}}/match",              reconciliation.match,           auth.VIEWING,       scope.STUDY,    schemas.MATCH),
    RouteSpec("POST",   f"{P}/studies/{{study_uid}}/link",               reconciliation.link,            auth.RECONCILING,   scope.REFUSED,  schemas.LINK),
    RouteSpec("POST",   f"{P}/studies/{{study_uid}}/unlink",             reconciliation.unlink,          auth.RECONCILING,   scope.REFUSED,  schemas.UNLINK),

    # --- system, admin session, OpenAPI ----------------------------------------------------------------------
    # OpenAPI: any role, not public: it carries the plugin version and who may call what; every consumer holds a token.
    RouteSpec("GET",    f"{P}/health",                                   system.health,                  PUBLIC,             scope.NONE,     schemas.HEALTH),
    RouteSpec("GET",    f"{P}/stats",                                    system.stats,                   ANY_ROLE,           scope.REFUSED,  schemas.STATS),
    RouteSpec("GET",    f"{P}/admin/login",                              admin_session.login,            PUBLIC,             scope.NONE,     schemas.LOGIN),
    RouteSpec("POST",   f"{P}/admin/logout",                             admin_session.logout,           PUBLIC,             scope.NONE,     schemas.LOGOUT),
    RouteSpec("GET",    f"{P}/openapi.json",                             openapi.openapi,                ANY_ROLE,           scope.NONE,     schemas.OPENAPI),

    # --- studies, images, downloads, summaries, upload history -----------------------------------------------
    RouteSpec("GET",    f"{P}/studies",                                  studies.list_studies,           auth.VIEWING,       scope.LIST,     schemas.LIST_STUDIES),
    RouteSpec("GET",    f"{P}/studies/patient/{{patient_id}}",           studies.patient_studies,        auth.VIEWING,       scope.PATIENT,  schemas.STUDIES),
    RouteSpec("GET",    f"{P}/studies/order/{{order_id}}",               studies.order_studies,          auth.VIEWING,       scope.ORDER,    schemas.STUDIES),
    RouteSpec("GET",    f"{P}/studies/accession/{{accession}}",          studies.accession_studies,      auth.VIEWING,       scope.LIST,     schemas.STUDIES),
    RouteSpec("GET",    f"{P}/studies/{{study_uid}}",                    studies.get_study,              auth.VIEWING,       scope.STUDY,    schemas.GET_STUDY),
    RouteSpec("DELETE", f"{P}/studies/{{study_uid}}",                    studies.delete_study,           auth.DELETING,      scope.STUDY,    schemas.DELETE_STUDY),
    # Deletion requests (DeletionApproval 'required') and deletions (restorable until purged): admins.
    RouteSpec("GET",    f"{P}/deletion-requests",                        deletions.list_requests,        auth.ADMIN_ONLY,    scope.REFUSED,  schemas.DELETION_REQUESTS),
    RouteSpec("POST",   f"{P}/deletion-requests/{{request_id}}/approve", deletions.approve,              auth.ADMIN_ONLY,    scope.REFUSED,  schemas.APPROVE_DELETION),
    RouteSpec("POST",   f"{P}/deletion-requests/{{request_id}}/reject",  deletions.reject,               auth.ADMIN_ONLY,    scope.REFUSED,  schemas.REJECT_DELETION),
    RouteSpec("GET",    f"{P}/deletions",                                deletions.list_deletions,       auth.ADMIN_ONLY,    scope.REFUSED,  schemas.DELETIONS),
    RouteSpec("POST",   f"{P}/deletions/{{deletion_id}}/restore",        deletions.restore,              auth.ADMIN_ONLY,    scope.REFUSED,  schemas.RESTORE_DELETION),
    RouteSpec("POST",   f"{P}/deletions/purge",                          deletions.purge,                auth.ADMIN_ONLY,    scope.REFUSED,  schemas.PURGE_DELETIONS),
    # The event outbox (api/events.py): what was sent to the EHR's endpoints, and sending one again.
    RouteSpec("GET",    f"{P}/events",                                   events.list_events,             auth.ADMIN_ONLY,    scope.REFUSED,  event_schemas.EVENTS),
    RouteSpec("POST",   f"{P}/events/{{event_id}}/redeliver",            events.redeliver,               auth.ADMIN_ONLY,    scope.REFUSED,  event_schemas.REDELIVER_EVENT),
    # The paged repair (make reconcile): every study Orthanc holds against what is recorded; admins.
    RouteSpec("POST",   f"{P}/reconcile",                                repair.reconcile,               auth.ADMIN_ONLY,    scope.REFUSED,  ingest_schemas.RECONCILE),
    RouteSpec("GET",    f"{P}/download/{{study_uid}}",                   images.download,                auth.VIEWING,       scope.STUDY,    schemas.DOWNLOAD),
    RouteSpec("GET",    f"{P}/thumbnail/{{study_uid}}",                  images.thumbnail,               auth.VIEWING,       scope.STUDY,    schemas.THUMBNAIL),
    RouteSpec("GET",    f"{P}/render/{{sop_instance_uid}}",              images.render,                  auth.VIEWING,       scope.INSTANCE, schemas.RENDER),
    RouteSpec("POST",   f"{P}/clinical-summary/{{study_uid}}",           images.summary,                 auth.VIEWING,       scope.STUDY,    schemas.SUMMARY),
    # Signed image URLs: minted for viewing roles; the rendered image answers the URL's signature, no header.
    RouteSpec("GET",    f"{P}/studies/{{study_uid}}/images",             image_urls.study_images,        auth.VIEWING,       scope.STUDY,    schemas.STUDY_IMAGES),
    RouteSpec("GET",    f"{P}/images/{{sop_instance_uid}}/url",          image_urls.image_url,           auth.VIEWING,       scope.INSTANCE, schemas.IMAGE_URL),
    RouteSpec("GET",    f"{P}/images/{{sop_instance_uid}}/rendered",     image_urls.signed_image,        SIGNED_URL,         scope.NONE,     schemas.SIGNED_IMAGE),
    RouteSpec("GET",    f"{P}/uploads",                                  upload_history.list_uploads,    auth.AUDITING,      scope.LIST,     schemas.UPLOAD_PAGE),
    RouteSpec("GET",    f"{P}/uploads/patient/{{patient_id}}",           upload_history.patient_uploads, auth.AUDITING,      scope.PATIENT,  schemas.UPLOAD_PAGE),
    RouteSpec("GET",    f"{P}/uploads/{{upload_id}}",                    upload_history.get_upload,      auth.AUDITING,      scope.UPLOAD,   schemas.GET_UPLOAD),
    # The audit timeline: admins (every patient's records), patients (their own records'), narrowed to a scope.
    RouteSpec("GET",    f"{P}/audit",                                    audit.audit_timeline,           auth.AUDIT_READING, scope.LIST,     schemas.AUDIT),

    # --- tags ------------------------------------------------------------------------------------------------
    RouteSpec("POST",   f"{P}/validate",                                 tags.validate,                  auth.UPLOADING,     scope.NONE,     schemas.VALIDATE),
    RouteSpec("POST",   f"{P}/read-tags",                                tags.read_tags,                 auth.FILE_READING,  scope.NONE,     schemas.READ_TAGS),
    RouteSpec("POST",   f"{P}/modify-tags",                              tags.modify_tags,               auth.UPLOADING,     scope.NONE,     schemas.MODIFY_TAGS),
    RouteSpec("POST",   f"{P}/deidentify",                               tags.deidentify,                auth.UPLOADING,     scope.NONE,     schemas.DEIDENTIFY),
    RouteSpec("GET",    f"{P}/tags/{{study_uid}}",                       tags.study_tags,                auth.VIEWING,       scope.STUDY,    schemas.STUDY_TAGS),

    # --- uploads ---------------------------------------------------------------------------------------------
    RouteSpec("POST",   f"{P}/upload",                                   uploads.upload,                 auth.UPLOADING,     scope.REFUSED,  schemas.UPLOAD,            rate_limited=True),
    RouteSpec("POST",   f"{P}/upload-image",                             uploads.upload_image,           auth.UPLOADING,     scope.REFUSED,  schemas.UPLOAD_IMAGE,      rate_limited=True),
    RouteSpec("POST",   f"{P}/upload-multiple",                          uploads.upload_multiple,        auth.UPLOADING,     scope.REFUSED,  schemas.UPLOAD_MULTIPLE,   rate_limited=True),
    RouteSpec("POST",   f"{P}/upload-zip",                               uploads.upload_zip,             auth.UPLOADING,     scope.REFUSED,  schemas.UPLOAD_ZIP,        rate_limited=True),
    RouteSpec("GET",    f"{P}/upload-jobs/{{job_id}}",                   uploads.upload_job,             auth.UPLOADING,     scope.NONE,     schemas.UPLOAD_JOB),
    RouteSpec("POST",   f"{P}/offline/metadata",                         uploads.offline_metadata,       auth.UPLOADING,     scope.REFUSED,  schemas.OFFLINE_METADATA),
    RouteSpec("POST",   f"{P}/offline/binary",                           uploads.offline_binary,         auth.UPLOADING,     scope.REFUSED,  schemas.OFFLINE_BINARY,    rate_limited=True),
    RouteSpec("POST",   f"{P}/offline/ack",                              uploads.offline_ack,            auth.UPLOADING,     scope.REFUSED,  schemas.OFFLINE_ACK),

    # --- viewer tokens and URLs ------------------------------------------------------------------------------
    RouteSpec("POST",   f"{P}/viewer-token",                             viewer.viewer_token,            auth.VIEWING,       scope.BODY,     schemas.VIEWER_TOKEN),
    RouteSpec("POST",   f"{P}/viewer-token/revoke",                      viewer.revoke,                  auth.VIEWING,       scope.NONE,     schemas.REVOKE),
    RouteSpec("GET",    f"{P}/viewer-url/{{study_uid}}",                 viewer.viewer_url_study,        auth.VIEWING,       scope.STUDY,    schemas.VIEWER_URL),
    RouteSpec("GET",    f"{P}/viewer-url/order/{{order_id}}",            viewer.viewer_url_order,        auth.VIEWING,       scope.ORDER,    schemas.VIEWER_URL),
    RouteSpec("GET",    f"{P}/viewer-url/patient/{{patient_id}}",        viewer.viewer_url_patient,      auth.VIEWING,       scope.PATIENT,  schemas.VIEWER_URL),
    # IHE Invoke Image Display (outside the API prefix, as the profile names it): the EHR's link opens OHIF.
    RouteSpec("GET",    IID_PATH,                                        iid.invoke_image_display,       auth.VIEWING,       scope.LIST,     schemas.INVOKE_IMAGE_DISPLAY, query_token=True),

    # --- FHIR R4 (api/fhir.py): not under P; errors are OperationOutcome resources -------------------------
    # The ImagingStudy id is the Study Instance UID; the same roles as the study queries and the order writes.
    RouteSpec("GET",    f"{F}/ImagingStudy",                             fhir.search_imaging_studies,    auth.VIEWING,       scope.LIST,     fhir_schemas.IMAGING_STUDY_SEARCH),
    RouteSpec("GET",    f"{F}/ImagingStudy/{{study_uid}}",               fhir.read_imaging_study,        auth.VIEWING,       scope.STUDY,    fhir_schemas.IMAGING_STUDY),
    RouteSpec("PUT",    f"{F}/ServiceRequest/{{order_id}}",              fhir.put_service_request,       auth.ORDER_WRITING, scope.REFUSED,  fhir_schemas.PUT_SERVICE_REQUEST),
)


def register_all(router: Router, services: Services, revocations: RevocationList,
                 access_log: AccessLog | None = None) -> Api:
    """Every row of the table on ``router``, bound to one ``Api``; returned so that its workers can be started
    (and its signed-image judge handed to the HTTP filter)."""
    api = Api.build(services, revocations, router, access_log)
    for spec in ROUTES:
        bound = _bound(spec, api)
        router.add(spec.method, spec.path, bound, roles=spec.roles, contract=spec.contract,
                   rate_limited=spec.rate_limited, query_token=spec.query_token)
    return api


def _bound(spec: RouteSpec, api: Api) -> Callable[[Request], Response]:
    """The handler with its patient-scope check before it; it keeps the function's name and docstring (the
    OpenAPI document reads them)."""
    def call(request: Request) -> Response:
        scope.check(spec.scope, api, request)
        return spec.handler(api, request)

    return update_wrapper(call, spec.handler)
