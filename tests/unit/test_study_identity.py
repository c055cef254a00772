"""One StudyInstanceUID, several Orthanc studies: which arrival may touch the recorded study (pure)."""

from __future__ import annotations

import pytest

from ehr_imaging.core.study_identity import (
    Arrival,
    StudyCopy,
    classify_arrival,
    conflicting_copies,
    orthanc_study_id,
    quarantine_uid,
    same_patient,
)

UID = "1.2.826.0.1.3680043.8.498.1"


def copy(patient: str | None) -> StudyCopy:
    return StudyCopy(orthanc_study_id(patient or "", UID), patient)


def test_orthanc_study_id_tells_patients_apart() -> None:
    # Checked against a real Orthanc in tests/integration/test_upload.py; here: its shape and what it hashes.
    first = orthanc_study_id("MRN-1", UID)
    assert len(first) == 44 and first.count("-") == 4 and first == orthanc_study_id("MRN-1", UID)
    assert first != orthanc_study_id("mrn-1", UID) and first != orthanc_study_id("MRN-1", UID + "1")


@pytest.mark.parametrize(("first", "second", "same"), [
    ("MRN-1", "MRN-1", True), ("mrn-1 ", "MRN-1", True), ("MRN-1", "MRN-2", False), ("MRN-1", None, False),
    (None, None, True), ("", None, True), ("MRN-1", "MRN-10", False),
])
def test_same_patient_forgives_padding_and_case_only(first: str | None, second: str | None, same: bool) -> None:
    assert same_patient(first, second) is same


def test_the_recorded_study_itself_is_the_same_arrival() -> None:
    assert classify_arrival(copy("A"), copy("A"), recorded_still_stored=True, coerce=False) is Arrival.SAME


@pytest.mark.parametrize("stored", [True, False])
@pytest.mark.parametrize("coerce", [True, False])
def test_another_patient_under_the_same_uid_is_always_a_collision(stored: bool, coerce: bool) -> None:
    # Even when the recorded Orthanc study is gone: the record's patient never changes silently.
    assert classify_arrival(copy("VICTIM"), copy("ATTACKER-1"), recorded_still_stored=stored,
                            coerce=coerce) is Arrival.COLLISION
    assert classify_arrival(copy("VICTIM"), copy(None), recorded_still_stored=stored,
                            coerce=coerce) is Arrival.COLLISION


def test_the_same_patient_spelled_otherwise_is_folded_in_by_coercion_only() -> None:
    recorded, arriving = copy("mrn-1"), copy("MRN-1")
    assert classify_arrival(recorded, arriving, recorded_still_stored=True, coerce=True) is Arrival.MERGE
    assert classify_arrival(recorded, arriving, recorded_still_stored=True, coerce=False) is Arrival.COLLISION
    # The recorded copy is gone (moved by a coercion, or deleted): the same patient's copy takes its place.
    assert classify_arrival(recorded, arriving, recorded_still_stored=False, coerce=False) is Arrival.MOVED


def test_conflicting_copies_are_those_of_other_patients() -> None:
    copies = [copy("A"), copy("a "), copy("B")]
    assert conflicting_copies(copies, "A") == [copies[2]]


def test_a_patient_id_a_person_accepted_is_not_a_collision() -> None:
    # A radiologist linked a study keyed "MRN-WRONG" to MRN-RIGHT's order (force); coercion rewrote it. The
    # modality's next batch still says MRN-WRONG: the same study, folded in by coercion, never quarantined.
    recorded, late = copy("MRN-RIGHT"), copy("MRN-WRONG")
    assert classify_arrival(recorded, late, recorded_still_stored=True, coerce=True,
                            accepted_patient_id="MRN-WRONG") is Arrival.MERGE
    assert classify_arrival(recorded, copy("MRN-OTHER"), recorded_still_stored=True, coerce=True,
                            accepted_patient_id="MRN-WRONG") is Arrival.COLLISION


def test_a_quarantine_uid_is_a_valid_uid_of_its_own_and_the_same_for_every_batch() -> None:
    arrived = orthanc_study_id("ATTACKER-1", UID)
    moved = quarantine_uid(arrived)
    assert moved == quarantine_uid(arrived) and moved != quarantine_uid(orthanc_study_id("OTHER", UID))
    assert moved.startswith("2.25.") and len(moved) <= 64 and moved.replace(".", "").isdigit()
    assert not moved[len("2.25."):].startswith("0")  # no leading zero in a UID component
