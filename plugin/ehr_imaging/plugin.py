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
from .app.audit_replay import SpoolReplayer, spool_gauges
from .app.database_monitor import DatabaseMonitor
from .app.deletion_recovery import PurgeWorker
from .app.deletion_spool import DeletionSpool
from .app.dicomweb_gate import ViewerGate
from .app.event_delivery import start_delivery
from .app.hold_exchange import HoldExchange
from .app.ingest_worker import IngestWorker
from .app.metrics_publisher import MetricsPublisher
from .app.study_hierarchy import StudyHierarchy
from .app.token_revocations import RevocationList
from .app.upload_limits import admit_upload
from .bootstrap import build_services, signing_secret
from .config import ConfigError, Settings, load_settings
from .core.dimse import check_policy
from .hooks.changes import make_change_callback
from .hooks.dimse import make_find_callback, make_move_callback
from .hooks.http_filter import make_filter
from .hooks.runtime_leaks import LeakCorrection
from .hooks.worklist import make_worklist_callback
from .private_dirs import UnsafeDirectory, private_directory
from .services import Services
from .store import db, migrations, spool_replay
from .store import sessions as session_store
from .store import viewer_tokens as viewer_store
from .store.audit_spool import AuditSpool, spool_id

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


# Debian's orthanc-python 4.0 leaks each callback's arguments; on that version they are given back (hooks/).
_leaks = LeakCorrection()


def register() -> None:
    global _current_filter
    orthanc.RegisterIncomingHttpRequestFilter(_leaks.http_filter(_filter))
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
    _database_monitor(services).start()  # before anything waits on the database
    access_spool, events_spool = _audit_spools(settings, orthanc_config, services.node)
    services.audit_spool = events_spool if settings.DimseWhenDatabaseDown == "spool" else None
    router = Router(services.authenticator, pacs.log_error, unavailable=db.UNAVAILABLE,
                    throttle=partial(admit_upload, services), available=services.database.check)
    gate = _viewer_gate(services, access_spool)
    sessions = _session_revocations(services)
    api = register_all(router, services, gate.revocations, gate.access_log)
    for template in router.templates():
        orthanc.RegisterRestCallback(template_regex(template), _leaks.rest_callback(_rest_callback(router, template)))
    qido = ScopedQido(gate, services.authenticator, services.pacs, pacs.log_warning)
    orthanc.RegisterRestCallback(SCOPED_QIDO_PATHS, _leaks.rest_callback(_scoped_qido_callback(qido)))
    # Orthanc compresses every answer itself when HttpCompressionEnabled (its default): no precompressed
    # variant then, or the viewer's gzip files would be compressed twice.
    viewer_app = ViewerApp(settings.ViewerAppDir,
                           precompressed=not orthanc_config.get("HttpCompressionEnabled", True))
    orthanc.RegisterRestCallback(VIEWER_PREFIX + "(/.*)?", _leaks.rest_callback(_viewer_callback(viewer_app)))
    if not viewer_app.installed:
        pacs.log_warning(f"ehr-imaging: no OHIF viewer in ViewerAppDir {settings.ViewerAppDir!r}: /ohif/ answers 404")
    # Registered last: unknown paths under our prefix answer a JSON 404, not Orthanc's empty one.
    orthanc.RegisterRestCallback(API_CATCH_ALL, _leaks.rest_callback(_not_found))
    orthanc.RegisterRestCallback(FHIR_CATCH_ALL, _leaks.rest_callback(_not_found))
    shared_index = bool((orthanc_config.get("PostgreSQL") or {}).get("EnableIndex", False))
    worker = IngestWorker(services, pacs.log_warning, pacs.log_error,
                          log_id=partial(pacs.change_log_id, orthanc_config), node=services.node,
                          spool=_deletion_spool(orthanc_config, services.node), shared_index=shared_index)
    worker.start()
    services.ingest_later = worker.submit
    services.ingest_deleted = worker.submit_deleted
    MetricsPublisher(services, pacs.set_metric, sources=(worker.gauges, spool_gauges(access_spool, events_spool)),
                     log_error=pacs.log_error).start()
    if settings.CoerceTags:  # the only reason to revisit a study linked outside ingest
        services.revisit_study = worker.submit
    orthanc.RegisterOnChangeCallback(make_change_callback(worker, gate, pacs.log_error))
    orthanc.RegisterWorklistCallback(make_worklist_callback(services, pacs.log_error))
    # C-FIND and C-MOVE that DicomModalities allows are answered (and audited) by the plugin, not Orthanc.
    orthanc.RegisterFindCallback(make_find_callback(services, pacs.log_error))
    orthanc.RegisterMoveCallback(_leaks.move_callback(make_move_callback(services, pacs.log_error)))
    orthanc.ExtendOrthancExplorer(EXPLORER_EXTENSION.read_text())
    def once_migrated() -> None:
        """What reads the plugin's tables starts once they exist (not before: a fresh database has none)."""
        if shared_index:  # the follower may be another node: it sees this node's uploads' holds
            holds = HoldExchange(services, services.node, pacs.log_warning, engine=_own_connection(settings))
            holds.exchange_once()  # the other nodes' holds read before this node's worker may follow the log
            holds.start()
        worker.schema_ready()  # follows Orthanc's change log from its cursor
        gate.revocations.start()  # each loads at once, then every few seconds
        sessions.start()
        api.jobs.start()
        PurgeWorker(services, pacs.log_warning, pacs.log_error).start()  # deleted studies past retention
        start_delivery(services, log_warning=pacs.log_warning, log_error=pacs.log_error)  # the outbox's events
        SpoolReplayer(services.engine, events_spool, log_error=pacs.log_error,  # DIMSE rows spooled
                      log_warning=pacs.log_warning).start()

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


def _database_monitor(services: Services) -> DatabaseMonitor:
    """Pings the database; while it does not answer, its breaker refuses at once (README "Resilience")."""
    engine, settings = services.engine, services.settings
    probe = _own_connection(settings)

    def interrupt() -> int:  # the hung ping's connection, and every connection of the requests and workers
        return db.interrupt(probe) + db.interrupt(engine)

    return DatabaseMonitor(partial(db.ping, probe), interrupt, services.database,
                           interval=settings.DatabaseHealthIntervalSeconds,
                           timeout=settings.DatabaseHealthTimeoutSeconds, log_warning=pacs.log_warning)


def _own_connection(settings: Settings) -> db.Engine:
    """A single database connection apart from the requests' pool (db.create_probe_engine)."""
    return db.create_probe_engine(settings.DatabaseUrl, connect_timeout=settings.DatabaseConnectTimeoutSeconds,
                                  schema=settings.DatabaseSchema)


def _deletion_spool(orthanc_config: dict[str, Any], node: str) -> DeletionSpool:
    """This node's deletion spool: a private folder beside Orthanc's own index (its storage, when the index is
    not on disk), one file per node (a cluster's nodes may share that folder)."""
    base = orthanc_config.get("IndexDirectory") or orthanc_config.get("StorageDirectory") or "OrthancStorage"
    try:
        folder = private_directory(Path(base) / "ehr-imaging")
    except UnsafeDirectory as exc:
        pacs.log_error(f"ehr-imaging: deletion spool not usable: {exc}")
        return DeletionSpool(None)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in node)
    return DeletionSpool(folder / f"deletions-{name}.spool")


def _session_revocations(services: Services) -> RevocationList:
    """Ended admin sessions (logout), shared through PostgreSQL; cookie sessions are refused until loaded."""
    engine = services.engine
    sessions = RevocationList(lambda: session_store.revoked_session_ids(engine), log_error=pacs.log_error,
                              what="admin sessions")
    services.authenticator.session_revocations = sessions
    return sessions


def _audit_spools(settings: Settings, orthanc_config: dict[str, Any], node: str) -> tuple[AuditSpool, AuditSpool]:
    """This node's audit spools (access, events) in one private folder (README "Audit: what is durable when")."""
    root = Path(settings.AuditSpoolDirectory) if settings.AuditSpoolDirectory else (
        Path(str(orthanc_config.get("StorageDirectory", "OrthancStorage"))) / "ehr-imaging-audit-spool"
        / node.replace(":", "-"))
    private_directory(root)
    identity = spool_id(root)
    spools = tuple(AuditSpool(root / stream, stream, identity, sync_millis=settings.AuditSpoolSyncMillis,
                              log=pacs.log_warning) for stream in ("access", "events"))
    for spool in spools:
        spool.start()
        depth = spool.depth()
        if depth[0]:
            pacs.log_warning(f"ehr-imaging: audit spool {spool.folder} holds {depth[0]} records from before this"
                             " start; they are written to PostgreSQL once it answers")
    return spools[0], spools[1]


def _viewer_gate(services: Services, spool: AuditSpool) -> ViewerGate:
    engine = services.engine
    revocations = RevocationList(lambda: viewer_store.revoked_token_ids(engine), log_error=pacs.log_error)
    access_log = AccessLog(lambda counts: viewer_store.add_access_counts(engine, counts), log_error=pacs.log_error,
                           spool=spool, apply_spooled=partial(spool_replay.apply_access, engine, spool))
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
            if not migrations.has_trigram_index(services.engine, services.settings.DatabaseSchema):
                pacs.log_warning("ehr-imaging: pg_trgm is not installed: the patient-name search of GET /studies "
                                 "scans every study (run orthanc-config/postgres-roles.sql as a superuser)")
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
