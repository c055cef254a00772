"""The audit timeline route (admin): its filters parsed from the query string, one page as JSON, or the CSV export.

``GET /api/v1/dicom/audit?patient_id=&mrn=&study_uid=&actor=&action=&from=&to=&limit=&offset=&format=``: what
store/audit.py puts together from every audit table, newest first. ``from`` and ``to`` take an ISO 8601 date or
date-time (UTC when it names no offset); ``from`` is inclusive, ``to`` exclusive, and a ``to`` that is a date
alone includes that day. ``action`` takes one action or several, comma-separated. ``format=csv`` answers the same
rows as a CSV file, at most ``MAX_EXPORT`` rows a request on the API port (streamed from a server-side cursor:
it holds one database connection while it is sent) and ``MAX_EXPORT_HERE`` on Orthanc's port (which cannot
stream: the file is built in memory first); page on with ``offset``, ``X-Total-Count`` says how many rows the
filter selects.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from ..core import errors
from ..core.dicom_values import is_uid
from ..store import audit
from ..store.audit import AuditEvent, AuditFilter
from . import presenters
from .context import Api
from .router import Request, Response, json_response
from .schemas import CSV
from .validation import query_int

MAX_PAGE = 500
MAX_EXPORT = 100_000
MAX_EXPORT_HERE = 10_000  # Orthanc's port
# A cell a spreadsheet would run as a formula (CSV injection): written with a leading apostrophe.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def audit_timeline(api: Api, request: Request) -> Response:
    """The audit timeline: uploads, links, tag edits, deletions, viewer tokens and viewer access, newest first."""
    q = request.query
    export = _format(q.get("format")) == "csv"
    most = (MAX_EXPORT if request.can_stream else MAX_EXPORT_HERE) if export else MAX_PAGE
    where = dataclasses.replace(audit_filter(q, default_limit=most if export else 50, max_limit=most),
                                patient_scope=request.patients)  # a patient (or a care team): their records only
    if not export:
        total, events = audit.timeline(api.services.engine, where)
        return json_response(presenters.page(total, where.limit, where.offset,
                                             [presenters.audit_event(event) for event in events]))
    total = audit.count(api.services.engine, where)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {"Content-Disposition": f'attachment; filename="ehr-imaging-audit-{stamp}.csv"',
               "X-Total-Count": str(total)}
    chunks = csv_chunks(audit.stream(api.services.engine, where))
    if request.can_stream:
        return Response(content_type=f"{CSV}; charset=utf-8", headers=headers, stream=chunks)
    return Response(content_type=f"{CSV}; charset=utf-8", headers=headers, body=b"".join(chunks))


def audit_filter(q: dict[str, str], *, default_limit: int = 50, max_limit: int = MAX_PAGE) -> AuditFilter:
    """The timeline's filters from a query string; a bad value is a 422 naming the parameter."""
    study_uid = _text(q, "study_uid", 64)
    if study_uid is not None and not is_uid(study_uid):
        raise errors.Invalid("study_uid: not a DICOM UID")
    actions = tuple(dict.fromkeys(a.strip() for a in (q.get("action") or "").split(",") if a.strip()))
    unknown = audit.unknown_actions(actions)
    if unknown:
        raise errors.Invalid(f"action: unknown {unknown[0][:40]!r}; one or more of {', '.join(audit.actions())}")
    since, until = _instant(q, "from", end_of_day=False), _instant(q, "to", end_of_day=True)
    if since is not None and until is not None and since >= until:
        raise errors.Invalid("from: must be before to")
    return AuditFilter(patient_id=_text(q, "patient_id", 128), mrn=_text(q, "mrn", 64), study_uid=study_uid,
                       actor=_text(q, "actor", 256), actions=actions, since=since, until=until,
                       limit=query_int(q, "limit", default_limit, 1, max_limit),
                       offset=query_int(q, "offset", 0, 0, 10**9))


def _format(value: str | None) -> str:
    if value in (None, "", "json", "csv"):
        return value or "json"
    raise errors.Invalid("format: must be json or csv")


def _text(q: dict[str, str], name: str, longest: int) -> str | None:
    value = (q.get(name) or "").strip()
    if len(value) > longest:
        raise errors.Invalid(f"{name}: at most {longest} characters")
    return value or None


def _instant(q: dict[str, str], name: str, *, end_of_day: bool) -> datetime | None:
    """An ISO 8601 date or date-time as an aware UTC instant; a date alone is its day's start (``from``) or the
    next day's start (``to``: the day included)."""
    value = (q.get(name) or "").strip()
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day + timedelta(days=1 if end_of_day else 0), time(), UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise errors.Invalid(f"{name}: not an ISO 8601 date or date-time (2026-11-01 or 2026-11-01T08:00:00Z)") \
            from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def csv_chunks(events: Iterable[AuditEvent], rows_per_chunk: int = 500) -> Iterator[bytes]:
    """The CSV file: a header row of ``store.audit.COLUMNS``, then one row per event (details as JSON)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(audit.COLUMNS)
    pending = 1
    for event in events:
        row = presenters.audit_event(event)
        row["details"] = json.dumps(row["details"], sort_keys=True, separators=(",", ":"), default=str)
        writer.writerow([_cell(row[name]) for name in audit.COLUMNS])
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending:
        yield buffer.getvalue().encode()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
