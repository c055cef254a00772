"""An administrator in Orthanc Explorer (headless Chromium) sees a study's EHR order or why it has none."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, Client
from tests.dicom_factory import make_study, send
from tests.integration.test_matching import accession, mrn, put_order, wait_for_ingest

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent


def study_page_text(client: Client, study_uid: str, screenshot: str) -> str:
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=study_uid).json()
    ARTIFACTS.mkdir(exist_ok=True)
    user, password = client.stack.admin_auth
    result = subprocess.run(
        ["node", str(HERE / "explorer_study.js"), client.base, user, password, found[0]["ID"],
         str(ARTIFACTS / screenshot)],
        capture_output=True, text=True, timeout=120, cwd=HERE,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text: str = json.loads(result.stdout.strip().splitlines()[-1])["text"]
    return " ".join(text.split())


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
