"""Upload audit rows that do not come from a stored study: rejected uploads."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .models import DicomUploadLog


def record_failed(engine: Engine, *, uploaded_by: str, source: str, file_names: list[str], size: int,
                  error: str, study_uid: str | None = None, patient_id: str | None = None,
                  duration: float | None = None) -> None:
    """A rejected upload stores nothing in Orthanc but leaves this row."""
    with Session(engine) as session, session.begin():
        session.add(DicomUploadLog(
            study_instance_uid=study_uid or "", uploaded_by=uploaded_by, upload_source=source,
            file_names=file_names, number_of_files=len(file_names), total_size_bytes=size,
            upload_status="failed", error_message=error[:2000], patient_id=patient_id,
            upload_duration_seconds=duration,
        ))
