"""Tag coercion (pure): which patient/accession tags of a linked study must change to agree with its order."""

from __future__ import annotations

from collections.abc import Mapping

from .orders import person_name

COERCED_TAGS = ("PatientID", "PatientName", "AccessionNumber")


def order_tags(order: Mapping[str, str | None]) -> dict[str, str]:
    """The DICOM values an order implies; a tag the order says nothing about is left alone."""
    wanted = {"PatientID": order.get("mrn"), "PatientName": person_name(order) or None,
              "AccessionNumber": order.get("accession_number")}
    return {tag: value for tag, value in wanted.items() if value}


def tag_changes(current: Mapping[str, str | None], order: Mapping[str, str | None]) -> dict[str, str]:
    """Only the tags whose value differs (DICOM padding ignored)."""
    return {tag: value for tag, value in order_tags(order).items() if (current.get(tag) or "").strip() != value}
