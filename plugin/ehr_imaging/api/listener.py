"""The plugin's own HTTP listener for the EHR API: the same router, with the HTTP Orthanc 1.10 lacks.

Orthanc's HTTP server answers ``multipart/form-data`` POSTs itself (it feeds each part to the handler
without the request's headers and answers an empty 200), drops query strings on every method but GET,
and reads bodies whole into memory. The EHR sends form uploads, ``DELETE …?reason=`` and large ZIPs, so
the plugin also serves ``/api/v1/dicom/*`` on a port of its own (``ApiPort``), inside Orthanc's process,
from a small threaded server: form parts are streamed to temporary files, large raw bodies too, sizes
are checked against the limits before anything is read, and the same ``Router`` answers. Orthanc's port
keeps serving the same routes for what works there (browsers on the viewer's origin, health checks).
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import FormParser

from ..core.access import API_PREFIX, is_canonical
from .router import Request, Response, Router, UploadedFile, error_response

CHUNK = 1024 * 1024
SPOOL_RAW_BODY_ABOVE = 8 * 1024 * 1024  # raw bodies larger than this go to a temporary file


class ApiListener:
    """Serves the router on ``host:port`` from daemon threads, until ``stop``."""

    def __init__(self, router: Router, *, host: str, port: int, max_body_bytes: int,
                 log_error: Callable[[str], None], spool_dir: str | None = None) -> None:
        handler = type("BoundApiHandler", (_ApiHandler,), {
            "router": router, "max_body_bytes": max_body_bytes, "report_error": staticmethod(log_error),
            "spool_dir": spool_dir,
        })
        self._server = _Server((host, port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ehr-api-listener", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


MAX_CONNECTIONS = 64  # open connections served at once; more are closed at once (each holds a thread)
IDLE_TIMEOUT_SECONDS = 30  # a connection that sends nothing for this long is closed


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many connections: refuse rather than pile up threads
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


class _ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the EHR backend reuses its connections
    timeout = IDLE_TIMEOUT_SECONDS  # per socket operation: a silent or trickling client cannot hold a thread
    server_version = "ehr-imaging"
    router: Router
    max_body_bytes: int
    report_error: Callable[[str], None]
    spool_dir: str | None

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _handle(self) -> None:
        cleanup: list[Any] = []
        try:
            response = self._dispatch(cleanup)
        except _Refusal as refusal:
            response = refusal.response
            self.close_connection = True  # the body was not read: the connection cannot be reused
        except Exception as exc:  # noqa: BLE001 - never let a request kill the listener thread
            self.report_error(f"ehr-imaging API listener: {self.command} {self.path}: {type(exc).__name__}: {exc}")
            response = error_response(500, "internal error")
            self.close_connection = True
        finally:
            for item in cleanup:
                _discard(item)
        self._send(response)

    def _dispatch(self, cleanup: list[Any]) -> Response:
        split = urlsplit(self.path)
        path = unquote(split.path)
        if not is_canonical(path) or not (path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/")):
            self._drain_or_refuse()
            return error_response(404, f"no route {path}")
        request = Request(
            method=self.command, path=path, query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            client_ip=self.client_address[0],
        )
        self._read_body(request, cleanup)
        resolved = self.router.resolve(path)
        if resolved is None:
            return error_response(404, f"no route {path}")
        template, groups = resolved
        return self.router.dispatch(template, request, groups)

    # --- request bodies -----------------------------------------------------------------------
    def _content_length(self) -> int:
        if "Transfer-Encoding" in self.headers:
            # Any transfer coding, not only "chunked": a proxy in front might frame the body by it while we go
            # by Content-Length, and the two would disagree on where the next request starts.
            raise _Refusal(error_response(411, "send a Content-Length (transfer codings are not accepted)"))
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _Refusal(error_response(400, "invalid Content-Length")) from None
        if length < 0:
            raise _Refusal(error_response(400, "invalid Content-Length"))
        if length > self.max_body_bytes:
            limit_mb = self.max_body_bytes // (1024 * 1024)
            raise _Refusal(error_response(413, f"request body larger than {limit_mb} MB"))
        return length

    def _drain_or_refuse(self) -> None:
        remaining = self._content_length()
        while remaining > 0:
            chunk = self.rfile.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def _read_body(self, request: Request, cleanup: list[Any]) -> None:
        length = self._content_length()
        if length == 0:
            return
        if request.content_type == "multipart/form-data":
            self._read_form(request, length, cleanup)
        elif length > SPOOL_RAW_BODY_ABOVE:
            spooled = tempfile.NamedTemporaryFile(prefix="ehr-body-", dir=self.spool_dir, delete=False)  # noqa: SIM115
            cleanup.append(Path(spooled.name))
            with spooled:
                _copy(self.rfile, spooled, length)
            request.body_path = Path(spooled.name)
        else:
            request.body = _read_exactly(self.rfile, length)

    def _read_form(self, request: Request, length: int, cleanup: list[Any]) -> None:
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

        config = {"MAX_MEMORY_FILE_SIZE": 1024 * 1024, "UPLOAD_DIR": self.spool_dir, "UPLOAD_DELETE_TMP": True,
                  "MAX_BODY_SIZE": self.max_body_bytes}
        try:
            parser = FormParser("multipart/form-data", on_field, on_file,
                                boundary=_boundary(request.headers.get("content-type", "")),
                                config=config)
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(CHUNK, remaining))
                if not chunk:
                    raise _Refusal(error_response(400, "the request body ended early"))
                remaining -= len(chunk)
                parser.write(chunk)
            parser.finalize()
        except (FormParserError, ValueError) as exc:
            raise _Refusal(error_response(400, f"malformed multipart/form-data body: {exc}")) from None

    # --- answers ------------------------------------------------------------------------------
    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            if response.body or response.stream is not None:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                if name.lower() not in {"content-length", "content-type", "connection", "transfer-encoding"}:
                    self.send_header(name, value)
            if response.stream is not None:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if response.stream is not None:
                self._send_chunks(response.stream)
            else:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_chunks(self, stream: Iterable[bytes]) -> None:
        try:
            for chunk in stream:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except Exception as exc:  # noqa: BLE001 - headers are gone: end the connection without the last chunk
            self.report_error(f"ehr-imaging API listener: {self.path}: answer cut ({type(exc).__name__}: {exc})")
            self.close_connection = True  # the client sees a truncated body, never a complete-looking one
            return
        self.wfile.write(b"0\r\n\r\n")


class _Refusal(Exception):
    """Answer at once without reading (the rest of) the body."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _boundary(content_type: str) -> bytes:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    raise ValueError("no boundary in Content-Type")


def _read_exactly(stream: BufferedIOBase, length: int) -> bytes:
    data = stream.read(length)
    if len(data) != length:
        raise _Refusal(error_response(400, "the request body ended early"))
    return data


def _copy(source: BufferedIOBase, target: IO[bytes], length: int) -> None:
    remaining = length
    while remaining > 0:
        chunk = source.read(min(CHUNK, remaining))
        if not chunk:
            raise _Refusal(error_response(400, "the request body ended early"))
        target.write(chunk)
        remaining -= len(chunk)


def _discard(item: Any) -> None:
    if isinstance(item, Path):
        item.unlink(missing_ok=True)
    else:  # a form part: closing its temporary file deletes it
        item.close()

