"""The roles a token may carry and the role groups routes name: who may do what, defined once (pure)."""

from __future__ import annotations

from .patient_scope import PATIENT_ROLE

ADMIN = "admin"
RADIOLOGIST = "radiologist"
DOCTOR = "doctor"
NURSE = "nurse"
TECHNICIAN = "technician"
EHR_SERVICE = "ehr-service"
PATIENT = PATIENT_ROLE  # a patient portal's token: always scoped to its own patient_id (core/patient_scope.py)
ALL_ROLES = frozenset({ADMIN, RADIOLOGIST, DOCTOR, NURSE, TECHNICIAN, EHR_SERVICE, PATIENT})
# Who may do what: the role groups, defined once. Every route of the EHR API names exactly one of them (or is public,
# or open to any role); the README's role matrix is checked against the routes by tests/unit/test_role_matrix.py.
# The seed plan's rules: view = doctor, nurse, radiologist; upload = doctor, technician; delete = admin, radiologist.
# One principle decides the rest: whoever reads stored patient data (demographics, study UIDs, orders, the upload
# log, the reconciliation queue) holds a viewing role, and the audit trail only some of them. A technician uploads
# and works on the files in their hands; the order to upload against comes from the EHR's worklist (or the
# modality worklist), not from this API.
# A patient reads their own records only: every route a viewing or auditing role calls is patient-scoped
# (api/patient_scope.py), so the patient role shares those groups and never sees another patient's.
VIEWING = (DOCTOR, NURSE, RADIOLOGIST, ADMIN, EHR_SERVICE, PATIENT)  # studies, orders, match status, stored tags
AUDITING = (DOCTOR, RADIOLOGIST, ADMIN, EHR_SERVICE, PATIENT)  # the upload log: who uploaded what, tags before edits
UPLOADING = (DOCTOR, TECHNICIAN, RADIOLOGIST, ADMIN, EHR_SERVICE)  # store files (own jobs/offline uploads), edit
FILE_READING = (*UPLOADING, NURSE)  # read the tags of a file the caller sends (nothing stored is read)
DELETING = (ADMIN, RADIOLOGIST)  # delete a study (with a reason), or ask for its deletion when approval is required
RECONCILING = (ADMIN, RADIOLOGIST, EHR_SERVICE)  # the unmatched queue, manual link and unlink
FORCE_LINKING = (ADMIN, RADIOLOGIST)  # a manual link across a patient mismatch (checked inside the link route)
ORDER_WRITING = (EHR_SERVICE, ADMIN)  # create, replace and cancel orders
# Approving (never one's own) or rejecting deletion requests, the deletion log, restoring and purging deleted studies.
ADMIN_ONLY = (ADMIN,)
# The audit timeline: an admin reads every patient's (unless scoped); a patient the audit of their own records
# (who looked at their images: the route narrows it to their patients).
AUDIT_READING = (ADMIN, PATIENT)
# The groups by name (the README's vocabulary). FORCE_LINKING is no route's group.
ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "viewing": VIEWING, "auditing": AUDITING, "uploading": UPLOADING, "file-reading": FILE_READING,
    "deleting": DELETING, "reconciling": RECONCILING, "order-writing": ORDER_WRITING, "admin-only": ADMIN_ONLY,
    "audit-reading": AUDIT_READING,
}
