"""The audit timeline's pure parts: the filters read from a query string (dates, time zones, actions, bounds) and
the CSV export (header, rows, formulas neutralised, chunking). The queries themselves run on the real stack
(tests/integration/test_audit_timeline.py)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from ehr_imaging.api.audit import audit_filter, csv_chunks
from ehr_imaging.core import errors
from ehr_imaging.store import audit
from ehr_imaging.store.audit import AuditEvent


def test_dates_and_date_times_become_utc_instants() -> None:
    day = audit_filter({"from": "2026-11-01", "to": "2026-11-30"})
    assert day.since == datetime(2026, 11, 1, tzinfo=UTC)
    assert day.until == datetime(2026, 12, 1, tzinfo=UTC)  # a date alone as "to": that day included
    moment = audit_filter({"from": "2026-11-01T08:00:00+01:00", "to": "2026-11-01T09:30:00"})
    assert moment.since == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    assert moment.until == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)  # no offset: UTC
    assert audit_filter({"from": "2026-11-01T08:00:00Z"}).since == datetime(2026, 11, 1, 8, tzinfo=UTC)


def test_defaults_and_text_filters() -> None:
    where = audit_filter({})
    assert where == audit.AuditFilter(limit=50, offset=0)
    where = audit_filter({"patient_id": " p-1 ", "mrn": "mrn-7", "actor": "dr-who", "study_uid": "1.2.840.1",
                          "action": "upload, viewer-access,upload", "limit": "5", "offset": "10"})
    assert (where.patient_id, where.mrn, where.actor, where.study_uid) == ("p-1", "mrn-7", "dr-who", "1.2.840.1")
    assert where.actions == ("upload", "viewer-access") and (where.limit, where.offset) == (5, 10)
    assert audit_filter({}, default_limit=100_000, max_limit=100_000).limit == 100_000


@pytest.mark.parametrize(("query", "detail"), [
    ({"action": "upload,bogus"}, "action: unknown 'bogus'"),
    ({"from": "yesterday"}, "from: not an ISO 8601"),
    ({"to": "2026-02-30"}, "to: not an ISO 8601"),
    ({"from": "2026-11-02", "to": "2026-11-01"}, "from: must be before to"),
    ({"from": "2026-11-01", "to": "2026-10-31"}, "from: must be before to"),
    ({"study_uid": "1.2.abc"}, "study_uid: not a DICOM UID"),
    ({"mrn": "M" * 65}, "mrn: at most 64 characters"),
    ({"limit": "501"}, "limit: must be between 1 and 500"),
])
def test_bad_filters_name_the_parameter(query: dict[str, str], detail: str) -> None:
    with pytest.raises(errors.Invalid) as refused:
        audit_filter(query)
    assert str(refused.value.detail).startswith(detail)


def test_every_source_names_its_actions_once() -> None:
    every = audit.actions()
    assert len(every) == len(set(every))
    assert {"upload", "link", "unlink", "tag-edit", "delete", "viewer-token-issued", "viewer-token-revoked",
            "viewer-access"} <= set(every)
    assert audit.unknown_actions(["upload", "nope"]) == ["nope"]


def event(actor: str, **details: object) -> AuditEvent:
    at = datetime(2026, 11, 5, 10, 0, tzinfo=UTC)
    return AuditEvent(at, at, "viewer-access", actor, "p-1", "MRN-1", "1.2.3", None, dict(details))


def test_csv_header_rows_and_formulas() -> None:
    events = [event("dr-who", requests=3), event("=HYPERLINK(\"http://x\")", reason="+1"), event("-rm", note="@x")]
    text = b"".join(csv_chunks(events)).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(audit.COLUMNS)
    assert rows[1] == ["2026-11-05T10:00:00+00:00", "2026-11-05T10:00:00+00:00", "viewer-access", "dr-who", "p-1",
                       "MRN-1", "1.2.3", "", '{"requests":3}']
    assert [row[3] for row in rows[1:]] == ["dr-who", "'=HYPERLINK(\"http://x\")", "'-rm"]
    assert json.loads(rows[2][8]) == {"reason": "+1"}  # a JSON cell starts with "{": never a formula


def test_csv_comes_in_chunks_and_an_empty_export_is_its_header() -> None:
    chunks = list(csv_chunks([event(f"user-{n}") for n in range(7)], rows_per_chunk=3))
    assert len(chunks) == 3  # header + 2 rows, 3 rows, 2 rows
    assert len(list(csv.reader(io.StringIO(b"".join(chunks).decode())))) == 8
    assert b"".join(csv_chunks([])).decode() == ",".join(audit.COLUMNS) + "\r\n"
