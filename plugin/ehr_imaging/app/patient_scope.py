"""Whether a patient-scoped caller may see the record a request names (core/patient_scope.py says who is
scoped; the route table says which record each route names).

A record outside the scope is answered as if it did not exist (NotFound, the same detail as for an unknown
one) when the caller named it by an identifier they could only have guessed or been given (a study, an
instance, an order, an upload): a different answer would confirm that another patient's record exists. A
request naming another patient outright (their patient id) is Forbidden: the caller knows whom they asked
for, and the answer says nothing about that patient's records.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from ..core import errors
from ..core.patient_scope import allows
from ..services import Services
from ..store import orders as order_store
from ..store import studies as study_store

OUTSIDE = "outside this token's patient scope"


def check_patient(patients: frozenset[str], patient_id: str) -> None:
    if not allows(patients, [patient_id]):
        raise errors.Forbidden(f"patient {patient_id}: {OUTSIDE}")


def check_studies(services: Services, patients: frozenset[str], study_uids: Iterable[str]) -> None:
    uids = list(study_uids)
    inside = study_store.of_patients(services.engine, uids, patients)
    outside = [uid for uid in uids if uid not in inside]
    if outside:
        raise errors.NotFound(f"study {outside[0]} not found")


def check_order(services: Services, patients: frozenset[str], order_id: str) -> None:
    order = order_store.get(services.engine, order_id)
    if order is None or not allows(patients, [order.patient_id]):
        raise errors.NotFound(f"order {order_id} not found")


def check_instance(services: Services, patients: frozenset[str], sop_instance_uid: str) -> None:
    """The instance's Orthanc study must be a recorded study of the caller's patients."""
    missing = errors.NotFound(f"instance {sop_instance_uid} not found")
    instance = services.pacs.lookup(sop_instance_uid, "Instance") if sop_instance_uid else None
    if instance is None:
        raise missing
    try:
        parent = str(services.pacs.get_json(f"/instances/{instance}/study").get("ID", ""))
    except errors.NotFound:
        raise missing from None
    uid = study_store.uid_of_orthanc_study(services.engine, parent)
    if uid is None or not study_store.of_patients(services.engine, [uid], patients):
        raise missing


def check_upload(services: Services, patients: frozenset[str], upload_id: str) -> None:
    try:
        wanted = uuid.UUID(upload_id)  # parsed as the route parses it, so both name the same row
    except ValueError:
        raise errors.NotFound(f"upload {upload_id} not found") from None  # fail closed
    total, _ = study_store.uploads(services.engine, study_store.UploadFilter(upload_id=wanted, patient_scope=patients,
                                                                             limit=1))
    if not total:
        raise errors.NotFound(f"upload {upload_id} not found")
