"""What every side-by-side benchmark starts from: a fresh stack on free loopback ports, with or without the plugin
(plain Orthanc 1.10.1 with the same settings), and the sample studies' folder."""

from __future__ import annotations

from ehr_stack.procs import free_port
from ehr_stack.stack import REPO, Stack, StackConfig
from tests.conftest import stack_dir

SAMPLES = REPO / "var" / "test-samples"


def start(with_plugin: bool) -> Stack:
    config = StackConfig(var_dir=stack_dir(), http_port=free_port(), dicom_port=free_port(), api_port=free_port(),
                         pg_port=free_port(), with_plugin=with_plugin)
    stack = Stack(config)
    stack.start()
    return stack
