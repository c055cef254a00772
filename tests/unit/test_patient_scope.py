"""Patient scope from a token's claims (core/patient_scope.py) and the route table's scope column."""

from __future__ import annotations

from typing import Any

import pytest

from ehr_imaging.api import patient_scope as scope
from ehr_imaging.api.routes import ROUTES
from ehr_imaging.core import auth
from ehr_imaging.core.patient_scope import MAX_PATIENTS, ScopeClaimError, allows, patients_from_claims


def test_unscoped_tokens_stay_unscoped_and_scoped_ones_say_whom() -> None:
    assert patients_from_claims({}, patient_role=False) is None
    assert patients_from_claims({"patient_id": "p-1"}, patient_role=True) == frozenset({"p-1"})
    assert patients_from_claims({"patients": ["p-1", "p-2"]}, patient_role=False) == frozenset({"p-1", "p-2"})
    assert patients_from_claims({"patients": []}, patient_role=False) == frozenset()  # scoped to nobody
    both = patients_from_claims({"patient_id": "p-1", "patients": ["p-2"]}, patient_role=True)
    assert both == frozenset({"p-1", "p-2"})


@pytest.mark.parametrize(("claims", "patient_role"), [
    ({}, True), ({"patient_id": ""}, True), ({"patient_id": 7}, True), ({"patient_id": " p"}, True),
    ({"patients": "p-1"}, False), ({"patients": ["p-1", 2]}, False), ({"patients": ["x\n"]}, False),
    ({"patients": [f"p-{i}" for i in range(MAX_PATIENTS + 1)]}, False), ({"patients": ["x" * 129]}, False),
])
def test_a_scope_that_cannot_be_read_refuses_the_token(claims: dict[str, Any], patient_role: bool) -> None:
    with pytest.raises(ScopeClaimError):
        patients_from_claims(claims, patient_role=patient_role)


def test_a_record_is_seen_when_one_of_its_owners_is_in_scope() -> None:
    assert allows(None, [])  # unscoped: the role rules alone
    assert allows(frozenset({"a"}), ["b", "a"]) and not allows(frozenset({"a"}), ["b", None])
    assert not allows(frozenset(), ["a"]) and not allows(frozenset({"a"}), [])


def test_a_patient_token_is_a_scoped_principal() -> None:
    principal = auth.user_principal({"sub": "p", "exp": 2e9, "role": "patient", "patient_id": "p-1"})
    assert principal.patients == frozenset({"p-1"}) and principal.roles == {"patient"}
    with pytest.raises(auth.AuthError, match="patient_id"):
        auth.user_principal({"sub": "p", "exp": 2e9, "role": "patient"})
    assert auth.user_principal({"sub": "d", "exp": 2e9, "role": "doctor"}).patients is None


def test_every_route_says_what_it_names_and_the_names_fit_its_path() -> None:
    params = {scope.STUDY: "{study_uid}", scope.ORDER: "{order_id}", scope.PATIENT: "{patient_id}",
              scope.INSTANCE: "{sop_instance_uid}", scope.UPLOAD: "{upload_id}"}
    for spec in ROUTES:
        assert isinstance(spec.scope, scope.Names), spec.path
        if spec.scope in params:
            assert params[spec.scope] in spec.path, (spec.path, spec.scope)
        if spec.method == "GET" and not any(p in spec.path for p in params.values()) and "{" not in spec.path:
            # A route reading patient data without naming a record must narrow its list (or refuse).
            assert spec.scope in (scope.NONE, scope.LIST, scope.REFUSED), spec.path
    # The patient role reads, never writes: no group it belongs to uploads, deletes, reconciles or writes orders.
    assert all(auth.PATIENT not in auth.ROLE_GROUPS[g] for g in ("uploading", "deleting", "reconciling",
                                                                  "order-writing", "file-reading"))
