"""Patient scope: the EHR patients a user token may see, when it says so (pure).

A token may carry a scope in one of two ways, both issued by the EHR:
- the ``patient`` role with a ``patient_id`` claim: a patient portal (the patient's own records);
- a ``patients`` claim listing EHR patient ids: care-team scoping of a clinician, whatever their role.
A token with neither is unscoped (the role rules alone apply, as before). A scoped token sees a record only
when it belongs to one of its patients (an order by its ``patient_id``; a study by its linked order, or by
its PatientID being the MRN of one of the patient's orders, as the study queries define "a patient's
studies"). Which routes check what is in the route table (api/routes.py, api/patient_scope.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PATIENT_ROLE = "patient"
MAX_PATIENTS = 1000  # a care team's list; a longer one is refused, not cut
MAX_ID_LENGTH = 128


class ScopeClaimError(ValueError):
    """The token's patient scope cannot be read: the token is refused (never treated as unscoped)."""


def patients_from_claims(claims: Mapping[str, Any], *, patient_role: bool) -> frozenset[str] | None:
    """The token's patients, or None for an unscoped token. A ``patient`` token must name its patient."""
    found: set[str] = set()
    scoped = False
    if patient_role:
        scoped = True
        own = claims.get("patient_id")
        if not isinstance(own, str) or not _valid_id(own):
            raise ScopeClaimError("a patient token must carry its patient_id")
        found.add(own)
    if "patients" in claims:
        scoped = True
        listed = claims["patients"]
        if not isinstance(listed, list) or not all(_valid_id(p) for p in listed):
            raise ScopeClaimError("patients: must be a list of EHR patient ids")
        if len(listed) > MAX_PATIENTS:
            raise ScopeClaimError(f"patients: at most {MAX_PATIENTS} patient ids")
        found.update(listed)
    return frozenset(found) if scoped else None


def allows(patients: frozenset[str] | None, owners: Iterable[str | None]) -> bool:
    """Whether a caller with this scope sees a record belonging to ``owners`` (its EHR patient ids)."""
    return patients is None or any(owner in patients for owner in owners if owner)


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.strip() == value and value.isprintable()
