"""The offline sync protocol as a client speaks it: declare a file, send its bytes, acknowledge."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import requests

from tests.conftest import Client

OFFLINE = "/api/v1/dicom/offline"


def declaration(path: Path, study_uid: str, **changes: Any) -> dict[str, Any]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    data = path.read_bytes()
    return {"sop_instance_uid": str(ds.SOPInstanceUID), "series_instance_uid": str(ds.SeriesInstanceUID),
            "study_instance_uid": study_uid, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "file_name": path.name, **changes}


def declare(api: Client, body: dict[str, Any], role: str = "technician") -> requests.Response:
    return api.request("POST", f"{OFFLINE}/metadata", role, json=body)


def binary(api: Client, upload_id: str, data: bytes) -> requests.Response:
    return api.request("POST", f"{OFFLINE}/binary", "technician", data={"upload_id": upload_id},
                       files={"file": ("x.dcm", data, "application/dicom")})


def ack(api: Client, upload_id: str) -> requests.Response:
    return api.request("POST", f"{OFFLINE}/ack", "technician", json={"upload_id": upload_id})


def in_orthanc(client: Client, sop_uid: str) -> bool:
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=sop_uid).json()
    return bool(found)
