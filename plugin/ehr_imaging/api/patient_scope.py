"""What each route's request names, for a patient-scoped caller (core/patient_scope.py): one column of the
route table, checked before the handler runs (app/patient_scope.py answers 404 or 403).

An unscoped token passes every check untouched. A route whose records the handler must narrow itself (a list,
or what a request body names) says so, and its handler reads ``request.principal.patients``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from ..app import patient_scope as checks
from ..core import errors
from .context import Api
from .router import Request


class Names(enum.Enum):
    NONE = "no patient's records (the caller's own files, jobs, tokens; health; sign-in)"
    STUDY = "a study (path study_uid)"
    ORDER = "an order (path order_id)"
    PATIENT = "a patient (path patient_id)"
    INSTANCE = "an instance (path sop_instance_uid)"
    UPLOAD = "an upload row (path upload_id)"
    LIST = "a list, narrowed by the handler to the caller's patients"
    BODY = "what the body names, checked by the handler"
    REFUSED = "records of any patient: refused to scoped tokens"


NONE, STUDY, ORDER, PATIENT, INSTANCE, UPLOAD, LIST, BODY, REFUSED = tuple(Names)


def check(names: Names, api: Api, request: Request) -> None:
    """Refuse a scoped caller's request for a record outside its scope (nothing for unscoped callers)."""
    patients = request.principal.patients if request.principal is not None else None
    if patients is None or names in (NONE, LIST, BODY):
        return
    params = request.params
    step: dict[Names, Callable[[], None]] = {
        STUDY: lambda: checks.check_studies(api.services, patients, [params["study_uid"].strip()]),
        ORDER: lambda: checks.check_order(api.services, patients, params["order_id"].strip()),
        PATIENT: lambda: checks.check_patient(patients, params["patient_id"].strip()),
        INSTANCE: lambda: checks.check_instance(api.services, patients, params["sop_instance_uid"].strip()),
        UPLOAD: lambda: checks.check_upload(api.services, patients, params["upload_id"]),  # as the route reads it
    }
    if names is REFUSED:
        raise errors.Forbidden("not available to a token scoped to patients")
    step[names]()
