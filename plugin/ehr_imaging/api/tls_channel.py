"""TLS on the API port, inside waitress's own connection loop (``ssl.MemoryBIO``, no second server).

waitress has no TLS. Rather than a second server or a proxy in front (which would hide the client's
address from the per-address limit and add a hop), each connection's bytes go through an ``SSLObject``
with memory buffers: the loop reads ciphertext from the socket, the TLS object turns it into the request
bytes waitress parses as before, and every answer waitress writes is encrypted on its way out. So the
strict head check, the deadlines (a handshake that does not finish is a head that does not arrive), the
connection caps, the 413 before reading and the streamed answers are exactly those of plain HTTP.

One lock per connection guards the TLS object: the loop thread reads, a worker thread writes.
Ciphertext the socket did not take waits in ``_raw`` and no more plaintext is accepted until it is gone,
so a client that reads nothing still stalls the worker (and is cut off by the idle deadline).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from typing import Any

PROTOCOLS = ("http/1.1",)


def server_context(certificate_file: str) -> ssl.SSLContext:
    """A server context from one PEM file with the private key and the certificate chain (Orthanc's
    ``SslCertificate`` format): TLS 1.2 at least, HTTP/1.1 only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate_file)
    context.set_alpn_protocols(list(PROTOCOLS))
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


class TlsChannel:
    """Mixed in before waitress's ``HTTPChannel`` (``tls_context`` set on the bound class)."""

    tls_context: ssl.SSLContext
    # waitress's state, declared for the type checker (no stubs)
    socket: Any
    adj: Any
    connected: bool
    last_activity: float
    limits: Any
    request_clock: float | None
    will_close: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = self.tls_context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._tls_lock = threading.Lock()
        self._raw = bytearray()  # ciphertext the socket has not taken yet
        self.handshake_done = False
        super().__init__(*args, **kwargs)

    # --- reading (the loop thread) -------------------------------------------------------------------
    def handle_read(self) -> None:
        try:
            raw = self.socket.recv(self.adj.recv_bytes)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.handle_close()
            return
        if not raw:
            self.handle_close()  # the client closed (what waitress does on EOF too)
            return
        with self._tls_lock:
            self._incoming.write(raw)
            try:
                plain, closed = self._decrypt()
            except ssl.SSLError:
                plain, closed = b"", True  # not TLS, a bad handshake, a forged record: nothing is answered
            self._send_raw()
        if plain:
            self.last_activity = time.time()
            self.received(plain)  # type: ignore[attr-defined]
        if closed:
            self.handle_close()

    def _decrypt(self) -> tuple[bytes, bool]:
        if not self.handshake_done:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return b"", False
            self.handshake_done = True
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._tls.read(65536)
            except ssl.SSLWantReadError:
                return b"".join(chunks), False
            except ssl.SSLZeroReturnError:  # the client's close_notify
                return b"".join(chunks), True
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)

    # --- writing (a worker thread, or the loop) -------------------------------------------------------
    def send(self, data: bytes, do_close: bool = True) -> int:
        with self._tls_lock:
            if not self.handshake_done or not self._send_raw(do_close) or self.socket is None:
                return 0  # the previous chunk is still on its way: waitress keeps this one
            try:
                written = int(self._tls.write(data))
            except ssl.SSLError:
                self.connected = False
                return 0
            self._send_raw(do_close)
            return written

    def _send_raw(self, do_close: bool = True) -> bool:
        """Ciphertext to the socket, as much as it takes; True when nothing is left waiting."""
        self._raw += self._outgoing.read()
        while self._raw and self.socket is not None:
            try:
                sent = self.socket.send(self._raw)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                self._raw.clear()
                self.connected = False
                if do_close:
                    self.will_close = True  # the loop closes it (never from here: a worker may hold locks)
                return False
            if sent <= 0:
                return False
            del self._raw[:sent]
            self.last_activity = time.time()
        return not self._raw

    def writable(self) -> bool:
        return bool(self._raw) or bool(super().writable())  # type: ignore[misc]

    def handle_write(self) -> None:
        with self._tls_lock:
            flushed = self._send_raw()
        if not flushed and not getattr(self, "will_close", False):
            return  # waitress would close after a last answer whose ciphertext is still waiting here
        super().handle_write()  # type: ignore[misc]

    def check_deadlines(self, now: float) -> None:
        limits = self.limits
        if not self.handshake_done:
            clock = self.request_clock
            if clock is not None and now - clock > limits.header_timeout:
                self.handle_close()  # no TLS session: nothing can be answered, not even a 408
            return
        if self._raw and time.time() - self.last_activity > limits.idle_timeout:
            self.handle_close()  # a client that reads nothing of the answer's last bytes
            return
        super().check_deadlines(now)  # type: ignore[misc]

    def handle_close(self) -> None:
        with self._tls_lock:
            if self.handshake_done and self.socket is not None:
                with contextlib.suppress(ssl.SSLError):
                    self._tls.unwrap()  # close_notify, best effort: the answer's framing says where it ends
                with contextlib.suppress(OSError):
                    self.socket.send(bytes(self._raw) + self._outgoing.read())
        super().handle_close()  # type: ignore[misc]
