"""The audit timeline: every audited thing the plugin records, from every audit table, as one newest-first list
(``GET /api/v1/dicom/audit``). It answers "who did what to whose images, when", e.g. who looked at a
patient's images last month.

Each audit table is one ``Source``: a SELECT of the common ``COLUMNS`` over that table, and the actions it can
produce. ``SOURCES`` is the list of them; the timeline is their ``UNION ALL``, filtered, counted and paged in
one query. PostgreSQL pushes the filters on ``at``, ``started_at``, ``actor`` and ``study_uid`` down into each
source's own columns (their indexes serve them); an ``action`` filter leaves out the sources that cannot
produce it.

Every row names its patient as well as the tables allow: the EHR ``patient_id`` of the row's order (its own,
else its study's), the ``mrn`` as the study's PatientID. Rows without an order of their own find it through
their study: the study's link (``study_links``), or, once the study is deleted, its latest deletion row
(``_study``). Viewer access rows are aggregates (per token and study: first and last access, requests,
refusals, bytes); their ``started_at`` is the first access, ``at`` the last, and a time window selects the rows
that overlap it (``at >= from`` and ``started_at < to``; for every other row ``started_at = at``).

Adding a source (the one place to extend the timeline): append a ``Source`` to ``SOURCES`` whose SQL selects
exactly ``COLUMNS``, in order, with these types (timestamptz, timestamptz, text x 6, jsonb), and names its
actions; use ``_study(uid)`` (joins ``sl``, ``dl``; ``_STUDY_ORDER``, ``_STUDY_MRN``) and ``_order(order_id)``
(joins ``o``) to find a study's order and patient. Nothing else changes: the route, the filters, the JSON and
the CSV export read ``COLUMNS``, ``SOURCES`` and ``actions()`` (the deletion requests below are such entries).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

COLUMNS = ("at", "started_at", "action", "actor", "patient_id", "mrn", "study_uid", "order_id", "details")


@dataclass(frozen=True)
class Source:
    """One audit table in the timeline: a SELECT of ``COLUMNS`` and the actions its rows carry."""

    name: str
    actions: tuple[str, ...]
    sql: str


def _study(uid: str) -> str:
    """Joins ``sl`` (the study's link) and ``dl`` (its latest deletion row) for the StudyInstanceUID ``uid``."""
    return (f" LEFT JOIN study_links sl ON sl.study_instance_uid = {uid}"
            " LEFT JOIN LATERAL (SELECT d.order_id, d.patient_id FROM dicom_deletion_logs d"
            f" WHERE d.study_instance_uid = {uid} ORDER BY d.deleted_at DESC LIMIT 1) dl ON true")


def _order(order: str) -> str:
    """Joins ``o``, the order ``order`` names (its EHR patient_id and MRN)."""
    return f" LEFT JOIN imaging_orders o ON o.order_id = {order}"


_STUDY_ORDER = "coalesce(sl.order_id, dl.order_id)"
_STUDY_MRN = "coalesce(sl.patient_id, dl.patient_id)"

SOURCES: tuple[Source, ...] = (
    # Every ingest of a study (upload, C-STORE, offline sync) and every refused upload (status 'failed'). A refused
    # upload's patient_id is the one the caller gave; an ingest's is the study's PatientID (its MRN).
    Source("uploads", ("upload",), f"""
        SELECT u.uploaded_at, u.uploaded_at, 'upload', u.uploaded_by,
               coalesce(o.patient_id, CASE WHEN u.upload_status = 'failed' THEN u.patient_id END),
               CASE WHEN u.upload_status = 'failed' THEN o.mrn ELSE coalesce(u.patient_id, o.mrn) END,
               u.study_instance_uid, coalesce(u.order_id, {_STUDY_ORDER}),
               jsonb_build_object('upload_id', u.id, 'status', u.upload_status, 'source', u.upload_source,
                                  'files', u.number_of_files, 'bytes', u.total_size_bytes,
                                  'error', u.error_message, 'study_deleted', u.is_deleted)
        FROM dicom_upload_logs u {_study("u.study_instance_uid")}
        {_order(f"coalesce(u.order_id, {_STUDY_ORDER})")}"""),
    # Links and unlinks, automatic or by a person (a deletion frees its order with an 'unlink' too).
    Source("links", ("auto-link", "link", "unlink", "coerce", "quarantine"), f"""
        SELECT a.at, a.at, a.action, a.actor, o.patient_id, coalesce({_STUDY_MRN}, o.mrn), a.study_instance_uid,
               coalesce(a.order_id, {_STUDY_ORDER}), jsonb_build_object('rule', a.rule, 'reason', a.reason)
        FROM link_audit a {_study("a.study_instance_uid")}
        {_order(f"coalesce(a.order_id, {_STUDY_ORDER})")}"""),
    # modify-tags: the tags of a file the caller sent, before and after.
    Source("tag edits", ("tag-edit",), f"""
        SELECT t.edited_at, t.edited_at, 'tag-edit', t.edited_by, o.patient_id,
               coalesce({_STUDY_MRN}, t.original_values ->> 'PatientID', o.mrn), t.study_instance_uid,
               {_STUDY_ORDER},
               jsonb_build_object('tag_edit_id', t.id, 'sop_instance_uid', t.sop_instance_uid,
                                  'file_name', t.file_name, 'original_values', t.original_values,
                                  'new_values', t.new_values, 'private_tags_removed', t.private_tags_removed)
        FROM tag_edit_audit t {_study("t.study_instance_uid")} {_order(_STUDY_ORDER)}"""),
    # Studies deleted, with the reason (and the request and approver when approval was required).
    Source("deletions", ("delete",), f"""
        SELECT d.deleted_at, d.deleted_at, 'delete', d.deleted_by, o.patient_id, coalesce(d.patient_id, o.mrn),
               d.study_instance_uid, d.order_id,
               jsonb_build_object('deletion_id', d.id, 'reason', d.reason, 'accession_number', d.accession_number,
                                  'modalities', d.modalities, 'series', d.number_of_series,
                                  'instances', d.number_of_instances, 'deletion_request_id', d.deletion_request_id,
                                  'approved_by', d.approved_by, 'restorable', d.restorable)
        FROM dicom_deletion_logs d {_order("d.order_id")}"""),
    # Deletion requests (DeletionApproval required): who asked, when, why.
    Source("deletion requests", ("deletion-requested",), f"""
        SELECT r.requested_at, r.requested_at, 'deletion-requested', r.requested_by, o.patient_id,
               coalesce(r.patient_id, o.mrn), r.study_instance_uid, r.order_id,
               jsonb_build_object('deletion_request_id', r.id, 'reason', r.reason, 'expires_at', r.expires_at)
        FROM deletion_requests r {_order("r.order_id")}"""),
    # Their decisions: approved or rejected by a second admin (why), or expired.
    Source("deletion decisions", ("deletion-approved", "deletion-rejected", "deletion-expired"), f"""
        SELECT r.decided_at, r.decided_at, 'deletion-' || r.status, r.decided_by, o.patient_id,
               coalesce(r.patient_id, o.mrn), r.study_instance_uid, r.order_id,
               jsonb_build_object('deletion_request_id', r.id, 'requested_by', r.requested_by,
                                  'reason', r.decision_reason, 'deletion_id', r.deletion_id)
        FROM deletion_requests r {_order("r.order_id")}
        WHERE r.decided_at IS NOT NULL AND r.status IN ('approved', 'rejected', 'expired')"""),
    # Deleted studies brought back from their kept files, and kept files purged past retention.
    Source("restores and purges", ("restore", "purge"), f"""
        SELECT e.at, e.at, e.action, e.actor, o.patient_id, coalesce(d.patient_id, o.mrn), d.study_instance_uid,
               d.order_id, jsonb_build_object('deletion_id', d.id, 'kept_files', d.kept_files)
        FROM dicom_deletion_logs d
        CROSS JOIN LATERAL (VALUES (d.restored_at, 'restore', d.restored_by),
                                   (d.purged_at, 'purge', 'ehr-imaging')) AS e (at, action, actor)
        {_order("d.order_id")}
        WHERE e.at IS NOT NULL"""),
    # An order's status moved by the images (OrderStatusUpdates): from, to, which study, why.
    Source("order status", ("order-status",), f"""
        SELECT c.at, c.at, 'order-status', c.actor, o.patient_id, o.mrn, c.study_instance_uid, c.order_id,
               jsonb_build_object('from', c.from_status, 'to', c.to_status, 'reason', c.reason)
        FROM order_status_audit c {_order("c.order_id")}"""),
    # Viewer tokens issued: one row per study the token opens.
    Source("viewer tokens issued", ("viewer-token-issued",), f"""
        SELECT v.issued_at, v.issued_at, 'viewer-token-issued', v.subject, coalesce(o.patient_id, v.patient_id),
               coalesce({_STUDY_MRN}, o.mrn), s.uid, coalesce({_STUDY_ORDER}, v.order_id),
               jsonb_build_object('token_id', v.token_id, 'expires_at', v.expires_at,
                                  'studies', cardinality(v.study_uids), 'for_order_id', v.order_id,
                                  'for_patient_id', v.patient_id)
        FROM viewer_tokens v CROSS JOIN LATERAL unnest(v.study_uids) AS s(uid) {_study("s.uid")}
        {_order(f"coalesce({_STUDY_ORDER}, v.order_id)")}"""),
    # Viewer tokens revoked: by whom, why, whose token.
    Source("viewer tokens revoked", ("viewer-token-revoked",), f"""
        SELECT v.revoked_at, v.revoked_at, 'viewer-token-revoked', v.revoked_by, coalesce(o.patient_id, v.patient_id),
               coalesce({_STUDY_MRN}, o.mrn), s.uid, coalesce({_STUDY_ORDER}, v.order_id),
               jsonb_build_object('token_id', v.token_id, 'reason', v.revoke_reason, 'token_subject', v.subject,
                                  'expires_at', v.expires_at)
        FROM viewer_tokens v CROSS JOIN LATERAL unnest(v.study_uids) AS s(uid) {_study("s.uid")}
        {_order(f"coalesce({_STUDY_ORDER}, v.order_id)")}
        WHERE v.revoked_at IS NOT NULL"""),
    # Viewer reads, aggregated per token and study (requests served, requests refused, bytes).
    Source("viewer access", ("viewer-access",), f"""
        SELECT x.last_access_at, x.first_access_at, 'viewer-access', x.subject, coalesce(o.patient_id, v.patient_id),
               coalesce({_STUDY_MRN}, o.mrn), x.study_instance_uid, coalesce({_STUDY_ORDER}, v.order_id),
               jsonb_build_object('token_id', x.token_id, 'requests', x.request_count, 'denied', x.denied_count,
                                  'bytes', x.bytes, 'first_access_at', x.first_access_at,
                                  'last_access_at', x.last_access_at)
        FROM viewer_access_log x LEFT JOIN viewer_tokens v ON v.token_id = x.token_id {_study("x.study_instance_uid")}
        {_order(f"coalesce({_STUDY_ORDER}, v.order_id)")}"""),
    # DICOM queries and retrievals by modalities (the actor is the calling AE title); the patient is the
    # query's PatientID, the study its StudyInstanceUID, when it gave them.
    Source("dicom services", ("dicom-find", "worklist-query", "dicom-move"), """
        SELECT q.at, q.at,
               CASE q.service WHEN 'C-FIND' THEN 'dicom-find' WHEN 'MWL' THEN 'worklist-query' ELSE 'dicom-move' END,
               q.calling_aet, NULL::text, q.query ->> 'PatientID', q.query ->> 'StudyInstanceUID', NULL::text,
               jsonb_build_object('service', q.service, 'called_aet', q.called_aet, 'level', q.level,
                                  'query', q.query, 'answers', q.answers, 'truncated', q.truncated,
                                  'outcome', q.outcome, 'target_aet', q.target_aet, 'node', q.node)
        FROM dimse_audit q"""),
)


def actions() -> tuple[str, ...]:
    """Every action the timeline can show (from ``SOURCES``)."""
    return tuple(action for source in SOURCES for action in source.actions)


@dataclass(frozen=True)
class AuditFilter:
    patient_id: str | None = None  # the EHR's patient id (on the orders): also rows naming one of their MRNs
    patient_scope: frozenset[str] | None = None  # a scoped caller's EHR patients: their rows only (same rule)
    mrn: str | None = None
    study_uid: str | None = None
    actor: str | None = None
    actions: tuple[str, ...] = ()  # any of these (empty: all)
    since: datetime | None = None  # rows at or after (an aggregate: its last access)
    until: datetime | None = None  # rows before (an aggregate: its first access)
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class AuditEvent:
    at: datetime
    started_at: datetime
    action: str
    actor: str | None
    patient_id: str | None
    mrn: str | None
    study_uid: str | None
    order_id: str | None
    details: dict[str, Any]


def _query(where: AuditFilter) -> tuple[str, dict[str, Any]] | None:
    """The filtered timeline's FROM and WHERE clauses and their parameters (None: no source can match)."""
    sources = [s for s in SOURCES if not where.actions or set(s.actions) & set(where.actions)]
    if not sources:
        return None
    arms = " UNION ALL ".join(f"({source.sql})" for source in sources)
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if where.patient_id:
        # As the study queries: rows of the patient's orders, and rows naming one of their MRNs.
        conditions.append("(t.patient_id = :patient_id OR (t.order_id IS NULL AND upper(t.mrn) IN"
                          " (SELECT upper(mrn) FROM imaging_orders WHERE patient_id = :patient_id)))")
        params["patient_id"] = where.patient_id
    if where.patient_scope is not None:
        conditions.append("(t.patient_id = ANY(:scope) OR (t.order_id IS NULL AND upper(t.mrn) IN"
                          " (SELECT upper(mrn) FROM imaging_orders WHERE patient_id = ANY(:scope))))")
        params["scope"] = sorted(where.patient_scope)
    if where.mrn:
        conditions.append("upper(t.mrn) = upper(:mrn)")
        params["mrn"] = where.mrn.strip()
    if where.study_uid:
        conditions.append("t.study_uid = :study_uid")
        params["study_uid"] = where.study_uid
    if where.actor:
        conditions.append("t.actor = :actor")
        params["actor"] = where.actor
    if where.actions:
        conditions.append("t.action = ANY(:actions)")
        params["actions"] = list(where.actions)
    if where.since:
        conditions.append("t.at >= :since")
        params["since"] = where.since
    if where.until:
        conditions.append("t.started_at < :until")
        params["until"] = where.until
    clause = f" FROM ({arms}) AS t ({', '.join(COLUMNS)})"
    if conditions:
        clause += " WHERE " + " AND ".join(conditions)
    return clause, params


_ORDER_BY = " ORDER BY t.at DESC, t.action, t.study_uid, t.details::text"


def timeline(engine: Engine, where: AuditFilter) -> tuple[int, list[AuditEvent]]:
    """One page of the filtered timeline, newest first, and how many rows the filter selects in all."""
    built = _query(where)
    if built is None:
        return 0, []
    clause, params = built
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*)" + clause), params).scalar_one()
        rows = conn.execute(text(f"SELECT {', '.join(f't.{c}' for c in COLUMNS)}{clause}{_ORDER_BY}"
                                 " LIMIT :limit OFFSET :offset"),
                            {**params, "limit": where.limit, "offset": where.offset})
        return total, [AuditEvent(*row) for row in rows]


def count(engine: Engine, where: AuditFilter) -> int:
    built = _query(where)
    if built is None:
        return 0
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*)" + built[0]), built[1]).scalar_one())


def stream(engine: Engine, where: AuditFilter, batch: int = 1000) -> Iterator[AuditEvent]:
    """The page ``where`` selects, row by row from a server-side cursor (an export never holds it all)."""
    built = _query(where)
    if built is None:
        return
    clause, params = built
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(
            text(f"SELECT {', '.join(f't.{c}' for c in COLUMNS)}{clause}{_ORDER_BY} LIMIT :limit OFFSET :offset"),
            {**params, "limit": where.limit, "offset": where.offset})
        for row in result:
            yield AuditEvent(*row)


def unknown_actions(names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are no action of the timeline."""
    every = set(actions())
    return [name for name in names if name not in every]
