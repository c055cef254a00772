"""``core.access``: which paths the HTTP filter lets through to our routes; everything else is admin-only."""

from __future__ import annotations

import pytest

from ehr_imaging.core.access import API_PREFIX, Area, classify, is_canonical


@pytest.mark.parametrize(
    "uri",
    [
        "/api/v1/dicom",
        "/api/v1/dicom/",
        "/api/v1/dicom/health",
        "/api/v1/dicom/orders/ORD-1",
        "/api/v1/dicom/studies/1.2.840.113619.2.55.3",  # dots inside a segment are fine
        "/api/v1/dicom/orders?status=scheduled&x=../..",  # the query string is not part of the path
        "/api/v1/dicom/orders/...",
        "/api/v1/dicom/admin/login?next=//evil.example",
        "/fhir/ImagingStudy",  # the FHIR routes (api/fhir.py) are ours too
        "/fhir/ImagingStudy/1.2.840.113619.2.55.3",
        "/fhir/ServiceRequest/ORD-1",
        "/fhir",
    ],
)
def test_plugin_api_paths(uri: str) -> None:
    assert classify(uri) is Area.PLUGIN_API


@pytest.mark.parametrize(
    "uri",
    [
        # Orthanc's own REST API, Explorer, DICOMweb: administrators only.
        "/",
        "",
        "/instances",
        "/studies/abc/archive",
        "/app/explorer.html",
        "/tools/execute-script",
        "/dicom-web//studies",
        "/dicom-web/../tools/execute-script",
        "/wado/x",
        "/ehr-imaging/dicom-web/../../instances",
        # Look-alikes of our prefix.
        "/api/v1/dicomx",
        "/api/v1/dicom-web/studies",
        "/api/v1/DICOM/health",
        "/api/v2/dicom/health",
        "api/v1/dicom/health",
        "/x/api/v1/dicom/health",
        "/fhirx/ImagingStudy",
        "/FHIR/ImagingStudy",
        "/fhir/../instances",
        "/fhir//ImagingStudy",
        # Non-canonical forms that a normalising server might resolve elsewhere.
        "/api/v1/dicom/../../../instances",
        "/api/v1/dicom/./health",
        "/api/v1/dicom/..",
        "/api/v1/dicom/.",
        "/api/v1/dicom//health",
        "//api/v1/dicom/health",
        "/api/v1/dicom/..\\..\\instances",
        "/api/v1/dicom\\..\\..\\instances",
        "/api/v1/dicom/health\x00",
        "/api/v1/dicom/\x00/../../tools/execute-script",
        "/api/v1/./dicom/health",
        "/api/v1/dicom/x/../../../../tools/execute-script?y=1",
    ],
)
def test_admin_only_paths(uri: str) -> None:
    assert classify(uri) is Area.ADMIN_ONLY


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/", True),
        ("/a/b", True),
        ("/a/b/", True),
        ("/a/.b/c.", True),
        ("/a/.../b", True),
        ("", False),
        ("a/b", False),
        ("/a/./b", False),
        ("/a/../b", False),
        ("/a/..", False),
        ("/a/.", False),
        ("/..", False),
        ("/a//b", False),
        ("//a", False),
        ("/a\\b", False),
        ("/a\x00b", False),
    ],
)
def test_is_canonical(path: str, canonical: bool) -> None:
    assert is_canonical(path) is canonical


def test_prefix_shape() -> None:
    # classify relies on the trailing slash to tell "/api/v1/dicom/..." from "/api/v1/dicomx".
    assert API_PREFIX.startswith("/") and API_PREFIX.endswith("/")


@pytest.mark.parametrize("uri", ["/dicom-web/studies", "/dicom-web/studies/1.2/series", "/wado", "/wado?x=1"])
def test_dicomweb_paths_are_for_viewers_and_admins(uri: str) -> None:
    assert classify(uri) is Area.DICOMWEB


def test_the_scoped_qido_root() -> None:
    assert classify("/ehr-imaging/dicom-web/studies") is Area.SCOPED_QIDO
