"""An administrator in Orthanc Explorer (headless Chromium) sees a study's EHR order or why it has none."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import ARTIFACTS, Client
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, mrn, put_order, wait_for_ingest

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent


def study_page(client: Client, study_uid: str, screenshot: str, *mode: str) -> dict[str, str]:
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=study_uid).json()
    ARTIFACTS.mkdir(exist_ok=True)
    user, password = client.stack.admin_auth
    result = subprocess.run(
        ["node", str(HERE / "explorer_study.js"), client.base, user, password, found[0]["ID"],
         str(ARTIFACTS / screenshot), *mode],
        capture_output=True, text=True, timeout=120, cwd=HERE,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    page["text"] = " ".join(page["text"].split())
    return page


def study_page_text(client: Client, study_uid: str, screenshot: str) -> str:
    return study_page(client, study_uid, screenshot)["text"]


def test_explorer_shows_the_linked_order_and_the_unmatched_reason(client: Client, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc, description="CT thorax")
    linked_uid, files = make_study(tmp_path / "a", patient_id=patient, accession=acc, study_date="20261120")
    lonely_uid, more = make_study(tmp_path / "b", patient_id=mrn(), accession=accession(), study_date="20261120")
    send(client.stack, files + more)
    wait_for_ingest(client, linked_uid, 2)
    wait_for_ingest(client, lonely_uid, 2)

    linked = study_page_text(client, linked_uid, "explorer-linked-study.png")
    assert f"Linked to order {order_id} (accession)" in linked
    assert acc in linked and "CT thorax" in linked
    unmatched = study_page_text(client, lonely_uid, "explorer-unmatched-study.png")
    assert "unmatched: accession matches no order" in unmatched


def test_open_in_viewer_opens_ohif_with_a_token_for_that_study(client: Client, tmp_path: Path) -> None:
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=accession(), study_date="20261120")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    page = study_page(client, uid, "explorer-open-in-viewer.png", "open-viewer")
    assert "Open in viewer" in page["text"]
    opened = urlsplit(page["viewerUrl"])
    assert opened.path == "/ohif/viewer"
    params = parse_qs(opened.query)
    assert params["StudyInstanceUIDs"] == [uid]
    token = params["token"][0]
    # The token opens exactly that study on DICOMweb.
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{client.base}/dicom-web/studies/{uid}/metadata", headers=headers,
                        timeout=30).status_code == 200
    assert requests.get(f"{client.base}/system", headers=headers, timeout=30).status_code == 403
