"""The optional plain-HTTP port (``HttpRedirectPort``): every request is answered with a redirect to HTTPS.

It is a second waitress server in the plugin (``api_server.ApiServer``: the same connection caps, deadlines
and strict head check) whose request parser answers at the end of the head: ``308 Permanent Redirect`` to
the same target on the HTTPS URL (``ApiPublicBaseUrl`` for ``/api/v1/dicom``, ``PublicBaseUrl`` for the
rest), then the connection closes. No body is read, no request reaches the router or Orthanc, nothing is
proxied: whatever the method, the port gives a client only where to go.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from waitress.parser import ParsingError
from waitress.utilities import Error

from ..config import ConfigError, Settings
from ..core.access import API_PREFIX
from .api_server import ApiServer, Limits, StrictParser, serve_in_thread
from .http_strict import Refusal, check_head

STATUS = 308  # permanent, and the method and body are kept (a POST stays a POST)


def location(target: str, *, api_base: str, public_base: str) -> str:
    """Where ``target`` (an origin-form request target) lives on HTTPS."""
    path = target.split("?", 1)[0]
    base = api_base if (path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX)) and api_base else public_base
    return base.rstrip("/") + target


def redirect_bases(settings: Settings) -> tuple[str, str]:
    """(API base, public base) from the settings; both must be https:// (a redirect to plain HTTP is refused)."""
    public, api = settings.PublicBaseUrl.rstrip("/"), (settings.ApiPublicBaseUrl or settings.PublicBaseUrl)
    for name, url in (("PublicBaseUrl", public), ("ApiPublicBaseUrl", api)):
        if not url.lower().startswith("https://") or any(c in url for c in " \r\n\t"):
            raise ConfigError(f"EhrImaging.HttpRedirectPort needs an https:// {name}, not {url!r}")
    return api.rstrip("/"), public


class RedirectAnswer(Error):  # type: ignore[misc]
    """The one answer of the port: 308 with ``Location`` and a short JSON detail (none to a HEAD)."""

    def __init__(self, where: str, head: bool) -> None:
        super().__init__("this port serves no data: use HTTPS")
        self.code = STATUS
        self.reason = "Permanent Redirect"
        self.location = where
        self.head = head

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        body = b"" if self.head else json.dumps({"detail": self.body, "location": self.location}).encode()
        return (f"{self.code} {self.reason}",
                [("Location", self.location), ("Content-Type", "application/json"), ("Cache-Control", "no-store")],
                body)


class RedirectParser(StrictParser):
    """Reads the head strictly, then answers the redirect (the body, if any, is never read)."""

    api_base = ""
    public_base = ""

    def parse_header(self, header_plus: bytes) -> None:
        self.version = "1.1"
        verdict = check_head(header_plus, sys.maxsize)  # any announced size: it is not read
        if isinstance(verdict, Refusal):
            self.refusal = verdict
            raise ParsingError(verdict.detail)
        target = header_plus.split(b"\r\n", 1)[0].split(b" ")[1].decode("ascii")  # printable ASCII, checked
        self.redirect = RedirectAnswer(location(target, api_base=self.api_base, public_base=self.public_base),
                                       head=verdict.method == "HEAD")
        raise ParsingError("redirect")

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        redirect: RedirectAnswer | None = self.__dict__.get("redirect")
        if redirect is not None and self.error is not None:
            self.error = redirect
        return consumed


def _no_application(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Never called (every request is answered by the parser); if it were, it would still give nothing."""
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]


class RedirectListener:
    """The plain-HTTP port on a daemon thread, until ``stop``."""

    def __init__(self, *, host: str, port: int, api_base: str, public_base: str, limits: Limits,
                 log_error: Callable[[str], None]) -> None:
        parser = type("BoundRedirectParser", (RedirectParser,), {"api_base": api_base, "public_base": public_base})
        self._server = ApiServer(_no_application, host=host, port=port, limits=limits, report=log_error,
                                 parser=parser)

    @classmethod
    def from_settings(cls, settings: Settings, *, log_error: Callable[[str], None]) -> RedirectListener:
        api_base, public_base = redirect_bases(settings)
        limits = Limits(max_body_bytes=0, header_timeout=settings.ApiRequestHeaderTimeoutSeconds,
                        idle_timeout=settings.ApiIdleTimeoutSeconds, max_connections=settings.ApiMaxConnections,
                        per_address=settings.ApiMaxConnectionsPerAddress, threads=1)
        return cls(host=settings.ApiListenAddress, port=settings.HttpRedirectPort, api_base=api_base,
                   public_base=public_base, limits=limits, log_error=log_error)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def start(self) -> None:
        serve_in_thread(self._server, "ehr-http-redirect")

    def stop(self) -> None:
        self._server.close()
        self._server.task_dispatcher.shutdown(timeout=5)
