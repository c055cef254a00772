"""What the fuzz run (tests/integration/test_fuzz.py) judges an answer by, and how it keeps count: a C-STORE
status, an error answer of our router, what Orthanc itself answers on its port before (or instead of) the
plugin's code, and a request sent as its bytes on a connection of its own."""

from __future__ import annotations

import http.client
import json
import socket
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import requests

from ehr_imaging.core.access import IID_PATH
from ehr_stack.stack import Stack
from tests.fuzz.http_mutator import FuzzRequest

TIMEOUT = 30.0  # a hang: no answer within this

# C-STORE statuses a clean refusal may carry (PS3.4 B.2.3, PS3.7 C): out of resources, data set does not match
# the SOP class, cannot understand, processing failure, invalid SOP instance, SOP class not supported, refused,
# duplicate invocation, unrecognised operation, mistyped argument.
CSTORE_SUCCESS = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
CSTORE_FAILURES = frozenset({0x0110, 0x0117, 0x0122, 0x0124, 0x0210, 0x0211, 0x0212})


def clean_cstore_failure(status: int) -> bool:
    return status in CSTORE_FAILURES or 0xA700 <= status <= 0xA7FF or 0xA900 <= status <= 0xA9FF \
        or 0xC000 <= status <= 0xCFFF


@dataclass
class Run:
    """What one channel saw: counts by outcome, and each failure with the seed that replays it."""

    channel: str
    seed: int
    counts: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)  # why an answer that is not our JSON is still clean
    failures: list[str] = field(default_factory=list)
    unanswered: list[bytes] = field(default_factory=list)  # what was sent and got no answer (stored or not)

    def fail(self, index: int, what: str) -> None:
        self.failures.append(f"{self.channel} seed={self.seed} index={index}: {what}")

    def merge(self, other: Run) -> None:
        """Another part of the same channel (sent at the same time), counted here."""
        self.counts.update(other.counts)
        self.notes.update(other.notes)
        self.failures.extend(other.failures)
        self.unanswered.extend(other.unanswered)

    def report(self) -> None:
        counts = dict(sorted(self.counts.items()))
        print(f"\nfuzz {self.channel}: seed {self.seed}, {sum(self.counts.values())} cases, {counts}"
              + (f"; of which {dict(sorted(self.notes.items()))}" if self.notes else ""))
        assert not self.failures, f"{len(self.failures)} failures (add (channel, seed, index) to REGRESSIONS):\n" + \
            "\n".join(self.failures[:40])


def is_json_detail(answer: requests.Response | http.client.HTTPResponse, body: bytes) -> bool:
    """An error answer of our router: ``{"detail": "..."}``, or under /fhir an OperationOutcome with one."""
    content_type = answer.headers.get("Content-Type", "") or ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    if content_type.startswith("application/fhir+json") and isinstance(parsed, dict):
        issues = parsed.get("issue")
        return parsed.get("resourceType") == "OperationOutcome" and isinstance(issues, list) and bool(issues) \
            and bool(str(issues[0].get("diagnostics", "")))
    return content_type.startswith("application/json") and isinstance(parsed, dict) and \
        isinstance(parsed.get("detail"), str) and bool(parsed["detail"])


def send(stack: Stack, item: FuzzRequest) -> tuple[int | None, http.client.HTTPResponse | None, bytes, str]:
    """The request's bytes on a connection of its own; (status, answer, body, what went wrong)."""
    port = stack.config.http_port if item.port == "orthanc" else stack.config.api_port
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(item.wire())
            answer = http.client.HTTPResponse(sock, method=item.method)
            answer.begin()
            body = answer.read(8 * 1024 * 1024)
            return answer.status, answer, body, ""
    except TimeoutError:
        return None, None, b"", "no answer within the timeout"
    except (http.client.HTTPException, ConnectionError) as exc:
        return None, None, b"", f"no HTTP answer: {type(exc).__name__} {exc}"


def orthanc_own(item: FuzzRequest, status: int, answer: http.client.HTTPResponse, body: bytes) -> str:
    """Why an answer on Orthanc's port that is not our router's JSON is still clean: what Orthanc, its HTTP
    server or the plugin SDK answers before (or instead of) the plugin's code; '' when none applies."""
    if body.startswith(b"Error 4"):
        return "civetweb"  # Orthanc's HTTP server refused the request line or headers ("Error 400: Bad Request")
    if not body and status == 405:
        return "sdk-405"  # the SDK's SendMethodNotAllowed carries an Allow header, never a body
    if not body and item.method not in ("GET", "POST", "PUT", "DELETE"):
        return "method"  # a method Orthanc does not know
    if not body and status == 403 and (item.framing or "image_token" in item.target):
        return "filter"  # the filter's refusal (a body judged from the headers, a signed-URL token)
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    if isinstance(parsed, dict) and "OrthancError" in parsed and "HttpStatus" in parsed:
        return "orthanc-core"  # Orthanc's own error (it failed to decode or route the URI)
    return ""


def not_utf8(target: str) -> bool:
    """orthanc-python 4.0 cannot hand a URI that percent-decodes to invalid UTF-8 to any Python callback (the
    filter included): it logs "Cannot create a Python string" and Orthanc answers 500 before the plugin runs."""
    try:
        unquote_to_bytes(target.split("#", 1)[0]).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def judge(item: FuzzRequest, status: int | None, answer: http.client.HTTPResponse | None, body: bytes,
          problem: str, run: Run) -> str:
    """'' when the answer is acceptable, else why not."""
    if status is None or answer is None:
        return problem
    if status >= 500:
        if item.port == "orthanc" and status == 500 and not_utf8(item.target) and b"plugin engine" in body:
            run.notes["orthanc-python: URI not UTF-8 (500)"] += 1
            return ""
        return f"{status} {body[:300]!r}"
    if status < 400 or not item.ours:
        return ""
    if is_json_detail(answer, body):
        return ""
    if item.target.startswith(IID_PATH) and (answer.headers.get("Content-Type") or "").startswith("text/html"):
        return ""  # IHE Invoke Image Display answers a browser: its errors are pages
    reason = orthanc_own(item, status, answer, body) if item.port == "orthanc" else ""
    if reason:
        run.notes[f"orthanc port, {reason}"] += 1
        return ""
    return f"{status} without a JSON detail: {body[:300]!r}"
