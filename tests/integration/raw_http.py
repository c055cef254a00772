"""Raw-socket helpers for the API port's tests (deadlines, slow clients)."""

from __future__ import annotations

import socket
import time


def until_closed(sock: socket.socket, send: bytes, seconds: float) -> tuple[bytes, float]:
    """Send ``send`` about once a second until the server closes; what it answered and when."""
    started, received = time.monotonic(), b""
    while time.monotonic() - started < seconds:
        try:
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
