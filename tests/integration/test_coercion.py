"""Tag coercion (CoerceTags on): a linked study's PatientID, PatientName and AccessionNumber follow its order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import order, put_order, query, wait_for_ingest
from tests.waiting import eventually

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
        # A coercion or a quarantine move deletes originals one by one while this reads: a study or instance
        # gone meanwhile is skipped (the callers poll until the tags settle).
        listed = client.get(f"/studies/{study}/instances", auth=auth)
        for instance in listed.json() if listed.status_code == 200 else []:
            answer = client.get(f"/instances/{instance['ID']}/simplified-tags", auth=auth)
            if answer.status_code == 200:
                t = answer.json()
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

    eventually(lambda: coerced(2), timeout=30, what="the study's tags to be coerced")
    _, late = make_study(tmp_path / "b", patient_id="MRN-COERCE", accession="acc-coerce", study_date="20261120",
                         study_uid=uid, instances=2)
    send(client.stack, late)
    eventually(lambda: coerced(4), timeout=40, what="the late batch to be coerced")

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
    eventually(lambda: set(stored_tags(client, uid)) == {("MRN-RIGHT", "Right^Person", "ACC-RIGHT")}
               and len(stored_tags(client, uid)) == 2, timeout=30, what="the PatientID to be coerced")
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=uid).json()
    assert len([f for f in found if f["Type"] == "Study"]) == 1  # the originals are gone
    assert order(client, order_id)["orthanc_study_id"] == found[0]["ID"]


def test_instances_arriving_while_a_study_is_moved_are_never_lost(coercing_client: Client, tmp_path: Path) -> None:
    """PatientID differs from the order's by case only: the study is moved instance by instance to the order's
    PatientID. 40 more instances arrive (storescu told Success for each) while that runs: all 240 remain."""
    import threading

    client = coercing_client
    order_id = put_order(client, mrn="MRN-LATE-CASE", accession_number="ACC-LATE-CASE")
    uid, first = make_study(tmp_path / "first", patient_id="mrn-late-case", accession="ACC-LATE-CASE",
                            study_date="20261120", instances=200)
    _, late = make_study(tmp_path / "late", patient_id="mrn-late-case", accession="ACC-LATE-CASE",
                         study_date="20261120", study_uid=uid, instances=40)
    send(client.stack, first)
    eventually(lambda: order(client, order_id)["study_instance_uid"] == uid, timeout=60, what="the study to be linked")
    # The coercion starts right after the link is recorded: send the late batch while it runs.
    sender = threading.Thread(target=send, args=(client.stack, late))
    sender.start()
    sender.join(120)

    def settled() -> bool:
        tags = stored_tags(client, uid)
        return len(tags) == 240 and {t[0] for t in tags} == {"MRN-LATE-CASE"}

    eventually(settled, timeout=120, what="all 240 instances under the order's PatientID")
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=uid).json()
    assert len([f for f in found if f["Type"] == "Study"]) == 1
    eventually(lambda: order(client, order_id)["number_of_images"] == 240, timeout=60, what="the order's image count")
    assert query(client, "SELECT count(*) FROM ehr_imaging.study_uid_collisions WHERE study_instance_uid = :u",
                 u=uid) == [(0,)]


def test_a_collision_is_never_coerced_into_the_recorded_patient(coercing_client: Client, tmp_path: Path) -> None:

    client = coercing_client
    order_id = put_order(client, mrn="MRN-VICTIM-C", accession_number="ACC-VICTIM-C", patient_family_name="Victim",
                         patient_given_name="Vera")
    uid, files = make_study(tmp_path / "victim", patient_id="MRN-VICTIM-C", accession="ACC-VICTIM-C",
                            study_date="20261120", instances=3)
    send(client.stack, files)
    eventually(lambda: order(client, order_id)["number_of_images"] == 3, timeout=60, what="the victim's study linked")
    eventually(lambda: {t[1] for t in stored_tags(client, uid)} == {"Victim^Vera"},
               timeout=30, what="the victim's study coerced")
    victim_study = order(client, order_id)["orthanc_study_id"]
    _, intruder = make_study(tmp_path / "intruder", patient_id="ATTACKER-1", accession="ACC-VICTIM-C",
                             study_date="20261120", study_uid=uid, instances=1)
    send(client.stack, intruder)
    eventually(lambda: query(client, "SELECT number_of_instances FROM ehr_imaging.study_uid_collisions"
                             " WHERE study_instance_uid = :u", u=uid) == [(1,)],
               timeout=30, what="the intruder quarantined")
    moved_uid = query(client, "SELECT quarantine_study_instance_uid FROM ehr_imaging.study_uid_collisions"
                      " WHERE study_instance_uid = :u", u=uid)[0][0]
    eventually(lambda: len(stored_tags(client, uid)) == 3,
               timeout=30, what="the intruder moved out of the victim's UID")
    assert {t[0] for t in stored_tags(client, uid)} == {"MRN-VICTIM-C"}
    assert stored_tags(client, moved_uid) == [("ATTACKER-1", "Test^Patient", "ACC-VICTIM-C")]  # not coerced
    linked = order(client, order_id)
    assert (linked["orthanc_study_id"], linked["number_of_images"]) == (victim_study, 3)


def test_a_linked_orders_mrn_cannot_change(coercing_client: Client, tmp_path: Path) -> None:
    """Another MRN on a linked order would make coercion rewrite the study to that patient: refused (409)."""
    from tests.integration.helpers import order_fields

    client = coercing_client
    order_id = put_order(client, mrn="MRN-KEEP", accession_number="ACC-KEEP")
    uid, files = make_study(tmp_path, patient_id="MRN-KEEP", accession="ACC-KEEP", study_date="20261120")
    send(client.stack, files)
    eventually(lambda: order(client, order_id)["study_instance_uid"] == uid, timeout=60, what="the study to be linked")
    moved = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service",
                           json=order_fields(mrn="MRN-SOMEONE-ELSE", accession_number="ACC-KEEP"))
    assert moved.status_code == 409 and "MRN" in moved.json()["detail"]
    same = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service",
                          json=order_fields(mrn="mrn-keep", accession_number="ACC-KEEP", description="corrected"))
    assert same.status_code == 200, same.text  # the same patient (padding and case) may be corrected
    _, more = make_study(tmp_path / "more", patient_id="MRN-KEEP", accession="ACC-KEEP", study_date="20261120",
                         study_uid=uid, instances=1)
    send(client.stack, more)
    eventually(lambda: order(client, order_id)["number_of_images"] == 3, timeout=60, what="the next batch recorded")
    assert {t[0] for t in stored_tags(client, uid)} <= {"MRN-KEEP", "mrn-keep"}


def test_two_coercions_of_one_study_never_run_at_once(coercing_client: Client) -> None:
    """The coercion lock is PostgreSQL's, so it holds across nodes: a second holder waits for the first."""
    import threading
    import time

    from ehr_imaging.store import db, links

    engine = db.create_db_engine(coercing_client.stack.postgres.url, pool_size=2, connect_timeout=5,
                                 schema="ehr_imaging")
    uid = "1.2.826.0.1.3680043.8.498.777"
    entered: list[float] = []
    try:
        def second() -> None:
            with links.coercion(engine, uid):
                entered.append(time.monotonic())

        with links.coercion(engine, uid):
            waiter = threading.Thread(target=second)
            waiter.start()
            eventually(lambda: query(coercing_client, "SELECT count(*) FROM pg_locks"
                                     " WHERE locktype = 'advisory' AND NOT granted")[0][0] == 1,
                       timeout=10, what="the second coercion to wait for the study's lock")
            assert entered == []  # still waiting while the first coercion holds the study
            released = time.monotonic()
        waiter.join(10)
        assert entered and entered[0] >= released
    finally:
        engine.dispose()
