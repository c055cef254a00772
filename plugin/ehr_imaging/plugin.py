"""Wires the plugin into Orthanc: settings, services, routes, hooks. Nothing else lives here."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orthanc

from . import __version__, pacs
from .api.listener import ApiListener
from .api.ohif_site import PREFIX as VIEWER_PREFIX
from .api.ohif_site import ViewerApp
from .api.redirect import RedirectListener
from .api.router import Request, Response, Router, decode_query, error_for, template_regex
from .api.routes import register_all
from .api.scoped_qido import ScopedQido
from .app.access_log import AccessLog
from .app.deletion_recovery import PurgeWorker
from .app.dicomweb_gate import ViewerGate
from .app.ingest_worker import IngestWorker
from .app.metrics_publisher import MetricsPublisher
from .app.study_hierarchy import StudyHierarchy
from .app.token_revocations import RevocationList
from .app.upload_limits import admit_upload
from .bootstrap import build_services, signing_secret
from .config import ConfigError, load_settings
from .core.dimse import check_policy
from .hooks.changes import make_change_callback
from .hooks.dimse import make_find_callback, make_move_callback
from .hooks.http_filter import make_filter
from .hooks.worklist import make_worklist_callback
from .services import Services
from .store import db, migrations
from .store import sessions as session_store
from .store import viewer_tokens as viewer_store

EXPLORER_EXTENSION = Path(__file__).parent / "hooks" / "static" / "explorer-extension.js"
API_CATCH_ALL = "/api/v1/dicom(/.*)?"
FHIR_CATCH_ALL = "/fhir(/.*)?"  # unknown FHIR paths: an OperationOutcome 404
SCOPED_QIDO_PATHS = "/ehr-imaging/dicom-web/(.*)"
# Statuses Orthanc 1.10's HTTP server refuses to send ("Parameter out of range"), and what its port sends
# instead: 429 (over a rate limit) as 503, with the same Retry-After and detail (README "Rate limits").
ORTHANC_PORT_STATUS = {429: 503}


def _deny_everything(*args: Any, **kwargs: Any) -> bool:
    return False


# Fail closed: the filter is registered before anything can go wrong and refuses every request until
# the plugin is fully set up. Orthanc's own authentication is off, so a plugin that failed to start
# must not leave Orthanc open.
_current_filter: Any = _deny_everything


def _filter(*args: Any, **kwargs: Any) -> bool:
    return bool(_current_filter(*args, **kwargs))


def register() -> None:
    global _current_filter
    orthanc.RegisterIncomingHttpRequestFilter(_filter)
    try:
        _current_filter = _set_up()
    except Exception:
        pacs.log_error("ehr-imaging: start-up failed; every HTTP request is refused until it is fixed")
        raise


def _set_up() -> Any:
    """Everything the plugin registers; returns the HTTP filter to put in force."""
    orthanc_config = pacs.configuration()
    settings = load_settings(orthanc_config)
    if settings.CoerceTags and not orthanc_config.get("OverwriteInstances", False):
        # Coercion keeps the UIDs, and so Orthanc's instance IDs: the modified copy must replace the original.
        raise ConfigError("EhrImaging.CoerceTags needs Orthanc's OverwriteInstances: true")
    pacs.log_warning(f"ehr-imaging {__version__} starting with {json.dumps(settings.redacted())}")
    for warning in check_policy(orthanc_config):  # raises on a DICOM service that would escape the audit
        pacs.log_warning(f"ehr-imaging: {warning}")
    if not signing_secret(settings)[1]:
        pacs.log_warning("ehr-imaging: no SigningSecret/JwtSecret: admin sessions are valid on this node only")
    services = build_services(settings, pacs.OrthancPacs())
    services.node = f"{socket.gethostname()}:{orthanc_config.get('HttpPort', 8042)}"
    services.tls = bool(orthanc_config.get("SslEnabled", False))
    services.log_error = pacs.log_error
    services.log_warning = pacs.log_warning
    router = Router(services.authenticator, pacs.log_error, unavailable=db.UNAVAILABLE,
                    throttle=partial(admit_upload, services))
    gate = _viewer_gate(services)
    sessions = _session_revocations(services)
    api = register_all(router, services, gate.revocations, gate.access_log)
    for template in router.templates():
        orthanc.RegisterRestCallback(template_regex(template), _rest_callback(router, template))
    qido = ScopedQido(gate, services.authenticator, services.pacs, pacs.log_warning)
    orthanc.RegisterRestCallback(SCOPED_QIDO_PATHS, _scoped_qido_callback(qido))
    # Orthanc compresses every answer itself when HttpCompressionEnabled (its default): no precompressed
    # variant then, or the viewer's gzip files would be compressed twice.
    viewer_app = ViewerApp(settings.ViewerAppDir,
                           precompressed=not orthanc_config.get("HttpCompressionEnabled", True))
    orthanc.RegisterRestCallback(VIEWER_PREFIX + "(/.*)?", _viewer_callback(viewer_app))
    if not viewer_app.installed:
        pacs.log_warning(f"ehr-imaging: no OHIF viewer in ViewerAppDir {settings.ViewerAppDir!r}: /ohif/ answers 404")
    # Registered last: unknown paths under our prefix answer a JSON 404, not Orthanc's empty one.
    orthanc.RegisterRestCallback(API_CATCH_ALL, _not_found)
    orthanc.RegisterRestCallback(FHIR_CATCH_ALL, _not_found)
    worker = IngestWorker(services, pacs.log_warning, pacs.log_error)
    worker.start()
    services.ingest_later = worker.submit
    MetricsPublisher(services, pacs.set_metric, sources=(worker.gauges,), log_error=pacs.log_error).start()
    if settings.CoerceTags:  # the only reason to revisit a study linked outside ingest
        services.revisit_study = worker.submit
    orthanc.RegisterOnChangeCallback(make_change_callback(worker, gate, pacs.log_error))
    orthanc.RegisterWorklistCallback(make_worklist_callback(services, pacs.log_error))
    # C-FIND and C-MOVE that DicomModalities allows are answered (and audited) by the plugin, not Orthanc.
    orthanc.RegisterFindCallback(make_find_callback(services, pacs.log_error))
    orthanc.RegisterMoveCallback(make_move_callback(services, pacs.log_error))
    orthanc.ExtendOrthancExplorer(EXPLORER_EXTENSION.read_text())
    def once_migrated() -> None:
        """What reads the plugin's tables starts once they exist (not before: a fresh database has none)."""
        gate.revocations.start()  # each loads at once, then every few seconds
        sessions.start()
        api.jobs.start()
        PurgeWorker(services, pacs.log_warning, pacs.log_error).start()  # deleted studies past retention

    threading.Thread(target=_migrate_until_done, args=(services, once_migrated), name="ehr-migrate",
                     daemon=True).start()
    # Both built (certificate read, redirect targets checked) before either starts: a bad setting starts nothing.
    redirect = RedirectListener.from_settings(settings, log_error=pacs.log_error) if settings.HttpRedirectPort else None
    if settings.ApiPort:
        listener = ApiListener.from_settings(router, settings, log_error=pacs.log_error)
        listener.start()
        scheme = "https" if settings.ApiTlsCertificateFile else "http"
        pacs.log_warning(f"ehr-imaging: EHR API also on {scheme}://{settings.ApiListenAddress}:{listener.port}")
    if redirect is not None:
        redirect.start()
        pacs.log_warning(f"ehr-imaging: plain HTTP on {settings.ApiListenAddress}:{redirect.port} answers only "
                         "redirects to HTTPS")
    return make_filter(services.authenticator, gate, pacs.log_warning, body_refusal=router.body_refusal,
                       max_body_bytes=settings.OrthancPortMaxBodyMb * 1024 * 1024, signed_images=api.signed_images,
                       metrics=services.metrics, deletion_approval=settings.DeletionApproval == "required")


def _session_revocations(services: Services) -> RevocationList:
    """Ended admin sessions (logout), shared through PostgreSQL; cookie sessions are refused until loaded."""
    engine = services.engine
    sessions = RevocationList(lambda: session_store.revoked_session_ids(engine), log_error=pacs.log_error,
                              what="admin sessions")
    services.authenticator.session_revocations = sessions
    return sessions


def _viewer_gate(services: Services) -> ViewerGate:
    engine = services.engine
    revocations = RevocationList(lambda: viewer_store.revoked_token_ids(engine), log_error=pacs.log_error)
    access_log = AccessLog(lambda counts: viewer_store.add_access_counts(engine, counts), log_error=pacs.log_error)
    access_log.start()
    return ViewerGate(services.viewer_tokens, revocations, StudyHierarchy(services.pacs), access_log)


def _scoped_qido_callback(qido: ScopedQido) -> Any:
    def callback(output: Any, uri: str, **request: Any) -> None:
        headers = {str(k).lower(): str(v) for k, v in dict(request.get("headers") or {}).items()}
        query = decode_query(request.get("get") or {})
        _answer(output, qido.answer(str(request.get("method", "GET")), uri, query, headers))

    return callback


def _migrate_until_done(services: Services, then: Callable[[], None]) -> None:
    """Apply migrations, retrying while PostgreSQL is unreachable: Orthanc keeps serving meanwhile.
    ``then`` runs once the schema is there: it starts what reads the plugin's tables."""
    delay = 1.0
    while True:
        try:
            applied = migrations.migrate(services.engine, services.settings.DatabaseSchema)
            pacs.log_warning(f"ehr-imaging: schema at version {migrations.LATEST_VERSION} (applied {applied})")
            break
        except Exception as exc:  # noqa: BLE001 - keep trying; health reports the state
            pacs.log_error(f"ehr-imaging: migrations failed ({type(exc).__name__}: {exc}); retrying in {delay:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    then()


def _rest_callback(router: Router, template: str) -> Any:
    def callback(output: Any, uri: str, **request: Any) -> None:
        req = Request(
            method=str(request.get("method", "GET")),
            path=uri,
            query=decode_query(request.get("get") or {}),
            headers=dict(request.get("headers") or {}),
            body=request.get("body") or b"",
        )
        _answer(output, router.dispatch(template, req, request.get("groups") or ()))

    return callback


def _viewer_callback(viewer: ViewerApp) -> Any:
    def callback(output: Any, uri: str, **request: Any) -> None:
        _answer(output, viewer.answer(str(request.get("method", "GET")), uri, request.get("headers") or {}))

    return callback


def _not_found(output: Any, uri: str, **request: Any) -> None:
    _answer(output, error_for(uri, 404, f"no route {uri}"))


def _answer(output: Any, response: Response) -> None:
    if response.status == 405:
        # Orthanc refuses SendHttpStatus(405): its dedicated call answers with the Allow header.
        output.SendMethodNotAllowed(response.headers.get("Allow", ""))
        return
    for name, value in response.headers.items():
        output.SetHttpHeader(name, value)
    if response.status == 200:
        output.AnswerBuffer(response.joined(), response.content_type)
    else:
        # orthanc-python 4.0 takes the body of a non-200 answer as text only.
        body = response.body.decode("utf-8", "replace")
        output.SetHttpHeader("Content-Type", response.content_type)
        status = ORTHANC_PORT_STATUS.get(response.status, response.status)
        output.SendHttpStatus(status, body, len(body.encode()))
