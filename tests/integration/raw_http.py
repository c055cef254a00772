"""Raw-socket helpers for the API port's tests (deadlines, slow clients)."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass


def until_closed(sock: socket.socket, send: bytes, seconds: float) -> tuple[bytes, float]:
    """Send ``send`` about once a second until the server closes; what it answered and when. Once an answer has
    begun, only read (another write to a closing server resets the connection before the answer's last bytes,
    e.g. a body in a TLS record of its own, can be read)."""
    started, received = time.monotonic(), b""
    while time.monotonic() - started < seconds:
        try:
            if not received:
                sock.sendall(send)
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


@dataclass(frozen=True)
class Endpoint:
    """A loopback port, plain or TLS (``tls``: the client's context, trusting the test CA)."""

    port: int
    tls: ssl.SSLContext | None = None

    def connect(self, timeout: float = 5, source: str = "127.0.0.1") -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout, source_address=(source, 0))
        return self.tls.wrap_socket(sock, server_hostname="127.0.0.1") if self.tls else sock
