"""A seeded mutator of HTTP requests: paths and parameters from the route table, query strings, headers,
JWTs (bit flips, truncations, ``alg: none``, swapped parts, garbage claims), basic credentials and cookies.

``request(seed, index, routes, known)`` is a pure function: the same seed and index give the same bytes on the
wire (``FuzzRequest.wire``), so a failure is replayed from them. ``routes`` are (method, path template) pairs
read from ``api/routes.py`` ROUTES, so a new route is fuzzed the day it is added; ``known`` holds real
identifiers and valid tokens of the stack under test (a mutant starts from them and breaks them).
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

API = "/api/v1/dicom"
# Query parameters the routes read (README's API table), and a few nobody reads.
QUERY_NAMES = ("limit", "offset", "status", "unmatched", "mrn", "accession", "patient_id", "patient_name",
               "modality", "study_date_from", "study_date_to", "order_status", "reason", "restorable",
               "study_uid", "order_id", "token", "image_token", "all", "requestType", "studyUID", "seriesUID",
               "objectUID", "contentType", "rows", "columns", "region", "frameNumber", "windowCenter",
               "windowWidth", "viewport", "quality", "window", "includefield", "fuzzymatching", "PatientID",
               "StudyInstanceUID", "_count", "identifier", "basedOn", "patient", "requestType", "x", "")
HEADER_NAMES = ("X-Order-Id", "X-Patient-Id", "X-File-Name", "X-Reason", "X-Upload-Id", "X-All", "X-Changes",
                "Accept", "Accept-Encoding", "Range", "If-None-Match", "Origin", "Sec-Fetch-Site", "Referer",
                "X-Forwarded-For", "X-Forwarded-Proto", "Expect", "Content-Type", "User-Agent", "X-Fuzz")
CONTENT_TYPES = ("application/json", "application/dicom", "application/zip", "image/jpeg", "application/pdf",
                 "text/plain", "application/json; charset=utf-16", "multipart/related; type=application/dicom",
                 "application/fhir+json", "", "application/x-www-form-urlencoded", "*/*", "application/json\x7f")
# Content-Length values the server must judge without waiting for a body that is not sent: invalid, or over
# every limit (a valid small length with no body would be a slow client, not a fuzz case).
BAD_LENGTHS = ("-1", "abc", "1e3", "0x10", "99999999999999999999999", "1000000000000", " 5 5", "+4", "")
WEIRD_VALUES = ("", " ", "0", "-1", "1.5", "1e309", "NaN", "99999999999999999999999999", "-0", "true", "null",
                "[]", "{}", "%00", "%0d%0aX-Injected:%201", "%ZZ", "%", "%u0041", "..", "../../system", "%2e%2e%2f",
                "' OR 1=1--", "\"; DROP TABLE x;--", "${jndi:x}", "<script>", "%C0%AF", "%FF%FE", "%F0%9F%92%A9",
                "a" * 300, "9" * 5000, "1.2.840." + "1" * 70, "*", "?", "\\", "%5C", "%20%20", "2026-02-30",
                "20261399", "1970-01-01T00:00:00Z", "-9223372036854775809", "0.0.0.0", "%E2%80%A8")
ROLES = ("admin", "radiologist", "doctor", "nurse", "technician", "ehr-service", "patient")


@dataclass(frozen=True)
class Known:
    """What the mutants start from: real identifiers (by path parameter name) and valid tokens (by role, plus
    ``viewer``: a viewer token for the known study), and the admin user name (never sent with a wrong password:
    a real name's failures would lock it out for the checks that follow)."""

    values: Mapping[str, str]
    tokens: Mapping[str, str]
    admin_user: str = "admin"


@dataclass(frozen=True)
class FuzzRequest:
    index: int
    port: str  # "orthanc" (Orthanc's own port, through the filter) or "api" (the plugin's API port)
    method: str
    target: str  # as sent on the request line (already encoded, or broken on purpose)
    headers: tuple[tuple[str, str], ...]
    body: bytes
    kinds: tuple[str, ...]
    ours: bool  # a path of our router (the API prefix, /fhir): every error is JSON with a detail
    framing: bool = False  # carries a body or a declared length: the filter may refuse it with its empty 403
    host: str = "127.0.0.1"
    notes: tuple[str, ...] = field(default=())

    def wire(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {self.host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.body and not any(name.lower() in ("content-length", "transfer-encoding") for name, _ in self.headers):
            lines.append(f"Content-Length: {len(self.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        return head + self.body


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mutate_jwt(rng: random.Random, token: str) -> tuple[str, str]:
    """A broken variant of a valid JWT, and what was done to it."""
    parts = [*token.split("."), "", "", ""][:3]  # header, claims, signature
    choice = rng.randrange(12)
    if choice == 0:  # a flipped character anywhere (a change in the last character may still be valid)
        chars = list(token)
        pos = rng.randrange(len(chars))
        chars[pos] = rng.choice("ABCDEFabcdef0123456789-_.=+/ ")
        return "".join(chars), "jwt-char"
    if choice == 1:
        return token[:rng.randrange(len(token))], "jwt-truncated"
    if choice == 2:  # alg none, the signature dropped or kept
        header = _b64(json.dumps({"alg": rng.choice(["none", "None", "NONE", ""]), "typ": "JWT"}).encode())
        return ".".join([header, parts[1], rng.choice(["", parts[2]])]), "jwt-alg-none"
    if choice == 3:
        return ".".join(reversed(parts)), "jwt-swapped"
    if choice == 4:
        return ".".join([*parts, parts[rng.randrange(3)]]), "jwt-extra-part"
    if choice == 5:  # claims replaced by garbage, the original signature kept
        claims = rng.choice([b"{}", b"[]", b"null", b"{\"sub\":\"x\",\"roles\":[\"admin\"]}", b"\xff\xfe",
                             json.dumps({"sub": "a" * 5000, "exp": 1e309}).encode(), b"{\"exp\":\"soon\"}"])
        return ".".join([parts[0], _b64(claims), parts[2]]), "jwt-claims"
    if choice == 6:
        return ".".join([_b64(json.dumps({"alg": rng.choice(["HS512", "RS256", "ES256", "HS256 "]),
                                          "kid": "../../etc/passwd", "jku": "http://x"}).encode()),
                         parts[1], parts[2]]), "jwt-header"
    if choice == 7:
        return token + rng.choice(["=", "==", ".", "..", "%00", " x", "\t"]), "jwt-suffix"
    if choice == 8:
        return "".join(rng.choice("ABCxyz0123-_.") for _ in range(rng.choice([1, 10, 200, 8000]))), "jwt-random"
    if choice == 9:
        return ".".join(p[::-1] for p in parts), "jwt-reversed"
    if choice == 10:
        return token.upper() if rng.random() < 0.5 else token.lower(), "jwt-case"
    return "", "jwt-empty"


def _credentials(rng: random.Random, known: Known, admin_ok: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """Authorization / Cookie headers: none, a valid token, a broken one, basic credentials of made-up users."""
    choice = rng.randrange(10)
    roles = [r for r in ROLES if admin_ok or r != "admin"]
    valid = known.tokens.get(rng.choice([*roles, "viewer"])) or known.tokens.get("doctor", "")
    if choice == 0:
        return [], ["no-credentials"]
    if choice in (1, 2, 3):
        return [("Authorization", f"Bearer {valid}")], ["valid-token"]
    if choice in (4, 5):
        token, kind = mutate_jwt(rng, valid)
        scheme = rng.choice(["Bearer", "Bearer", "bearer", "BEARER", "Token", "Bearer  ", ""])
        return [("Authorization", f"{scheme} {token}".strip())], [kind]
    if choice == 6:
        user = rng.choice(["fuzz", "root", "", "ädmin", "a" * 300, "x:y"])
        raw = f"{user}:{rng.choice(['', 'pw', 'x' * 1000])}".encode()
        encoded = rng.choice([base64.b64encode(raw).decode(), "!!!", "=", base64.b64encode(b"\xff\xfe").decode()])
        return [("Authorization", f"Basic {encoded}")], ["basic-made-up"]
    if choice == 7:
        token, kind = mutate_jwt(rng, valid)
        return [("Cookie", f"ehr_imaging_session={token}")], ["cookie-" + kind]
    if choice == 8:
        return [("Authorization", rng.choice(["Bearer", "Bearer ", "Negotiate x", "Basic", "Digest a=b", "\x01"]))], \
            ["auth-scheme"]
    token, kind = mutate_jwt(rng, valid)
    return [("Authorization", f"Bearer {valid}"), ("Authorization", f"Bearer {token}")], ["two-authorizations"]


def _value(rng: random.Random, known: Known, name: str) -> str:
    """A value for a path or query parameter: the real one, a mutated one or a weird one (already encoded)."""
    real = known.values.get(name) or rng.choice(list(known.values.values()) or ["x"])
    choice = rng.random()
    if choice < 0.35:
        return quote(real, safe="")
    if choice < 0.6:
        chars = list(real) or ["x"]
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice("0.9aZ-_~!$&'()*+,;=:@ \t\x00é/%")
        return quote("".join(chars), safe="%")
    return quote(rng.choice(WEIRD_VALUES), safe="%/")  # bad percent-encodings and slashes kept


def _query(rng: random.Random, known: Known) -> tuple[str, list[str]]:
    if rng.random() < 0.3:
        return "", []
    pairs = []
    for _ in range(rng.choice([1, 1, 2, 3, 8, 60])):
        name = rng.choice(QUERY_NAMES)
        pairs.append(f"{quote(name)}={_value(rng, known, name)}" if rng.random() < 0.9 else quote(name))
    separator = rng.choice(["&", "&", "&", ";", "&&"])
    return "?" + separator.join(pairs) + rng.choice(["", "", "#frag", "&", "?x=1"]), ["query"]


def _path(rng: random.Random, template: str, known: Known) -> str:
    return re.sub(r"{(\w+)}", lambda m: _value(rng, known, m.group(1)), template)


OTHER_PATHS = (
    "/dicom-web/studies", "/dicom-web/studies/{study_uid}", "/dicom-web/studies/{study_uid}/metadata",
    "/dicom-web/studies/{study_uid}/series", "/dicom-web/studies/{study_uid}/series/{series_uid}/instances",
    "/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_instance_uid}/frames/1",
    "/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_instance_uid}/rendered",
    "/dicom-web/instances", "/wado", "/ehr-imaging/dicom-web/studies", "/ehr-imaging/dicom-web/series",
    "/ohif/", "/ohif/index.html", "/ohif/app-config.js", "/ohif/viewer", "/ohif/../system", "/ohif/%2e%2e/system",
    "/system", "/instances", "/studies", "/tools/find", "/patients/{patient_id}", "/app/explorer.html", "/",
    "/plugins", "/changes", "/statistics", "/tools/lookup", "/metrics", "//system", "/api/v1/dicom/../../system",
)


def request(seed: int, index: int, routes: Sequence[tuple[str, str]], known: Known) -> FuzzRequest:
    """The ``index``-th request of ``seed``: a route of the table (60 %) or another path of Orthanc's port
    (DICOMweb, the scoped QIDO root, the viewer's site, Orthanc's own API), with mutated parameters, query
    string, headers, credentials and body."""
    rng = random.Random(f"{seed}/http/{index}")
    kinds: list[str] = []
    if rng.random() < 0.6:
        method, template = rng.choice(list(routes))
        ours, admin_ok = True, True
        port = "api" if rng.random() < 0.45 else "orthanc"
        if rng.random() < 0.08:  # another verb on a route's path
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
            kinds.append("method")
        path = _path(rng, template, known)
        if rng.random() < 0.05:  # a path the table does not have, under the API prefix
            path = API + "/" + _value(rng, known, "x") + rng.choice(["", "/", "/x/y"])
            kinds.append("unknown-path")
        if re.search(r"/\.\.?(/|$)|%2e|//", path, re.IGNORECASE):  # Orthanc normalises it: any path then
            ours = False
    else:
        template = rng.choice(OTHER_PATHS)
        method = rng.choice(["GET"] * 8 + ["POST", "PUT", "DELETE"])
        path, ours, admin_ok, port = _path(rng, template, known), False, False, "orthanc"
        if template.startswith(API) or "%2e" in template or "/../" in template:
            ours = False  # normalised by Orthanc before anyone sees it: judged as any other path
        kinds.append("other-path")
    query, query_kinds = _query(rng, known)
    kinds += query_kinds
    headers, credential_kinds = _credentials(rng, known, admin_ok)
    kinds += credential_kinds
    for _ in range(rng.choice([0, 0, 1, 2, 5])):
        name = rng.choice(HEADER_NAMES)
        value = rng.choice(CONTENT_TYPES) if name == "Content-Type" else _value(rng, known, name)
        headers.append((name, value.replace("\r", "").replace("\n", "")))
        kinds.append("header")
    body, framing = b"", False
    if method in ("POST", "PUT") and rng.random() < 0.7:
        body = _body(rng, known)
        framing = True
        kinds.append("body")
        if not any(n.lower() == "content-type" for n, _ in headers):
            headers.append(("Content-Type", rng.choice(CONTENT_TYPES[:4])))
    if rng.random() < 0.04:  # a declared length the server must refuse from the headers alone
        headers.append(("Content-Length", rng.choice(BAD_LENGTHS)))
        body, framing = b"", True
        kinds.append("bad-content-length")
    elif body and rng.random() < 0.05:  # a chunked body, well formed
        headers.append(("Transfer-Encoding", "chunked"))
        body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        kinds.append("chunked")
    host = rng.choice(["127.0.0.1"] * 9 + ["evil.example", "", "127.0.0.1:1", "[::1]", "a" * 300])
    return FuzzRequest(index, port, method, path + query, tuple(headers), body, tuple(kinds), ours, framing, host)


def _body(rng: random.Random, known: Known) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        return b""
    if choice == 1:
        return bytes(rng.randrange(256) for _ in range(rng.choice([1, 16, 1000])))
    if choice == 2:
        return rng.choice([b"{", b"[", b"{\"a\":", b"\xff\xfe{}", b"null", b"1e309", b"\"x\"", b"{}" * 1000])
    fields = {"reason": "fuzz", "order_id": known.values.get("order_id", "x"), "force": True,
              "study_instance_uid": known.values.get("study_uid", "x"), "patient_id": "p", "mrn": "M",
              "accession_number": "A", "status": "scheduled", "modality": "CT", "upload_id": "u",
              "sop_instance_uid": "1.2", "size": 10, "sha256": "0" * 64, "changes": {"PatientID": "x"},
              "resourceType": "ServiceRequest", "study_uids": [known.values.get("study_uid", "x")]}
    body: dict[str, object] = {}
    for name in rng.sample(list(fields), rng.randint(1, 6)):
        body[name] = rng.choice([fields[name], None, 0, -1, 1e300, "", "x" * 10000, [], {}, [fields[name]],
                                 {"$ne": None}, True, "\u0000", "\ud800"])
    return json.dumps(body).encode("utf-8", "surrogatepass")
