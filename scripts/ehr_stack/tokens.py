"""Development tokens, signed with the stack's HS256 secret. Production tokens come from the EHR's IdP."""

from __future__ import annotations

from typing import Any

from ehr_imaging.core.auth import ALL_ROLES, PATIENT, mint_token

from .stack import Stack


def mint_dev_token(stack: Stack, *, role: str, subject: str, ttl_seconds: int,
                   patient_id: str | None = None, patients: list[str] | None = None) -> str:
    """A development token for one role; ``patient_id`` (a patient token's own patient: the subject unless
    given) and ``patients`` (a care team's patients) make it patient-scoped (README "Patient-scoped tokens")."""
    if role not in ALL_ROLES:
        raise SystemExit(f"unknown role {role!r}; one of {', '.join(sorted(ALL_ROLES))}")
    scope: dict[str, Any] = {}
    if role == PATIENT or patient_id is not None:
        scope["patient_id"] = patient_id or subject
    if patients is not None:
        scope["patients"] = patients
    return mint_token(
        secret=stack.secrets.jwt_secret, issuer=stack.settings_value("JwtIssuer"),
        audience=stack.settings_value("JwtAudience"), subject=subject, roles=[role], ttl_seconds=ttl_seconds,
        extra=scope,
    )
