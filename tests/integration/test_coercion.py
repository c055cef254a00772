"""Tag coercion (CoerceTags on): a linked study's PatientID, PatientName and AccessionNumber follow its order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.test_matching import order, put_order, query, wait_for_ingest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def coercing_client() -> Iterator[Client]:
    with running_stack("coercion", extra_settings={"Timezone": "America/Chicago", "CoerceTags": True},
                       orthanc_overrides={"OverwriteInstances": True}) as stack:
        yield Client(stack)


def stored_tags(client: Client, study_uid: str) -> list[tuple[str, str, str]]:
    """(PatientID, PatientName, AccessionNumber) of every stored instance of the study."""
    auth = client.stack.admin_auth
    found = client.request("POST", "/tools/lookup", auth=auth, data=study_uid).json()
    studies = [f["ID"] for f in found if f["Type"] == "Study"]
    tags = []
    for study in studies:
        for instance in client.get(f"/studies/{study}/instances", auth=auth).json():
            t = client.get(f"/instances/{instance['ID']}/simplified-tags", auth=auth).json()
            tags.append((t.get("PatientID"), t.get("PatientName"), t.get("AccessionNumber")))
    return tags


def test_linked_study_and_a_late_batch_get_the_orders_identity(coercing_client: Client, tmp_path: Path) -> None:
    client = coercing_client
    order_id = put_order(client, mrn="MRN-COERCE", accession_number="ACC-COERCE", patient_family_name="Curie",
                         patient_given_name="Marie")
    uid, files = make_study(tmp_path / "a", patient_id="MRN-COERCE", accession="acc-coerce", study_date="20261120")
    send(client.stack, files)  # name "Test^Patient" and a lower-case accession, as a modality keyed them
    wait_for_ingest(client, uid, 2)
    assert order(client, order_id)["study_instance_uid"] == uid

    def coerced(expected: int) -> bool:
        tags = stored_tags(client, uid)
        return len(tags) == expected and set(tags) == {("MRN-COERCE", "Curie^Marie", "ACC-COERCE")}

    from ehr_stack.procs import wait_until

    wait_until(lambda: coerced(2), 30, "the study's tags to be coerced")
    _, late = make_study(tmp_path / "b", patient_id="MRN-COERCE", accession="acc-coerce", study_date="20261120",
                         study_uid=uid, instances=2)
    send(client.stack, late)
    wait_until(lambda: coerced(4), 40, "the late batch to be coerced")

    linked = order(client, order_id)
    assert linked["study_instance_uid"] == uid
    assert linked["number_of_images"] == 4
    rows = query(client, "SELECT tags_modified, original_patient_name, modified_patient_name,"
                 " original_accession_number, modified_accession_number FROM ehr_imaging.dicom_upload_logs"
                 " WHERE study_instance_uid = :u ORDER BY uploaded_at", u=uid)
    assert rows[0] == (True, "Test^Patient", "Curie^Marie", "acc-coerce", "ACC-COERCE")
    audit = query(client, "SELECT action FROM ehr_imaging.link_audit WHERE study_instance_uid = :u ORDER BY id",
                  u=uid)
    assert audit[0] == ("auto-link",) and ("coerce",) in audit


def test_a_forced_manual_link_rewrites_the_patient_id(coercing_client: Client, tmp_path: Path) -> None:
    """A technician keyed the wrong MRN; a radiologist links the study anyway: the PatientID is corrected."""
    from ehr_stack.procs import wait_until

    client = coercing_client
    order_id = put_order(client, mrn="MRN-RIGHT", accession_number="ACC-RIGHT", patient_family_name="Right",
                         patient_given_name="Person")
    uid, files = make_study(tmp_path, patient_id="MRN-WRONG", accession="ACC-RIGHT", study_date="20261120")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    assert order(client, order_id)["study_instance_uid"] is None  # patient mismatch: never automatic
    answer = client.request("POST", f"/api/v1/dicom/studies/{uid}/link", "radiologist",
                            json={"order_id": order_id, "force": True})
    assert answer.status_code == 200
    wait_until(lambda: set(stored_tags(client, uid)) == {("MRN-RIGHT", "Right^Person", "ACC-RIGHT")}
               and len(stored_tags(client, uid)) == 2, 30, "the PatientID to be coerced")
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=uid).json()
    assert len([f for f in found if f["Type"] == "Study"]) == 1  # the originals are gone
    assert order(client, order_id)["orthanc_study_id"] == found[0]["ID"]
