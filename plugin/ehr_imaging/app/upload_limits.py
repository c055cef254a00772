"""The upload rate limit: each caller (token subject) gets ``UploadRequestsPerMinute`` requests and
``UploadMegabytesPerMinute`` megabytes a minute on the upload routes (the route table marks them
``rate_limited``), on this node. Above it: ``errors.RateLimited`` (429 + Retry-After), before anything is
read or stored; counted in the metrics."""

from __future__ import annotations

from ..core import errors, metrics
from ..core.auth import Principal
from ..core.rate_limit import MB
from ..services import Services


def admit_upload(services: Services, caller: Principal, size: int, consume: bool) -> None:
    """Admit one upload request of ``size`` bytes from ``caller`` or raise ``errors.RateLimited``;
    ``consume`` False only looks (the API port asks from the request head, before the body is read)."""
    limiter = services.upload_limiter
    refusal = limiter.admit(caller.subject, size, consume=consume)
    if refusal is None:
        return
    services.metrics.count(metrics.UPLOADS_RATE_LIMITED)
    if refusal.limit == "requests":
        allowance = f"{limiter.requests_per_minute} upload requests"
    else:
        allowance = f"{limiter.bytes_per_minute // MB} MB of uploads"
    raise errors.RateLimited(f"rate limit: {allowance} per minute per caller on this node; nothing was stored;"
                             f" retry after {refusal.retry_after_seconds} s", refusal.retry_after_seconds)
