"""Who may act on a caller's own things (pure): the viewer tokens they asked for, their ZIP upload jobs, the
files they declared for offline sync. Their owner, or an admin; anyone else is told what the route says
(``Forbidden`` for a token, the same ``NotFound`` as for none for jobs and offline uploads)."""

from __future__ import annotations

from .auth import Principal


def owner_or_admin(owner: str, caller: Principal) -> bool:
    """The caller made it (same subject), or is an admin."""
    return caller.subject == owner or caller.is_admin
