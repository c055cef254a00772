"""core.ownership: a caller's own viewer tokens, upload jobs and offline uploads are theirs and admins' only."""

from __future__ import annotations

import pytest

from ehr_imaging.core.auth import ADMIN, DOCTOR, EHR_SERVICE, TECHNICIAN, Principal
from ehr_imaging.core.ownership import owner_or_admin


def caller(subject: str, *roles: str) -> Principal:
    return Principal(subject=subject, roles=frozenset(roles), via="jwt")


def test_the_owner_may_whatever_their_roles() -> None:
    assert owner_or_admin("dr-a", caller("dr-a", DOCTOR))
    assert owner_or_admin("dr-a", caller("dr-a"))


@pytest.mark.parametrize("roles", [(DOCTOR,), (TECHNICIAN,), (EHR_SERVICE,), (DOCTOR, TECHNICIAN), ()])
def test_someone_else_may_not_unless_admin(roles: tuple[str, ...]) -> None:
    assert not owner_or_admin("dr-a", caller("dr-b", *roles))
    assert owner_or_admin("dr-a", caller("dr-b", *roles, ADMIN))


def test_subjects_are_compared_exactly() -> None:
    assert not owner_or_admin("dr-a", caller("DR-A", DOCTOR))
    assert not owner_or_admin("dr-a", caller("dr-a ", DOCTOR))
