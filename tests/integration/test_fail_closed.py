"""A plugin that cannot start leaves Orthanc closed, not open (Orthanc's own authentication is off)."""

from __future__ import annotations

import pytest

from tests.conftest import assert_refuses_to_start

pytestmark = pytest.mark.integration


def test_a_misconfigured_plugin_keeps_orthanc_closed() -> None:
    """Observed with orthanc-python 4.0: an exception at load stops Orthanc (exit 255), so nothing is served.
    The plugin also puts a deny-everything filter in force before it sets anything up, in case a runtime
    ever logs such an error and carries on."""
    # CoerceTags without OverwriteInstances is refused at start-up.
    assert_refuses_to_start("fail-closed", "OverwriteInstances", extra_settings={"CoerceTags": True})
