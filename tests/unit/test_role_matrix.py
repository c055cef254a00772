"""The role matrix: every route names one role group of core/auth.py, the README's tables are the router's, and the
seed plan's rules hold (a technician reads nothing stored)."""

from __future__ import annotations

import re

import pytest

from ehr_imaging.api.router import ANY_ROLE, PUBLIC
from ehr_imaging.core import auth
from tests import role_matrix
from tests.role_matrix import Entry

HINT = "README role matrix is stale: PYTHONPATH=scripts:plugin:. .venv/bin/python -m tests.role_matrix --write"


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    return role_matrix.entries()


def test_every_route_names_exactly_one_role_group(entries: list[Entry]) -> None:
    assert len(entries) >= 40
    assert {e.group for e in entries} <= {"public", "any role", *auth.ROLE_GROUPS}
    with pytest.raises(ValueError, match="not exactly one group"):
        role_matrix.group_of(frozenset({auth.DOCTOR, auth.TECHNICIAN}))  # an ad hoc list is refused
    assert role_matrix.group_of(PUBLIC) == "public" and role_matrix.group_of(ANY_ROLE) == "any role"


def test_no_two_groups_are_the_same_set_of_roles() -> None:
    sets = [frozenset(members) for members in auth.ROLE_GROUPS.values()]
    assert len(set(sets)) == len(sets)
    assert all(members <= auth.ALL_ROLES for members in sets)


def test_the_readme_matrix_is_generated_from_the_router(entries: list[Entry]) -> None:
    text = role_matrix.README.read_text(encoding="utf-8")
    assert role_matrix.readme_section(text) == role_matrix.render(entries), HINT


def _who(cell: str, previous: str) -> str:
    """A `who` cell of the README's API table as a group name, or the roles it spells out, sorted."""
    cell = cell.strip()
    if cell == "same":
        return previous
    first = re.split(r"[ (,]", cell, maxsplit=1)[0]
    if cell == "any role" or first in ("public", *auth.ROLE_GROUPS):
        return "any role" if cell == "any role" else first
    words = set(re.findall(r"[a-z-]+", cell.split("(")[0]))
    roles = frozenset(words & auth.ALL_ROLES)
    return role_matrix.group_of(roles) if roles else cell


def test_the_api_table_says_the_same_as_the_router(entries: list[Entry]) -> None:
    """The `who` column of the README's API table (free text) agrees with each route's group."""
    groups = {(e.method, e.template): e.group for e in entries}
    text = role_matrix.README.read_text(encoding="utf-8")
    api = text[text.index("| method | path | who | answer |"):]
    api = api[:api.index("\n\n")]
    checked, previous = 0, ""
    for line in api.splitlines()[2:]:
        method, path, who = (part.strip() for part in re.split(r"(?<!\\)\|", line.strip("|"))[:3])
        template = re.match(r"`([^`?]+)", path)
        assert template is not None, line
        previous = _who(who, previous)
        assert groups[(method, template.group(1))] == previous, f"README API table: {line[:120]}"
        checked += 1
    assert checked >= 40


def test_the_seed_plan_rules() -> None:
    assert {auth.DOCTOR, auth.TECHNICIAN} <= set(auth.UPLOADING)
    assert set(auth.DELETING) == {auth.ADMIN, auth.RADIOLOGIST}
    assert {auth.DOCTOR, auth.NURSE, auth.RADIOLOGIST} <= set(auth.VIEWING)
    assert all(auth.ADMIN in members for members in auth.ROLE_GROUPS.values())
    assert auth.TECHNICIAN not in auth.DELETING and auth.NURSE not in auth.UPLOADING


def test_whoever_reads_stored_data_holds_a_viewing_role() -> None:
    for group in (auth.AUDITING, auth.RECONCILING, auth.DELETING):
        assert set(group) <= set(auth.VIEWING), group


def test_a_technician_reads_nothing_stored(entries: list[Entry]) -> None:
    """The review's finding: technicians were refused /studies but read orders, tags, match status, the upload
    log and the unmatched queue, and linked studies. Now they reach only the upload and file routes."""
    allowed = {(e.method, e.template) for e in entries if e.roles is None or auth.TECHNICIAN in e.roles}
    groups = {e.group for e in entries if (e.method, e.template) in allowed}
    assert groups == {"public", "any role", "uploading", "file-reading"}
    assert auth.TECHNICIAN not in auth.VIEWING and auth.TECHNICIAN not in auth.AUDITING
    for method, template in [("GET", "/api/v1/dicom/orders"), ("GET", "/api/v1/dicom/orders/{order_id}"),
                             ("GET", "/api/v1/dicom/tags/{study_uid}"), ("GET", "/api/v1/dicom/uploads"),
                             ("GET", "/api/v1/dicom/studies/{study_uid}/match"), ("GET", "/api/v1/dicom/unmatched"),
                             ("POST", "/api/v1/dicom/studies/{study_uid}/link"),
                             ("POST", "/api/v1/dicom/studies/{study_uid}/unlink")]:
        assert (method, template) not in allowed, (method, template)
