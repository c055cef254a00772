"""Development tokens, signed with the stack's HS256 secret. Production tokens come from the EHR's IdP."""

from __future__ import annotations

from ehr_imaging.core.auth import ALL_ROLES, mint_token

from .stack import Stack


def mint_dev_token(stack: Stack, *, role: str, subject: str, ttl_seconds: int) -> str:
    if role not in ALL_ROLES:
        raise SystemExit(f"unknown role {role!r}; one of {', '.join(sorted(ALL_ROLES))}")
    return mint_token(
        secret=stack.secrets.jwt_secret, issuer=stack.settings_value("JwtIssuer"),
        audience=stack.settings_value("JwtAudience"), subject=subject, roles=[role], ttl_seconds=ttl_seconds,
    )
