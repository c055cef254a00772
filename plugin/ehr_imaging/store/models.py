"""Typed SQLAlchemy models of the plugin's tables (the schema comes from the connection's search_path)."""

from __future__ import annotations

from datetime import date, datetime, time

from sqlalchemy import DateTime, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ImagingOrder(Base):
    __tablename__ = "imaging_orders"

    order_id: Mapped[str] = mapped_column(primary_key=True)
    accession_number: Mapped[str | None]
    patient_id: Mapped[str | None]
    mrn: Mapped[str | None]
    patient_family_name: Mapped[str | None]
    patient_given_name: Mapped[str | None]
    birth_date: Mapped[date | None]
    sex: Mapped[str | None]
    modality: Mapped[str | None]
    scheduled_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    description: Mapped[str | None]
    referring_physician: Mapped[str | None]
    status: Mapped[str] = mapped_column(default="scheduled")
    # Filled in by matching:
    study_instance_uid: Mapped[str | None]
    orthanc_study_id: Mapped[str | None]
    number_of_series: Mapped[int | None]
    number_of_images: Mapped[int | None]
    study_date: Mapped[date | None]
    study_time: Mapped[time | None]
    uploaded_by: Mapped[str | None]
    uploaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    upload_source: Mapped[str | None]
    match_rule: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    EHR_FIELDS = (
        "accession_number", "patient_id", "mrn", "patient_family_name", "patient_given_name", "birth_date", "sex",
        "modality", "scheduled_start", "description", "referring_physician", "status",
    )
    MATCH_FIELDS = (
        "study_instance_uid", "orthanc_study_id", "number_of_series", "number_of_images", "study_date",
        "study_time", "uploaded_at", "uploaded_by", "upload_source", "match_rule",
    )
