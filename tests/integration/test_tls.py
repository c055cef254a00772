"""``EHR_TLS=1``: a stack of its own serving Orthanc's port and the API port over HTTPS only, plus the plain
port that only redirects. Every client here verifies the server against the stack's generated CA
(``TLS_CA_FILE``), never with ``verify=False``.

The seed flow on both HTTPS ports (an order pushed, a study uploaded to it, queried, a viewer URL minted,
DICOMweb read with the viewer token, the study downloaded), plain HTTP to either HTTPS port answered with
nothing, and the redirect port answering every method (with a body, with a valid token) only ``308``.
"""

from __future__ import annotations

import io
import socket
import ssl
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509

from ehr_stack.procs import free_port
from ehr_stack.stack import Stack
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, mrn, order, put_order, wait_for_ingest
from tests.integration.raw_http import Endpoint

pytestmark = pytest.mark.integration
API = "/api/v1/dicom"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack("tls", tls=True, redirect_port=free_port()) as started:
        yield started


def _client(stack: Stack, base: str) -> Client:
    client = Client(stack, base)
    client.session.verify = stack.verify  # the stack's CA ...
    client.session.trust_env = False  # ... not REQUESTS_CA_BUNDLE, which requests would prefer
    return client


@pytest.fixture(scope="module")
def client(stack: Stack) -> Client:
    return _client(stack, stack.url)


@pytest.fixture(scope="module")
def api(stack: Stack) -> Client:
    return _client(stack, stack.api_url)


def _env(stack: Stack) -> dict[str, str]:
    path = stack.config.var_dir / "stack.env"
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def test_stack_env_carries_https_urls_and_the_ca(stack: Stack) -> None:
    env = _env(stack)
    assert env["ORTHANC_URL"] == stack.url and env["ORTHANC_URL"].startswith("https://127.0.0.1:")
    assert env["API_BASE_URL"] == f"{stack.api_url}{API}" and env["API_BASE_URL"].startswith("https://")
    assert env["EXPLORER_URL"].startswith("https://")
    assert env["HTTP_REDIRECT_URL"] == f"http://127.0.0.1:{stack.config.redirect_port}"
    ca = x509.load_pem_x509_certificate(Path(env["TLS_CA_FILE"]).read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (Path(env["TLS_CA_FILE"]).parent / "server.pem").stat().st_mode & 0o777 == 0o600  # the key is private


@pytest.mark.parametrize("port", ["orthanc", "api"])
def test_both_ports_present_the_certificate_the_ca_signed(stack: Stack, port: str) -> None:
    url = urlsplit(stack.url if port == "orthanc" else stack.api_url)
    context = ssl.create_default_context(cafile=str(stack.verify))
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # hostname checked too
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(requests.exceptions.SSLError):  # a client without the CA refuses the server
        requests.get(f"{url.scheme}://{url.netloc}{API}/health", verify=True, timeout=10)


@pytest.mark.parametrize("port", ["orthanc", "api"])
def test_plain_http_to_an_https_port_gets_no_answer(stack: Stack, port: str) -> None:
    url = urlsplit(stack.url if port == "orthanc" else stack.api_url)
    assert url.port is not None
    with Endpoint(url.port).connect(timeout=10) as sock:
        sock.sendall(b"GET /api/v1/dicom/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"healthy" not in received and not received.startswith(b"HTTP/1.1 200"), received[:200]


@pytest.mark.parametrize("port", ["orthanc", "api"])
def test_the_seed_flow_over_https(stack: Stack, client: Client, api: Client, tmp_path: Path, port: str) -> None:
    """Order -> upload -> study query -> viewer URL -> DICOMweb with the viewer token -> download."""
    http = client if port == "orthanc" else api
    patient = mrn()
    order_id = put_order(http, mrn=patient, accession_number=accession())
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=2)
    for path in files:
        if port == "api":  # the EHR's form upload, which only the API port takes whole
            answer = http.request("POST", f"{API}/upload", "technician", data={"order_id": order_id},
                                  files={"file": (path.name, path.read_bytes(), "application/dicom")})
        else:
            answer = http.request("POST", f"{API}/upload", "technician", data=path.read_bytes(),
                                  headers={"Content-Type": "application/dicom", "X-Order-Id": order_id})
        assert answer.status_code == 200, answer.text
        assert answer.json()["order_id"] == order_id
    wait_for_ingest(http, uid, 2)
    assert order(http, order_id)["study_instance_uid"] == uid
    study = http.get(f"{API}/studies/{uid}", "doctor")
    assert study.status_code == 200
    assert (study.json()["NumberOfInstances"], study.json()["order_id"]) == (2, order_id)
    assert [s["StudyInstanceUID"] for s in http.get(f"{API}/studies/order/{order_id}", "nurse").json()] == [uid]

    viewer = http.get(f"{API}/viewer-url/{uid}", "doctor")
    assert viewer.status_code == 200
    url, token = viewer.json()["url"], viewer.json()["token"]
    assert url.startswith(f"{stack.url}/ohif/viewer?StudyInstanceUIDs={uid}")  # the viewer's origin is https
    bearer = {"Authorization": f"Bearer {token}"}
    metadata = client.get(f"/dicom-web/studies/{uid}/metadata", headers=bearer)  # DICOMweb: Orthanc's port
    assert metadata.status_code == 200
    assert len(metadata.json()) == 2
    qido = client.get("/ehr-imaging/dicom-web/studies", headers=bearer)
    assert qido.status_code == 200
    assert [s["0020000D"]["Value"] for s in qido.json()] == [[uid]]
    assert client.get(f"/dicom-web/studies/{uid}/metadata").status_code == 403  # no token: the filter refuses
    page = client.get(f"/ohif/viewer?StudyInstanceUIDs={uid}&token={token}")
    assert page.status_code == 200 and "<html" in page.text.lower()

    download = http.get(f"{API}/download/{uid}", "doctor")
    assert download.status_code == 200
    assert len(zipfile.ZipFile(io.BytesIO(download.content)).namelist()) == 2


def test_the_admin_session_cookie_is_secure_over_https(client: Client) -> None:
    answer = client.session.get(f"{client.base}{API}/admin/login", auth=client.stack.admin_auth,
                                allow_redirects=False, timeout=10)  # no X-Forwarded-Proto: Orthanc's own TLS
    assert answer.status_code == 302
    assert "; Secure" in answer.headers["Set-Cookie"] and "HttpOnly" in answer.headers["Set-Cookie"]


# --- the plain-HTTP port: redirects only --------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_on_the_plain_port_gets_only_a_redirect(stack: Stack, client: Client, method: str) -> None:
    order_id = put_order(client)  # a real order: a valid token on the plain port must not reveal it
    target = f"{API}/orders/{order_id}?reason=x"
    assert stack.redirect_url is not None
    answer = requests.request(method, stack.redirect_url + target, allow_redirects=False, timeout=10,
                              headers=client.headers("admin"),
                              data=b'{"status": "cancelled"}' if method not in ("GET", "HEAD") else None)
    assert answer.status_code == 308
    assert answer.headers["Location"] == stack.api_url + target
    assert order_id not in answer.text.replace(answer.headers["Location"], "")  # only where to go, no data
    assert "Testperson" not in answer.text
    assert order(client, order_id)["status"] == "scheduled"  # and nothing was done


def test_non_api_paths_redirect_to_orthancs_https_port(stack: Stack) -> None:
    assert stack.redirect_url is not None
    for path in ("/app/explorer.html", "/dicom-web/studies", "/ohif/viewer?StudyInstanceUIDs=1.2.3", "/system"):
        answer = requests.get(stack.redirect_url + path, allow_redirects=False, timeout=10)
        assert answer.status_code == 308
        assert answer.headers["Location"] == stack.url + path


def test_a_redirect_followed_lands_on_https(stack: Stack) -> None:
    assert stack.redirect_url is not None
    answer = requests.get(f"{stack.redirect_url}{API}/health", timeout=10, verify=stack.verify)
    assert [hop.status_code for hop in answer.history] == [308]
    assert answer.url == f"{stack.api_url}{API}/health"
    assert answer.status_code == 200
    assert answer.json()["status"] == "healthy"


def test_the_redirect_port_reads_no_upload(stack: Stack, client: Client) -> None:
    """A large upload announced on the plain port: 308 on its head, the connection closed, nothing stored."""
    assert stack.redirect_url is not None
    before = client.get(f"{API}/stats", "admin").json()
    with Endpoint(stack.config.redirect_port).connect(timeout=10) as sock:
        sock.sendall(f"POST {API}/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {client.token('technician')}"
                     "\r\nContent-Type: application/dicom\r\nContent-Length: 1073741824\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 308 ")
    assert f"Location: {stack.api_url}{API}/upload".encode() in received
    assert client.get(f"{API}/stats", "admin").json() == before
