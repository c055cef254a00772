"""What the stack tells people who should not learn it (issue 9, info findings), on the real stack: the viewer's
error details, versions to anonymous callers. (The offline 409 is in test_upload_offline.py.)"""

from __future__ import annotations

import json
import re

import pytest
import requests

from tests.conftest import Client

pytestmark = pytest.mark.integration


def test_the_served_viewer_config_hides_error_details(client: Client) -> None:
    answer = requests.get(client.base + "/ohif/app-config.js", timeout=30)
    assert answer.status_code == 200, answer.text[:200]
    found = re.findall(r'"showErrorDetails":\s*("[^"]*"|null)', answer.text)
    assert [json.loads(value) for value in found] == ["dev"]


@pytest.mark.parametrize("port", ["orthanc", "api"])
def test_versions_only_to_administrators(client: Client, api: Client, port: str) -> None:
    base = (client if port == "orthanc" else api).base
    anonymous = requests.get(base + "/api/v1/dicom/health", timeout=30).json()
    admin = requests.get(base + "/api/v1/dicom/health", auth=client.stack.admin_auth, timeout=30).json()
    assert anonymous["plugin_version"] is None and anonymous["orthanc_version"] is None
    assert admin["plugin_version"] and admin["orthanc_version"] == "1.10.1"  # basic credentials count as admin
    assert requests.get(base + "/api/v1/dicom/openapi.json", timeout=30).status_code == 401
