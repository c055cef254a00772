"""Helpers shared by the viewer-access tests: two stored studies of different patients, viewer tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import requests

from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, mrn, put_order

FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@dataclass(frozen=True)
class StoredStudy:
    uid: str
    patient_id: str
    series: str
    instances: tuple[str, ...]
    order_id: str


def store_study(client: Client, directory: Path, instances: int = 2) -> StoredStudy:
    """A study of its own patient, uploaded with its order (so it is linked at once)."""
    patient = mrn()
    order_id = put_order(client, mrn=patient, accession_number=accession())
    uid, files = make_study(directory, patient_id=patient, accession=None, study_date="20261120",
                            instances=instances)
    sops = []
    for path in files:
        answer = client.request("POST", "/api/v1/dicom/upload", "technician", data=path.read_bytes(),
                                headers={"Content-Type": "application/dicom", "X-Order-Id": order_id})
        assert answer.status_code == 200, answer.text
        sops.append(answer.json()["sop_instance_uid"])
    series = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    return StoredStudy(uid, patient, series, tuple(sops), order_id)


def viewer_token(client: Client, role: str = "doctor", subject: str = "tester", **body: Any) -> dict[str, Any]:
    answer = client.request("POST", "/api/v1/dicom/viewer-token", role, json=body,
                            headers={"Authorization": f"Bearer {client.token(role, subject)}"})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def as_viewer(client: Client, token: str, path: str, method: str = "GET", **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return requests.request(method, client.base + path, headers=headers, timeout=30, **kwargs)
