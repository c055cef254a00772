"""Labelled corpus for study-to-order matching: realistic cases, including the traps that cause wrong links.

Plain, JSON-able data (dates as ISO strings) so the same cases can feed the unit tests, a benchmark or a
report. Each case says what the right outcome is, from the hospital's point of view: the order the study
really belongs to, or why a human must look at it. ``to_facts`` turns a case into the inputs of
``ehr_imaging.core.matching.decide``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from ehr_imaging.core.matching import OrderFacts, StudyFacts

_UID_ROOT = "1.2.826.0.1.3680043.8.498.2026"


@dataclass(frozen=True)
class MatchingCase:
    """One study, the orders the caller found for it, and the expected outcome."""

    name: str
    study: dict[str, Any]  # StudyFacts fields; modalities as a sorted list, study_date as "YYYY-MM-DD"
    orders: list[dict[str, Any]]  # OrderFacts fields; scheduled_start as ISO 8601 (with or without offset)
    expected_order_id: str | None  # None = must stay unmatched
    expected_reason: str | None = None  # the unmatched reason; None when a link is expected
    expected_rule: str | None = None  # the rule that should make the link; None when unmatched
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _study(n: int, patient_id: str | None, accession: str | None, modalities: list[str], study_date: str | None,
           explicit_order_id: str | None = None) -> dict[str, Any]:
    return {
        "study_instance_uid": f"{_UID_ROOT}.{n}", "patient_id": patient_id, "accession_number": accession,
        "modalities": sorted(modalities), "study_date": study_date, "explicit_order_id": explicit_order_id,
    }


def _order(order_id: str, accession: str | None, mrn: str | None, modality: str | None, scheduled_start: str | None,
           status: str = "scheduled", linked_study_uid: str | None = None) -> dict[str, Any]:
    return {
        "order_id": order_id, "accession_number": accession, "mrn": mrn, "modality": modality,
        "scheduled_start": scheduled_start, "status": status, "linked_study_uid": linked_study_uid,
    }


def _link(name: str, study: dict[str, Any], orders: list[dict[str, Any]], order_id: str, rule: str,
          note: str = "") -> MatchingCase:
    return MatchingCase(name, study, orders, expected_order_id=order_id, expected_rule=rule, note=note)


def _none(name: str, study: dict[str, Any], orders: list[dict[str, Any]], reason: str,
          note: str = "") -> MatchingCase:
    return MatchingCase(name, study, orders, expected_order_id=None, expected_reason=reason, note=note)


_OTHER_STUDY = f"{_UID_ROOT}.9999"

_CASES: list[MatchingCase] = [
    # --- rule 2: accession --------------------------------------------------------------------------
    _link("accession exact match",
          _study(1, "MRN-200001", "ACC-2026-1001", ["CT"], "2026-03-02"),
          [_order("ORD-1001", "ACC-2026-1001", "MRN-200001", "CT", "2026-03-02T09:30:00")],
          "ORD-1001", "accession"),
    _link("accession match among irrelevant orders",
          _study(2, "MRN-200002", "ACC-2026-1002", ["MR"], "2026-03-03"),
          [_order("ORD-1002", "ACC-2026-1002", "MRN-200002", "MR", "2026-03-03T14:00:00"),
           _order("ORD-1002-B", "ACC-2026-1902", "MRN-200002", "MR", "2026-03-03T15:00:00"),
           _order("ORD-1002-C", "ACC-2026-1903", "MRN-200099", "CT", "2026-03-03T08:00:00")],
          "ORD-1002", "accession", "the same patient's other same-day MR order has its own accession"),
    _link("accession reused across two patients, study patient is one of them",
          _study(3, "MRN-200004", "ACC-2026-1003", ["CR"], "2026-03-04"),
          [_order("ORD-1003-A", "ACC-2026-1003", "MRN-200003", "CR", "2026-03-04T10:00:00"),
           _order("ORD-1003-B", "ACC-2026-1003", "MRN-200004", "CR", "2026-03-04T10:15:00")],
          "ORD-1003-B", "accession", "two sites issued the same accession; only one order is this patient's"),
    _none("accession reused across two patients, study patient is a third person",
          _study(4, "MRN-200005", "ACC-2026-1003", ["CR"], "2026-03-04"),
          [_order("ORD-1003-A", "ACC-2026-1003", "MRN-200003", "CR", "2026-03-04T10:00:00"),
           _order("ORD-1003-B", "ACC-2026-1003", "MRN-200004", "CR", "2026-03-04T10:15:00")],
          "patient mismatch"),
    _none("accession matches an order of another patient",
          _study(5, "MRN-200006", "ACC-2026-1005", ["DX"], "2026-03-05"),
          [_order("ORD-1005", "ACC-2026-1005", "MRN-200007", "DX", "2026-03-05T11:00:00")],
          "patient mismatch", "technologist picked the wrong worklist entry"),
    _none("accession typo: letter O instead of digit 0",
          _study(6, "MRN-200008", "ACC-2026-1O06", ["CT"], "2026-03-06"),
          [_order("ORD-1006", "ACC-2026-1006", "MRN-200008", "CT", "2026-03-06T08:45:00")],
          "accession matches no order", "MRN, modality and date fit, but a typo must reach a human"),
    _none("accession known to no order",
          _study(7, "MRN-200009", "ACC-2026-1007", ["US"], "2026-03-06"),
          [],
          "accession matches no order"),
    _none("accession matches only a cancelled order",
          _study(8, "MRN-200010", "ACC-2026-1008", ["MR"], "2026-03-09"),
          [_order("ORD-1008", "ACC-2026-1008", "MRN-200010", "MR", "2026-03-09T07:30:00", status="cancelled")],
          "order cancelled"),
    _link("accession matches a cancelled order and its same-patient reissue",
          _study(9, "MRN-200011", "ACC-2026-1009", ["CT"], "2026-03-10"),
          [_order("ORD-1009-OLD", "ACC-2026-1009", "MRN-200011", "CT", "2026-03-09T09:00:00", status="cancelled"),
           _order("ORD-1009-NEW", "ACC-2026-1009", "MRN-200011", "CT", "2026-03-10T09:00:00")],
          "ORD-1009-NEW", "accession"),
    _none("accession matches two open orders of the same patient",
          _study(10, "MRN-200012", "ACC-2026-1010", ["MR"], "2026-03-10"),
          [_order("ORD-1010-A", "ACC-2026-1010", "MRN-200012", "MR", "2026-03-10T10:00:00"),
           _order("ORD-1010-B", "ACC-2026-1010", "MRN-200012", "MR", "2026-03-10T11:00:00")],
          "ambiguous", "duplicate order in the EHR"),
    _none("accession order already linked to another study",
          _study(11, "MRN-200013", "ACC-2026-1011", ["CT"], "2026-03-11"),
          [_order("ORD-1011", "ACC-2026-1011", "MRN-200013", "CT", "2026-03-11T13:00:00", status="completed",
                  linked_study_uid=_OTHER_STUDY)],
          "order already linked to another study", "a second study sent with the same accession"),
    _link("accession order already linked to this study (re-run is idempotent)",
          _study(12, "MRN-200014", "ACC-2026-1012", ["CT"], "2026-03-11"),
          [_order("ORD-1012", "ACC-2026-1012", "MRN-200014", "CT", "2026-03-11T15:00:00", status="completed",
                  linked_study_uid=f"{_UID_ROOT}.12")],
          "ORD-1012", "accession"),
    _link("accession order linked to this study, cancelled afterwards",
          _study(13, "MRN-200015", "ACC-2026-1013", ["US"], "2026-03-12"),
          [_order("ORD-1013", "ACC-2026-1013", "MRN-200015", "US", "2026-03-12T09:00:00", status="cancelled",
                  linked_study_uid=f"{_UID_ROOT}.13")],
          "ORD-1013", "accession", "an existing link is not undone by re-running the matcher"),
    _none("accession order without MRN",
          _study(14, "MRN-200016", "ACC-2026-1014", ["CR"], "2026-03-12"),
          [_order("ORD-1014", "ACC-2026-1014", None, "CR", "2026-03-12T10:00:00")],
          "patient mismatch", "the patient cannot be confirmed"),
    _link("accession in lower case",
          _study(15, "MRN-200017", "acc-2026-1015", ["MR"], "2026-03-13"),
          [_order("ORD-1015", "ACC-2026-1015", "MRN-200017", "MR", "2026-03-13T16:00:00")],
          "ORD-1015", "accession"),
    _link("PatientID padded with trailing spaces",
          _study(16, "MRN-200018  ", "ACC-2026-1016", ["CT"], "2026-03-13"),
          [_order("ORD-1016", "ACC-2026-1016", "MRN-200018", "CT", "2026-03-13T08:00:00")],
          "ORD-1016", "accession"),
    _link("PatientID in lower case",
          _study(17, "mrn-200019", "ACC-2026-1017", ["DX"], "2026-03-16"),
          [_order("ORD-1017", "ACC-2026-1017", "MRN-200019", "DX", "2026-03-16T10:30:00")],
          "ORD-1017", "accession"),
    _link("accession padded with a trailing space and NUL",
          _study(18, "MRN-200020", "ACC-2026-1018 \x00", ["US"], "2026-03-16"),
          [_order("ORD-1018", "ACC-2026-1018", "MRN-200020", "US", "2026-03-16T11:00:00")],
          "ORD-1018", "accession"),
    _link("accession match with another modality than ordered",
          _study(19, "MRN-200021", "ACC-2026-1019", ["DX"], "2026-03-17"),
          [_order("ORD-1019", "ACC-2026-1019", "MRN-200021", "CR", "2026-03-17T09:00:00")],
          "ORD-1019", "accession", "CR ordered, done on a DX room: the accession identifies the order"),
    _none("PatientID differs only by punctuation",
          _study(20, "MRN 200022", "ACC-2026-1020", ["CT"], "2026-03-17"),
          [_order("ORD-1020", "ACC-2026-1020", "MRN-200022", "CT", "2026-03-17T10:00:00")],
          "patient mismatch", "no fuzzy matching of identifiers"),
    _link("completed order not yet linked",
          _study(21, "MRN-200023", "ACC-2026-1021", ["MR"], "2026-03-18"),
          [_order("ORD-1021", "ACC-2026-1021", "MRN-200023", "MR", "2026-03-18T12:00:00", status="completed")],
          "ORD-1021", "accession", "the EHR marked it completed before the images arrived"),
    _link("order MRN in lower case",
          _study(22, "MRN-200024", "ACC-2026-1022", ["CT"], "2026-03-18"),
          [_order("ORD-1022", "ACC-2026-1022", "mrn-200024", "CT", "2026-03-18T13:00:00")],
          "ORD-1022", "accession"),
    # --- rule 3: MRN + modality + date (study without accession) -----------------------------------
    _link("no accession, exactly one order of the patient for that modality and day",
          _study(23, "MRN-200025", None, ["CR"], "2026-03-19"),
          [_order("ORD-1023", "ACC-2026-1023", "MRN-200025", "CR", "2026-03-19T08:30:00")],
          "ORD-1023", "mrn_modality_date"),
    _none("no accession, two orders of the patient for the same modality and day",
          _study(24, "MRN-200026", None, ["US"], "2026-03-19"),
          [_order("ORD-1024-A", "ACC-2026-1024", "MRN-200026", "US", "2026-03-19T09:00:00"),
           _order("ORD-1024-B", "ACC-2026-1124", "MRN-200026", "US", "2026-03-19T15:00:00")],
          "ambiguous", "abdominal and thyroid ultrasound the same day"),
    _link("no accession, same day CT and MR orders, MR study",
          _study(25, "MRN-200027", None, ["MR"], "2026-03-20"),
          [_order("ORD-1025-CT", "ACC-2026-1025", "MRN-200027", "CT", "2026-03-20T08:00:00"),
           _order("ORD-1025-MR", "ACC-2026-1125", "MRN-200027", "MR", "2026-03-20T11:00:00")],
          "ORD-1025-MR", "mrn_modality_date"),
    _link("no accession, study 2 days after the scheduled date",
          _study(26, "MRN-200028", None, ["CT"], "2026-03-25"),
          [_order("ORD-1026", "ACC-2026-1026", "MRN-200028", "CT", "2026-03-23T10:00:00")],
          "ORD-1026", "mrn_modality_date"),
    _link("no accession, study 3 days before the scheduled date (window edge)",
          _study(27, "MRN-200029", None, ["DX"], "2026-03-20"),
          [_order("ORD-1027", "ACC-2026-1027", "MRN-200029", "DX", "2026-03-23T10:00:00")],
          "ORD-1027", "mrn_modality_date"),
    _none("no accession, study 4 days after the scheduled date",
          _study(28, "MRN-200030", None, ["MR"], "2026-03-27"),
          [_order("ORD-1028", "ACC-2026-1028", "MRN-200030", "MR", "2026-03-23T10:00:00")],
          "no matching order"),
    _none("no accession, study 5 days after the scheduled date",
          _study(29, "MRN-200031", None, ["CT"], "2026-03-28"),
          [_order("ORD-1029", "ACC-2026-1029", "MRN-200031", "CT", "2026-03-23T10:00:00")],
          "no matching order"),
    _none("no accession, only order is for another modality",
          _study(30, "MRN-200032", None, ["US"], "2026-03-24"),
          [_order("ORD-1030", "ACC-2026-1030", "MRN-200032", "CT", "2026-03-24T10:00:00")],
          "no matching order"),
    _none("no accession, only matching order is cancelled",
          _study(31, "MRN-200033", None, ["CT"], "2026-03-24"),
          [_order("ORD-1031", "ACC-2026-1031", "MRN-200033", "CT", "2026-03-24T09:00:00", status="cancelled")],
          "no matching order"),
    _link("no accession, a cancelled and an open order the same day",
          _study(32, "MRN-200034", None, ["MR"], "2026-03-25"),
          [_order("ORD-1032-X", "ACC-2026-1032", "MRN-200034", "MR", "2026-03-25T09:00:00", status="cancelled"),
           _order("ORD-1032", "ACC-2026-1132", "MRN-200034", "MR", "2026-03-25T13:00:00")],
          "ORD-1032", "mrn_modality_date"),
    _none("no accession, only matching order already linked to another study",
          _study(33, "MRN-200035", None, ["CR"], "2026-03-25"),
          [_order("ORD-1033", "ACC-2026-1033", "MRN-200035", "CR", "2026-03-25T08:00:00", status="completed",
                  linked_study_uid=_OTHER_STUDY)],
          "no matching order", "a repeat exposure sent as a new study: not the same order"),
    _link("no accession, CT study with a structured report series",
          _study(34, "MRN-200036", None, ["CT", "SR"], "2026-03-26"),
          [_order("ORD-1034", "ACC-2026-1034", "MRN-200036", "CT", "2026-03-26T10:00:00")],
          "ORD-1034", "mrn_modality_date"),
    _none("no accession, PET/CT study with both a PT and a CT order",
          _study(35, "MRN-200037", None, ["CT", "PT"], "2026-03-26"),
          [_order("ORD-1035-PT", "ACC-2026-1035", "MRN-200037", "PT", "2026-03-26T08:00:00"),
           _order("ORD-1035-CT", "ACC-2026-1135", "MRN-200037", "CT", "2026-03-26T08:00:00")],
          "ambiguous"),
    _none("no accession and no study date",
          _study(36, "MRN-200038", None, ["CT"], None),
          [_order("ORD-1036", "ACC-2026-1036", "MRN-200038", "CT", "2026-03-27T10:00:00")],
          "no matching order"),
    _none("no accession, order has no scheduled start",
          _study(37, "MRN-200039", None, ["US"], "2026-03-27"),
          [_order("ORD-1037", "ACC-2026-1037", "MRN-200039", "US", None)],
          "no matching order"),
    _none("no accession, same modality and day but another patient",
          _study(38, "MRN-200040", None, ["CT"], "2026-03-30"),
          [_order("ORD-1038", "ACC-2026-1038", "MRN-200041", "CT", "2026-03-30T10:00:00")],
          "no matching order"),
    _link("no accession, timezone-aware schedule at the window edge",
          _study(39, "MRN-200042", None, ["MR"], "2026-03-27"),
          [_order("ORD-1039", "ACC-2026-1039", "MRN-200042", "MR", "2026-03-30T23:30:00-05:00")],
          "ORD-1039", "mrn_modality_date", "3 calendar days in the order's own offset (4 in UTC)"),
    _link("empty accession is no accession",
          _study(40, "MRN-200043", "", ["DX"], "2026-03-31"),
          [_order("ORD-1040", "ACC-2026-1040", "MRN-200043", "DX", "2026-03-31T09:00:00")],
          "ORD-1040", "mrn_modality_date"),
    _link("accession of only padding is no accession",
          _study(41, "MRN-200044", "        ", ["CR"], "2026-03-31"),
          [_order("ORD-1041", "ACC-2026-1041", "MRN-200044", "CR", "2026-03-31T10:00:00")],
          "ORD-1041", "mrn_modality_date"),
    _link("no accession, lower-case modality in the order",
          _study(42, "MRN-200045", None, ["US"], "2026-04-01"),
          [_order("ORD-1042", "ACC-2026-1042", "MRN-200045", "us", "2026-04-01T10:00:00")],
          "ORD-1042", "mrn_modality_date"),
    _none("no accession, no order at all",
          _study(43, "MRN-200046", None, ["CT"], "2026-04-01"),
          [],
          "no matching order"),
    # --- rule 1: explicit order id from the uploader ---------------------------------------------------
    _link("explicit order id",
          _study(44, "MRN-200047", None, ["CT"], "2026-04-02", explicit_order_id="ORD-1044"),
          [_order("ORD-1044", "ACC-2026-1044", "MRN-200047", "CT", "2026-04-02T10:00:00")],
          "ORD-1044", "explicit"),
    _link("explicit order id for an outside study with a foreign accession",
          _study(45, "MRN-200048", "EXT-778812", ["MR"], "2026-01-15", explicit_order_id="ORD-1045"),
          [_order("ORD-1045", "ACC-2026-1045", "MRN-200048", "MR", "2026-04-02T12:00:00")],
          "ORD-1045", "explicit", "CD import for a second-opinion order: date and accession do not matter"),
    _none("explicit order id of another patient",
          _study(46, "MRN-200049", None, ["CT"], "2026-04-03", explicit_order_id="ORD-1046"),
          [_order("ORD-1046", "ACC-2026-1046", "MRN-200050", "CT", "2026-04-03T10:00:00")],
          "patient mismatch"),
    _none("explicit order id unknown",
          _study(47, "MRN-200051", None, ["CT"], "2026-04-03", explicit_order_id="ORD-1047"),
          [_order("ORD-1047-B", "ACC-2026-1047", "MRN-200051", "CT", "2026-04-03T10:00:00")],
          "explicit order not found", "no fallback to the other rules when the uploader named an order"),
    _none("explicit order id of a cancelled order",
          _study(48, "MRN-200052", "ACC-2026-1048", ["US"], "2026-04-06", explicit_order_id="ORD-1048"),
          [_order("ORD-1048", "ACC-2026-1048", "MRN-200052", "US", "2026-04-06T10:00:00", status="cancelled"),
           _order("ORD-1048-B", "ACC-2026-1048", "MRN-200052", "US", "2026-04-06T11:00:00")],
          "order cancelled", "the open order with the same accession is not picked instead"),
    _none("explicit order id already linked to another study",
          _study(49, "MRN-200053", None, ["DX"], "2026-04-06", explicit_order_id="ORD-1049"),
          [_order("ORD-1049", "ACC-2026-1049", "MRN-200053", "DX", "2026-04-06T10:00:00", status="completed",
                  linked_study_uid=_OTHER_STUDY)],
          "order already linked to another study"),
    _none("explicit order id but no PatientID",
          _study(50, None, None, ["CT"], "2026-04-07", explicit_order_id="ORD-1050"),
          [_order("ORD-1050", "ACC-2026-1050", "MRN-200054", "CT", "2026-04-07T10:00:00")],
          "patient id missing"),
    _link("explicit order id wins over an accession match",
          _study(51, "MRN-200055", "ACC-2026-1151", ["MR"], "2026-04-07", explicit_order_id="ORD-1051"),
          [_order("ORD-1051", "ACC-2026-1051", "MRN-200055", "MR", "2026-04-07T09:00:00"),
           _order("ORD-1151", "ACC-2026-1151", "MRN-200055", "MR", "2026-04-07T09:00:00")],
          "ORD-1051", "explicit"),
    _link("explicit order id with padded, lower-case PatientID",
          _study(52, " mrn-200056 ", None, ["CR"], "2026-04-08", explicit_order_id="ORD-1052"),
          [_order("ORD-1052", "ACC-2026-1052", "MRN-200056", "CR", "2026-04-08T10:00:00")],
          "ORD-1052", "explicit"),
    # --- no PatientID --------------------------------------------------------------------------------
    _none("no PatientID, accession matches",
          _study(53, None, "ACC-2026-1053", ["CT"], "2026-04-08"),
          [_order("ORD-1053", "ACC-2026-1053", "MRN-200057", "CT", "2026-04-08T10:00:00")],
          "patient id missing"),
    _none("no PatientID and no accession",
          _study(54, None, None, ["US"], "2026-04-09"),
          [_order("ORD-1054", "ACC-2026-1054", "MRN-200058", "US", "2026-04-09T10:00:00")],
          "patient id missing"),
    _none("PatientID of only padding",
          _study(55, "      ", "ACC-2026-1055", ["MR"], "2026-04-09"),
          [_order("ORD-1055", "ACC-2026-1055", "MRN-200059", "MR", "2026-04-09T10:00:00")],
          "patient id missing"),
]


def corpus() -> list[MatchingCase]:
    """All cases, in a stable order (a fresh list: callers may filter or shuffle it)."""
    return list(_CASES)


def to_facts(case: MatchingCase) -> tuple[StudyFacts, list[OrderFacts]]:
    """The case as ``decide`` inputs (ISO strings parsed, modality list as a frozenset)."""
    s = case.study
    study = StudyFacts(
        study_instance_uid=s["study_instance_uid"],
        patient_id=s["patient_id"],
        accession_number=s["accession_number"],
        modalities=frozenset(s["modalities"]),
        study_date=date.fromisoformat(s["study_date"]) if s["study_date"] else None,
        explicit_order_id=s.get("explicit_order_id"),
    )
    orders = [
        OrderFacts(
            order_id=o["order_id"],
            accession_number=o["accession_number"],
            mrn=o["mrn"],
            modality=o["modality"],
            scheduled_start=datetime.fromisoformat(o["scheduled_start"]) if o["scheduled_start"] else None,
            status=o["status"],
            linked_study_uid=o.get("linked_study_uid"),
        )
        for o in case.orders
    ]
    return study, orders
