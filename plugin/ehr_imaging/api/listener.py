"""The plugin's own HTTP listener for the EHR API: the same router, with the HTTP Orthanc 1.10 lacks.

Orthanc's HTTP server answers ``multipart/form-data`` POSTs itself (it feeds each part to the handler
without the request's headers and answers an empty 200), drops query strings on every method but GET,
and reads bodies whole into memory. The EHR sends form uploads, ``DELETE …?reason=`` and large ZIPs, so
the plugin also serves ``/api/v1/dicom/*`` (and ``/fhir/*``) on a port of its own (``ApiPort``), inside Orthanc's
process, from waitress (``api_server.py``: strict heads, deadlines, connection limits): a form's body, once received
whole (waitress spools one over 512 KB to a temporary file, mapped into memory here), is split into parts that are
views of it (``form_parts.py``; parts over 1 MB go to temporary files, and a body of any other shape to
python-multipart, as before), large raw bodies are spooled, sizes are checked against the limits before anything
is read, and the same ``Router`` answers. A rate-limited route's 429 (``Router.early_refusal``) is answered from the
head to a client that sends ``Expect: 100-continue`` (it never sends the body), else before the received
body is parsed or spooled. Orthanc's port keeps serving the same routes for what works there (browsers
on the viewer's origin, health checks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import FormParser

from ..config import Settings
from ..core.access import is_api_path, is_canonical
from . import form_parts
from .api_server import ApiServer, Limits, serve_in_thread
from .http_strict import Refusal
from .router import Request, Response, Router, UploadedFile, error_for, error_response
from .tls_channel import server_context

CHUNK = 1024 * 1024
SPOOL_RAW_BODY_ABOVE = 8 * 1024 * 1024  # raw bodies larger than this go to a temporary file
MEMORY_PART_BYTES = 1024 * 1024  # form parts up to this stay in memory (views of the body), larger ones go to disk
_HOP_BY_HOP = {"content-length", "content-type", "connection", "transfer-encoding"}


class ApiListener:
    """Serves the router on ``host:port`` from a waitress server on a daemon thread, until ``stop``; over TLS
    only when given a ``tls_context`` (``tls_channel.py``)."""

    def __init__(self, router: Router, *, host: str, port: int, max_body_bytes: int,
                 log_error: Callable[[str], None], spool_dir: str | None = None,
                 limits: Limits | None = None, tls_context: ssl.SSLContext | None = None) -> None:
        limits = limits or Limits(max_body_bytes=max_body_bytes)
        self._app = _WsgiApp(router, max_body_bytes=limits.max_body_bytes, report=log_error, spool_dir=spool_dir,
                             tls=tls_context is not None)
        self._server = ApiServer(self._app, host=host, port=port, limits=limits, report=log_error,
                                 tls_context=tls_context, admission=_admission(router))
        _forward_waitress_log(log_error)

    @classmethod
    def from_settings(cls, router: Router, settings: Settings, *, log_error: Callable[[str], None]) -> ApiListener:
        limits = Limits(
            max_body_bytes=settings.MaxUploadSizeMb * 1024 * 1024,
            header_timeout=settings.ApiRequestHeaderTimeoutSeconds,
            body_min_rate=settings.ApiRequestBodyMinBytesPerSecond, idle_timeout=settings.ApiIdleTimeoutSeconds,
            max_connections=settings.ApiMaxConnections, per_address=settings.ApiMaxConnectionsPerAddress,
            threads=settings.ApiWorkerThreads,
        )
        tls = server_context(settings.ApiTlsCertificateFile) if settings.ApiTlsCertificateFile else None
        return cls(router, host=settings.ApiListenAddress, port=settings.ApiPort,
                   max_body_bytes=limits.max_body_bytes, log_error=log_error, limits=limits, tls_context=tls)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def start(self) -> None:
        serve_in_thread(self._server, "ehr-api-listener")

    def stop(self) -> None:
        self._server.close()
        self._server.task_dispatcher.shutdown(timeout=5)


class _WsgiApp:
    """WSGI environ -> ``Request`` -> the router -> WSGI answer."""

    def __init__(self, router: Router, *, max_body_bytes: int, report: Callable[[str], None],
                 spool_dir: str | None, tls: bool = False) -> None:
        self.router = router
        self.tls = tls
        self.max_body_bytes = max_body_bytes
        self.report = report
        self.spool_dir = spool_dir

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        cleanup: list[Any] = []
        method, target = environ["REQUEST_METHOD"], environ.get("REQUEST_URI", "/")
        try:
            response = self._dispatch(environ, cleanup)
        except _Refusal as refusal:
            response = refusal.response
        except Exception as exc:  # noqa: BLE001 - never let a request kill a worker thread
            self.report(f"ehr-imaging API listener: {method} {urlsplit(target).path}: {type(exc).__name__}: {exc}")
            response = error_response(500, "internal error")
        finally:
            for item in cleanup:
                _discard(item)
        streamed = None
        if response.stream is not None:
            def cut(exc: BaseException) -> None:
                self.report(f"ehr-imaging API listener: {urlsplit(target).path}: answer cut "
                            f"({type(exc).__name__}: {exc})")
            try:
                streamed = _Streamed(response.stream, cut)  # its first chunk: a failure there is still a 500
            except Exception as exc:  # noqa: BLE001 - nothing sent yet: answer a clean 500
                cut(exc)
                response = error_response(500, "internal error")
        headers = [(name, value) for name, value in response.headers.items() if name.lower() not in _HOP_BY_HOP]
        if response.body or response.stream is not None:
            headers.append(("Content-Type", response.content_type))
        if response.stream is None:
            headers.append(("Content-Length", str(len(response.body))))
        start_response(f"{response.status} {_phrase(response.status)}", headers)
        return [response.body] if streamed is None else streamed

    def _dispatch(self, environ: dict[str, Any], cleanup: list[Any]) -> Response:
        split = urlsplit(environ.get("REQUEST_URI", "/"))
        path = unquote(split.path)
        if not is_canonical(path) or not is_api_path(path):
            return error_response(404, f"no route {path}")
        request = Request(
            method=environ["REQUEST_METHOD"], path=path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=_headers(environ), client_ip=str(environ.get("REMOTE_ADDR", "")), can_stream=True,
            tls=self.tls,
        )
        early = self.router.early_refusal(request.method, path, request.headers)
        if early is not None:  # over a rate limit: the body is neither parsed nor spooled
            return early
        self._read_body(request, environ["wsgi.input"], int(environ.get("CONTENT_LENGTH") or 0), cleanup)
        resolved = self.router.resolve(path)
        if resolved is None:
            return error_for(path, 404, f"no route {path}")
        template, groups = resolved
        return self.router.dispatch(template, request, groups)

    # --- request bodies (waitress has received the body whole: in memory, or a temporary file if large) ---
    def _read_body(self, request: Request, body: IO[bytes], length: int, cleanup: list[Any]) -> None:
        if length == 0:
            return
        if request.content_type == "multipart/form-data":
            self._read_form(request, body, length, cleanup)
        elif length > SPOOL_RAW_BODY_ABOVE:
            spooled = tempfile.NamedTemporaryFile(prefix="ehr-body-", dir=self.spool_dir, delete=False)  # noqa: SIM115
            cleanup.append(Path(spooled.name))
            with spooled:
                for chunk in _chunks(body, length):
                    spooled.write(chunk)
            request.body_path = Path(spooled.name)
        else:
            request.body = b"".join(_chunks(body, length))

    def _read_form(self, request: Request, body: IO[bytes], length: int, cleanup: list[Any]) -> None:
        try:
            boundary = _boundary(request.headers.get("content-type", ""))
        except ValueError as exc:
            raise _Refusal(error_response(400, f"malformed multipart/form-data body: {exc}")) from None
        whole = _whole(body, length, cleanup)
        parts = form_parts.split(whole, boundary)
        if parts is None:  # not the plain shape: python-multipart reads it (or refuses it), as it always did
            self._parse_form(request, whole, boundary, cleanup)
            return
        for part in parts:
            field = part.field.decode("utf-8", "replace")
            if part.file_name is None:
                request.form[field] = bytes(part.content).decode("utf-8", "replace")
                continue
            name = part.file_name.decode("utf-8", "replace") or "upload"
            content_type = part.content_type or "application/octet-stream"
            size = part.content.nbytes
            if size <= MEMORY_PART_BYTES:  # a view of the body: no copy
                request.files.append(UploadedFile(field, name, content_type, size, data=part.content))
                continue
            spooled = tempfile.NamedTemporaryFile(prefix="ehr-part-", dir=self.spool_dir, delete=False)  # noqa: SIM115
            cleanup.append(Path(spooled.name))
            with spooled:
                spooled.write(part.content)
            request.files.append(UploadedFile(field, name, content_type, size, path=Path(spooled.name)))

    def _parse_form(self, request: Request, whole: form_parts.Whole, boundary: bytes, cleanup: list[Any]) -> None:
        def on_field(field: Any) -> None:
            name = (field.field_name or b"").decode("utf-8", "replace")
            value = field.value
            request.form[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else ""

        def on_file(part: Any) -> None:
            cleanup.append(part)
            name = (part.file_name or b"").decode("utf-8", "replace") or "upload"
            field = (part.field_name or b"").decode("utf-8", "replace")
            content_type = getattr(part, "content_type", None) or "application/octet-stream"
            if part.in_memory:
                request.files.append(UploadedFile(field, name, content_type, part.size,
                                                  data=part.file_object.getvalue()))
            else:
                path = Path(part.actual_file_name.decode())
                request.files.append(UploadedFile(field, name, content_type, part.size, path=path))

        config = {"MAX_MEMORY_FILE_SIZE": MEMORY_PART_BYTES, "UPLOAD_DIR": self.spool_dir, "UPLOAD_DELETE_TMP": True,
                  "MAX_BODY_SIZE": self.max_body_bytes}
        try:
            parser = FormParser("multipart/form-data", on_field, on_file, boundary=boundary, config=config)
            for at in range(0, len(whole), CHUNK):
                parser.write(whole[at:at + CHUNK])
            parser.finalize()
        except (FormParserError, ValueError) as exc:
            raise _Refusal(error_response(400, f"malformed multipart/form-data body: {exc}")) from None


class _Streamed:
    """A streamed answer for waitress (chunked). Its first chunk is produced at once, before the status is
    sent; a failure after that ends the connection without the last chunk, so the client sees a truncated
    body, never a complete-looking one. ``close`` is passed on to the stream (download slots)."""

    def __init__(self, stream: Iterable[bytes], report: Callable[[BaseException], None]) -> None:
        self._stream = stream
        self._report = report
        self._chunks = iter(stream)
        try:
            self._first = next((chunk for chunk in self._chunks if chunk), b"")
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        if self._first:
            yield self._first
        try:
            for chunk in self._chunks:
                if chunk:
                    yield chunk
        except Exception as exc:  # noqa: BLE001 - the status is gone: cut the answer, say why in the log
            self._report(exc)
            raise _AnswerCut from None

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _AnswerCut(Exception):
    """Raised to waitress mid-answer: it closes the connection without ending the chunked body."""


class _Refusal(Exception):
    """Answer at once (waitress has read the whole body already: the connection stays usable)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _admission(router: Router) -> Callable[[str, str, Mapping[str, str]], Refusal | None]:
    """The router's refusals from a request head (a caller over its upload rate limit), before the body."""
    def admit(method: str, path: str, headers: Mapping[str, str]) -> Refusal | None:
        try:
            response = router.early_refusal(method, path, headers)
        except Exception:  # noqa: BLE001 - the request goes on; its dispatch decides (and reports)
            return None
        if response is None:
            return None
        detail = json.loads(response.body).get("detail", "")
        return Refusal(response.status, str(detail), dict(response.headers))

    return admit


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers with lower-case names (waitress joins repeated ones with ", ")."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = str(value)
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            headers[key.replace("_", "-").lower()] = str(value)
    return headers


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _boundary(content_type: str) -> bytes:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    raise ValueError("no boundary in Content-Type")


def _chunks(body: IO[bytes], length: int) -> Iterator[bytes]:
    remaining = length
    while remaining > 0:
        chunk = body.read(min(CHUNK, remaining))
        if not chunk:
            raise _Refusal(error_response(400, "the request body ended early"))
        remaining -= len(chunk)
        yield chunk


def _whole(body: IO[bytes], length: int, cleanup: list[Any]) -> form_parts.Whole:
    """The whole body without reading it again: waitress's temporary file (bodies over 512 KB) mapped into memory
    read-only, else its bytes (read as before: a body shorter than announced is a 400)."""
    try:
        descriptor = body.fileno()
        body.flush()
        complete = length > 0 and os.fstat(descriptor).st_size == length
    except (AttributeError, OSError, ValueError):
        complete = False
    if complete:
        mapped = mmap.mmap(descriptor, length, access=mmap.ACCESS_READ)
        cleanup.append(mapped)
        return mapped
    return b"".join(_chunks(body, length))


def _discard(item: Any) -> None:
    if isinstance(item, Path):
        item.unlink(missing_ok=True)
    elif isinstance(item, mmap.mmap):
        with contextlib.suppress(BufferError):  # a view of it still held somewhere: unmapped when the last one goes
            item.close()
    else:  # a form part: closing its temporary file deletes it
        item.close()


class _ForwardToOrthanc(logging.Handler):
    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        self._report(f"ehr-imaging API port (waitress): {logging.Formatter().format(record)}")


def _forward_waitress_log(report: Callable[[str], None]) -> None:
    """waitress's warnings (connection limit reached, an exception in a task) go to Orthanc's log."""
    logger = logging.getLogger("waitress")
    if not any(isinstance(handler, _ForwardToOrthanc) for handler in logger.handlers):
        logger.addHandler(_ForwardToOrthanc(report))
        logger.propagate = False
