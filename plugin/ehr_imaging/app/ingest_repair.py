"""The paged repair: compare every study Orthanc holds with what the plugin recorded, and hand the differences
to the ingest worker. Never a start-up step (start-up resumes from the change log's cursor): it runs on
``POST /api/v1/dicom/reconcile`` (``make reconcile``), at the first start on a change log the plugin has no cursor
for, and when the cursor fell behind what Orthanc's change log still holds.

Orthanc is read in pages (``/studies?expand&since=&limit=``), never in one answer. A stable study not recorded is
queued for ingest; a recorded study Orthanc no longer holds is queued as a deletion (the worker checks again that
Orthanc does not hold it before auditing, so a study missed between two pages is never taken for deleted).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..services import Services
from ..store import links

PAGE = 500


@dataclass(frozen=True)
class RepairReport:
    studies_in_orthanc: int
    pages: int
    unrecorded: tuple[str, ...]  # stable studies Orthanc holds that the plugin has not recorded
    gone: tuple[str, ...]  # recorded studies Orthanc no longer holds

    def as_json(self) -> dict[str, int]:
        return {"studies_in_orthanc": self.studies_in_orthanc, "pages": self.pages,
                "queued_for_ingest": len(self.unrecorded), "queued_as_deleted": len(self.gone)}


def differences(services: Services, page: int = PAGE) -> RepairReport:
    known = links.known_orthanc_ids(services.engine)
    held: set[str] = set()
    unrecorded: list[str] = []
    since, pages = 0, 0
    while True:
        batch = services.pacs.get_json(f"/studies?expand&since={since}&limit={page}")
        pages += 1
        for study in batch:
            held.add(study["ID"])
            # Only stable studies: the others announce themselves with STABLE_STUDY in the change log.
            if study.get("IsStable") and study["ID"] not in known:
                unrecorded.append(study["ID"])
        if len(batch) < page:
            break
        since += len(batch)
    return RepairReport(len(held), pages, tuple(unrecorded), tuple(sorted(known - held)))


def reconcile(services: Services) -> RepairReport:
    """Find the differences and hand them to the ingest worker (services.ingest_later / ingest_deleted)."""
    report = differences(services)
    services.log_warning(f"ehr-imaging: repair read {report.studies_in_orthanc} studies in {report.pages} pages:"
                         f" {len(report.unrecorded)} not yet recorded (queued for ingest),"
                         f" {len(report.gone)} recorded studies are gone from Orthanc (auditing)")
    for study in report.unrecorded:
        services.ingest_later(study)
    for study in report.gone:
        services.ingest_deleted(study)
    return report
