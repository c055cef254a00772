"""The API port's HTTP server: waitress, with a strict head check, request deadlines and connection limits.

waitress reads every connection on one asynchronous loop and hands a request to a worker thread only once
it has arrived whole, so a slow client holds a socket, never a thread. On top of it, here:

- every request head passes ``http_strict.check_head`` first (smuggling shapes are refused with 400/411/413);
  waitress's own refusals are answered as JSON too;
- a deadline from accept (or from a kept-alive request's first byte) to the end of the head
  (``header_timeout``), then a minimum average body rate (``body_min_rate`` bytes/s after the same grace);
  408 and the connection closes;
- a client that reads nothing of an answer for ``idle_timeout`` is cut off (a worker thread waits on it);
- at most ``max_connections`` open connections, and ``per_address`` from one address: more are closed at once;
- an ``admission`` check of the parsed head (method, path, headers) of a request that sends
  ``Expect: 100-continue``: a refusal (the rate limit of uploads) is answered instead of the 100 Continue, so
  the client never sends its body, and the connection closes. Without that header the client sends the body
  at once, and closing on unread bytes would reset the connection before the client reads the answer: those
  requests are judged once received (api/listener.py, before their body is parsed or stored).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import TcpWSGIServer
from waitress.utilities import Error

from .http_strict import Refusal, check_head
from .tls_channel import TlsChannel

# Bytes read from a socket at a time. waitress's default (8 KB) costs a pass of its loop per 8 KB: 50 MB of
# uploaded files took ~120 ms to arrive that way, ~40 ms with 1 MB reads (README "Benchmarks").
RECV_BYTES = 1024 * 1024

# (method, path, headers with lower-case names) of a parsed head -> a refusal to answer at once, or None.
Admission = Callable[[str, str, Mapping[str, str]], "Refusal | None"]


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    header_timeout: float = 10.0
    body_min_rate: int = 32768
    idle_timeout: float = 30.0
    max_connections: int = 256
    per_address: int = 32
    threads: int = 8


class JsonError(Error):  # type: ignore[misc]
    """An error waitress answers itself (then closes), with the API's ``{"detail": ...}`` body."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code = status
        self.reason = HTTPStatus(status).phrase
        self.headers = dict(headers or {})

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        body = json.dumps({"detail": self.body}).encode()
        return f"{self.code} {self.reason}", [("Content-Type", "application/json"), *self.headers.items()], body


class StrictParser(HTTPRequestParser):  # type: ignore[misc]
    max_body_bytes = 0  # set on the subclass bound to a server
    admission: Admission | None = None  # ditto
    headers_done_at = 0.0
    # waitress's state, declared for the type checker (no stubs)
    headers_finished: bool
    completed: bool
    error: Any
    version: str
    header_plus: bytes
    body_bytes_received: int
    expect_continue: bool
    command: str
    path: str
    headers: dict[str, str]

    def received(self, data: bytes) -> int:
        was_finished = self.headers_finished
        consumed = int(super().received(data))
        if not self.headers_finished and not self.completed and b"\n" in self.header_plus.replace(b"\r\n", b""):
            # waitress waits for CRLF CRLF: a head with bare LFs would only end at the deadline.
            self._refuse(Refusal(400, "bare CR or LF in the request head: lines end with CRLF"))
        if self.headers_finished and not was_finished:
            self.headers_done_at = time.monotonic()
        refusal: Refusal | None = self.__dict__.get("refusal")
        if refusal is not None and self.error is not None:
            # our status (411, 413, 429, 505), not a bare 400
            self.error = JsonError(refusal.status, refusal.detail, refusal.headers)
        elif self.error is not None and not isinstance(self.error, JsonError):
            self.error = JsonError(int(self.error.code), str(self.error.body))
        return consumed

    def parse_header(self, header_plus: bytes) -> None:
        verdict = check_head(header_plus, self.max_body_bytes)
        if isinstance(verdict, Refusal):
            self.refusal = verdict
            self.version = "1.1"  # the answer's status line (waitress's default would be HTTP/1.0)
            raise ParsingError(verdict.detail)
        super().parse_header(header_plus)
        admission = type(self).admission
        if admission is not None and self.expect_continue:
            headers = {name.replace("_", "-").lower(): str(value) for name, value in self.headers.items()}
            refused = admission(self.command, self.path, headers)
            if refused is not None:  # answered instead of 100 Continue: the body is never sent
                self.expect_continue = False
                self.refusal = refused
                raise ParsingError(refused.detail)

    def _refuse(self, refusal: Refusal) -> None:
        self.error = JsonError(refusal.status, refusal.detail)
        self.completed = True
        self.headers_finished = True


class _Channel(HTTPChannel):  # type: ignore[misc]
    """A connection, with the clock of the request it is receiving (``None``: idle between requests)."""

    limits: Limits
    # waitress's state, declared for the type checker (no stubs)
    request: Any
    requests: list[Any]
    requests_lock: threading.Lock
    will_close: bool
    close_when_flushed: bool
    total_outbufs_len: int
    last_activity: float
    server: Any
    adj: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_clock: float | None = time.monotonic()  # from accept for the first request

    def received(self, data: bytes) -> bool:
        before = self.request
        if before is None and self.request_clock is None:
            self.request_clock = time.monotonic()
        result = bool(super().received(data))
        if self.request is None:
            self.request_clock = None
        elif before is not None and self.request is not before:
            self.request_clock = time.monotonic()  # a pipelined request began in the same packet
        return result

    def service(self) -> None:
        super().service()
        if self.request is not None:
            self.request_clock = time.monotonic()  # a pipelined request waited for the answer before it

    def check_deadlines(self, now: float) -> None:
        """Called from the server's loop about once a second."""
        if self.will_close or self.close_when_flushed:
            return
        limits = self.limits
        if self.requests:  # answering: a client that reads nothing for idle_timeout is cut off
            if self.total_outbufs_len and time.time() - self.last_activity > limits.idle_timeout:
                # Not will_close: that waits for the socket to become writable, which a stalled client never
                # lets happen. Closing wakes the worker thread (its write raises ClientDisconnected).
                self.handle_close()
            return
        clock, request = self.request_clock, self.request
        if clock is None:
            return  # between requests: waitress's idle timeout applies
        if request is None or not request.headers_finished:
            if now - clock > limits.header_timeout:
                self._time_out(f"the request head did not arrive within {limits.header_timeout:g} s")
            return
        late = now - request.headers_done_at - limits.header_timeout
        if late > 0 and request.body_bytes_received < limits.body_min_rate * late:
            self._time_out(f"the request body arrived slower than {limits.body_min_rate} bytes/s")

    def _time_out(self, detail: str) -> None:
        with self.requests_lock:
            if self.requests:
                return
            stale, self.request = self.request, None
            answer = self.parser_class(self.adj)
            answer.version = "1.1"
            answer.error = JsonError(408, detail)
            answer.completed = True
            self.requests.append(answer)
            self.request_clock = None
        if stale is not None:
            stale.close()
        self.server.add_task(self)


class ApiServer(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server with the limits above; ``run`` serves until ``close``. With ``tls_context``
    every connection is TLS (``tls_channel.py``); ``parser`` replaces the request parser (the redirect port)."""

    def __init__(self, app: Callable[..., Any], *, host: str, port: int, limits: Limits,
                 report: Callable[[str], None], tls_context: ssl.SSLContext | None = None,
                 parser: type[StrictParser] | None = None, admission: Admission | None = None) -> None:
        parser = type("BoundParser", (parser or StrictParser,), {
            "max_body_bytes": limits.max_body_bytes, "admission": staticmethod(admission) if admission else None})
        bases: tuple[type, ...] = (_Channel,) if tls_context is None else (TlsChannel, _Channel)
        self.channel_class = type("BoundChannel", bases, {"parser_class": parser, "limits": limits,
                                                          "tls_context": tls_context})
        self.limits = limits
        self._report = report
        self._refused_since = 0.0
        adj = Adjustments(
            host=host, port=port, threads=limits.threads, ident="ehr-imaging",
            channel_timeout=int(limits.idle_timeout), cleanup_interval=1,
            connection_limit=limits.max_connections + 16,  # ours refuses first; waitress's would stop accepting
            max_request_body_size=limits.max_body_bytes + 1,  # check_head answers 413 first, as JSON
            max_request_header_size=65536, clear_untrusted_proxy_headers=False, asyncore_use_poll=True,
            recv_bytes=RECV_BYTES,
            outbuf_high_watermark=4 * 1024 * 1024,  # a streamed answer waits for its client beyond this
            expose_tracebacks=False, log_socket_errors=False,  # TCP_NODELAY is waitress's default
        )
        super().__init__(app, map={}, adj=adj)

    def handle_accept(self) -> None:
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, addr = accepted
        channels = list(self.active_channels.values())
        from_there = sum(1 for channel in channels if channel.addr[0] == addr[0])
        if len(channels) >= self.limits.max_connections or from_there >= self.limits.per_address:
            conn.close()  # at once, without an answer: nothing of it was read
            self._note_refusal(addr[0], from_there, len(channels))
            return
        try:
            self.set_socket_options(conn)
        except OSError:
            conn.close()
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # waitress's idle timeout between requests
        monotonic = time.monotonic()
        for channel in list(self.active_channels.values()):
            channel.check_deadlines(monotonic)

    def _note_refusal(self, address: str, from_there: int, total: int) -> None:
        now = time.monotonic()
        if now - self._refused_since >= 60:  # once a minute at most: a flood must not flood the log
            self._refused_since = now
            self._report(f"ehr-imaging API port: refused a connection from {address} ({from_there} open from there, "
                         f"{total} in all; limits {self.limits.per_address} per address, "
                         f"{self.limits.max_connections} in all)")


def serve_in_thread(server: ApiServer, name: str) -> threading.Thread:
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    return thread
