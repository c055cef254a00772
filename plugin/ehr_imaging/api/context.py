"""What every route handler receives besides its request: the services and the API's own workers.

Handlers are module-level functions ``handler(api, request) -> Response``; ``api/routes.py`` binds them to
one ``Api`` built at start-up, so a handler is importable and testable with any ``Api`` it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..app import uploading
from ..app.access_log import AccessLog
from ..app.image_urls import SignedImages
from ..app.token_revocations import RevocationList
from ..services import Services
from .downloads import DownloadSlots
from .router import Router


@dataclass(frozen=True)
class Api:
    services: Services
    revocations: RevocationList  # viewer tokens revoked (the revoke route adds to it at once)
    jobs: uploading.JobRunner  # large ZIP uploads, on this node's worker thread
    downloads: DownloadSlots  # study ZIPs sent at once, both ports together
    router: Router  # the routes themselves (the OpenAPI document describes them)
    signed_images: SignedImages  # judges and counts each use of a signed image URL (the HTTP filter shares it)

    @classmethod
    def build(cls, services: Services, revocations: RevocationList, router: Router,
              access_log: AccessLog | None = None) -> Api:
        """Built, not started: the composition root (plugin.py) starts the job worker once the schema is there.
        ``access_log``: the viewer access audit (the viewer gate's); none: uses are not counted (tests)."""
        jobs = uploading.JobRunner(services)
        signed = SignedImages(services, revocations, access_log or AccessLog(lambda counts: None))
        return cls(services, revocations, jobs, DownloadSlots(int(services.settings.MaxConcurrentDownloads)), router,
                   signed)
