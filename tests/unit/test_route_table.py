"""The route table (api/routes.py ROUTES) is the one list of the EHR API's routes."""

from __future__ import annotations

import inspect
from unittest import mock

from ehr_imaging.api.router import Router
from ehr_imaging.api.routes import ROUTES, register_all
from ehr_imaging.api.schemas import CONTRACTS
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


def test_every_route_has_its_contract_and_no_contract_is_for_a_route_not_served() -> None:
    assert set(CONTRACTS) <= set(KEYS)
    # The admin session's browser routes answer a redirect and a cookie, not JSON: no contract to check.
    assert set(KEYS) - set(CONTRACTS) == {("GET", "/api/v1/dicom/admin/login"), ("POST", "/api/v1/dicom/admin/logout")}
