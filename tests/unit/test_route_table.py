"""The route table (api/routes.py ROUTES) is the one list of the EHR API's routes."""

from __future__ import annotations

import inspect
from unittest import mock

from ehr_imaging.api.router import Router
from ehr_imaging.api.routes import ROUTES, register_all
from ehr_imaging.api.schemas import JSON, Contract
from ehr_imaging.app import uploading

KEYS = [(spec.method, spec.path) for spec in ROUTES]


def test_each_route_is_listed_once_with_who_may_call_it() -> None:
    assert len(KEYS) == len(set(KEYS))
    assert all(spec.roles and all(isinstance(role, str) for role in spec.roles) for spec in ROUTES)


def test_handlers_are_module_level_functions() -> None:
    for spec in ROUTES:
        assert inspect.isfunction(spec.handler), spec
        assert spec.handler.__qualname__ == spec.handler.__name__, f"{spec.path}: {spec.handler.__qualname__}"
        assert inspect.getmodule(spec.handler).__name__.startswith("ehr_imaging.api."), spec  # type: ignore[union-attr]


def test_the_router_serves_exactly_the_table() -> None:
    router = Router(mock.MagicMock(), lambda message: None)
    with mock.patch.object(uploading.JobRunner, "start"):  # no worker thread in a unit test
        register_all(router, mock.MagicMock(), mock.MagicMock())
    served = sorted((route.method, route.template) for route in router.routes())
    # The OpenAPI document's own route is in the table too.
    assert served == sorted(KEYS)


def test_every_route_has_its_contract_and_the_router_keeps_it() -> None:
    assert all(isinstance(spec.contract, Contract) and spec.contract.answers for spec in ROUTES)
    router = Router(mock.MagicMock(), lambda message: None)
    with mock.patch.object(uploading.JobRunner, "start"):
        register_all(router, mock.MagicMock(), mock.MagicMock())
    contracts = {(route.method, route.template): route.contract for route in router.routes()}
    assert all(contracts[(spec.method, spec.path)] is spec.contract for spec in ROUTES)


def test_only_the_admin_session_routes_answer_no_json() -> None:
    """Every route answers JSON or a documented binary type; the browser sign-in routes redirect or say nothing,
    and IHE Invoke Image Display (a link the EHR opens in a browser) redirects to the viewer."""
    bodiless = {(spec.method, spec.path): spec.contract.answers for spec in ROUTES
                if not any(spec.contract.answers.values())}
    assert bodiless == {("GET", "/api/v1/dicom/admin/login"): {"302": {}},
                        ("POST", "/api/v1/dicom/admin/logout"): {"204": {}},
                        ("GET", "/IHEInvokeImageDisplay"): {"302": {}}}
    assert sum(JSON in answer for spec in ROUTES for answer in spec.contract.answers.values()) > 30
