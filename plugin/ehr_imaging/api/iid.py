"""IHE Invoke Image Display: ``GET /IHEInvokeImageDisplay``, the URL an EHR opens in the user's browser.

Success is a 302 to OHIF on exactly the selected studies (a fresh viewer token in the URL, as every viewer
URL); a request that breaks the profile's rules (400) or that selects nothing (404) is answered with a short
HTML page the user can read, since a browser, not a program, is on the other end. Parsing is core/iid.py,
selecting and minting app/iid.py.
"""

from __future__ import annotations

from html import escape

from ..app import iid as invoking
from ..core import errors, iid
from .context import Api
from .router import Request, Response, status_of

# A URL carrying a token must not leak through the Referer of what the next page loads, nor be cached.
_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
HTML = "text/html; charset=utf-8"


def invoke_image_display(api: Api, request: Request) -> Response:
    """Open the viewer on the studies an IHE IID request selects (302 to OHIF), or a readable page why not."""
    assert request.principal is not None
    try:
        parsed = iid.parse(request.query)
        opened = invoking.open_viewer(api.services, parsed, request.principal.subject, request.patients,
                                      api.services.settings.ViewerTokenMaxTtlSeconds)
    except errors.DomainError as exc:
        status = status_of(exc)
        return page(status, "No matching images" if status == 404 else "This image request cannot be shown",
                    exc.detail)
    return Response(status=302, body=b"", content_type=HTML, headers={**_HEADERS, "Location": opened.url})


def page(status: int, title: str, detail: str) -> Response:
    body = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title></head>"
            f"<body><h1>{escape(title)}</h1><p>{escape(detail)}</p>"
            "<p>IHE Invoke Image Display: requestType=STUDY with studyUID or accessionNumber, or requestType=PATIENT"
            " with patientID.</p></body></html>")
    return Response(status=status, body=body.encode(), content_type=HTML, headers=dict(_HEADERS))
