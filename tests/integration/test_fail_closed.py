"""A plugin that cannot start leaves Orthanc closed, not open (Orthanc's own authentication is off)."""

from __future__ import annotations

import shutil

import pytest
import requests

from ehr_stack.procs import free_port
from ehr_stack.stack import Stack, StackConfig
from tests.conftest import keep_log, stack_dir

pytestmark = pytest.mark.integration


def test_a_misconfigured_plugin_keeps_orthanc_closed() -> None:
    """Observed with orthanc-python 4.0: an exception at load stops Orthanc (exit 255), so nothing is served.
    The plugin also puts a deny-everything filter in force before it sets anything up, in case a runtime
    ever logs such an error and carries on."""
    var_dir = stack_dir()
    # CoerceTags without OverwriteInstances is refused at start-up.
    stack = Stack(StackConfig(var_dir=var_dir, http_port=free_port(), dicom_port=free_port(),
        api_port=free_port(), pg_port=free_port(),
                              extra_settings={"CoerceTags": True}))
    try:
        with pytest.raises(RuntimeError, match="Orthanc exited"):
            stack.start(timeout=20)
        with pytest.raises(requests.ConnectionError):
            requests.get(stack.url + "/system", auth=stack.admin_auth, timeout=5)
        log = stack.log_file.read_text()
        assert "start-up failed" in log and "OverwriteInstances" in log
    finally:
        keep_log(stack, "fail-closed")
        stack.stop()
        shutil.rmtree(var_dir, ignore_errors=True)
