"""Shared fixtures: the real stack (PostgreSQL + Orthanc with the plugin) on free loopback ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from ehr_stack.procs import free_port
from ehr_stack.stack import REPO, Stack, StackConfig
from ehr_stack.tokens import mint_dev_token

ARTIFACTS = REPO / "test-artifacts"


# Samples are deterministic: build them once per checkout, under var/ (not in git).
SAMPLES_CACHE = REPO / "var" / "test-samples"


def start_stack(var_dir: Path, **overrides: object) -> Stack:
    config = StackConfig(
        var_dir=var_dir, http_port=free_port(), dicom_port=free_port(),
        api_port=free_port(), pg_port=free_port(), stable_age=2,
        samples_dir=SAMPLES_CACHE,
        # A site on US Central time, as the EHR in the matching corpus (its orders carry -05:00 in March).
        extra_settings={"Timezone": "America/Chicago"},
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    stack = Stack(config)
    try:
        stack.start()
    except BaseException:
        # A stack that did not come up leaves nothing running behind it (its PostgreSQL was started first).
        keep_log(stack, f"failed-start-{var_dir.name}")
        stack.stop()
        raise
    return stack


def keep_log(stack: Stack, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    if stack.log_file.exists():
        shutil.copy(stack.log_file, ARTIFACTS / f"{name}-orthanc.log")


def stack_dir() -> Path:
    """A fresh directory the postgres user can reach (pytest's tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ehr-stack-"))
    os.chmod(path, 0o755)
    return path


@contextmanager
def running_stack(name: str, **overrides: object) -> Iterator[Stack]:
    """A stack in a fresh directory, stopped and removed afterwards (its Orthanc log kept as an artefact)."""
    var_dir = stack_dir()
    started = start_stack(var_dir, **overrides)
    try:
        yield started
    finally:
        keep_log(started, name)
        started.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


@contextmanager
def running_second_node(first: Stack, name: str) -> Iterator[Stack]:
    """Another Orthanc node with the plugin on ``first``'s PostgreSQL (Orthanc's index and the plugin's schema)
    and storage, with its settings: a cluster of two (``first`` must use ``index="postgresql"``)."""
    var_dir = stack_dir()
    second = Stack(StackConfig(var_dir=var_dir, http_port=free_port(), dicom_port=free_port(), api_port=free_port(),
                               pg_port=first.config.pg_port, index="postgresql", stable_age=2,
                               node_of=first.config.var_dir, extra_settings=first.config.extra_settings))
    second.start()
    try:
        yield second
    finally:
        keep_log(second, name)
        second.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


def assert_refuses_to_start(name: str, reason: str, **overrides: object) -> None:
    """A stack whose plugin must refuse its configuration: Orthanc exits, serves nothing, logs ``reason``."""
    var_dir = stack_dir()
    config = StackConfig(var_dir=var_dir, http_port=free_port(), dicom_port=free_port(), api_port=free_port(),
                         pg_port=free_port())
    for key, value in overrides.items():
        setattr(config, key, value)
    refused = Stack(config)
    try:
        with pytest.raises(RuntimeError, match="Orthanc exited"):
            refused.start(timeout=30)
        with pytest.raises(requests.ConnectionError):
            requests.get(refused.url + "/system", auth=refused.admin_auth, timeout=5)
        log = refused.log_file.read_text()
        assert "start-up failed" in log and reason in log
    finally:
        keep_log(refused, name)
        refused.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with running_stack("session") as started:
        yield started


class Client:
    """HTTP as the EHR backend calls the plugin: base URL plus a bearer token per role."""

    def __init__(self, stack: Stack, base: str | None = None) -> None:
        self.stack = stack
        self.base = base or stack.url
        self.session = requests.Session()

    def token(self, role: str, subject: str = "tester") -> str:
        return mint_dev_token(self.stack, role=role, subject=subject, ttl_seconds=600)

    def headers(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"} if role else {}

    def request(self, method: str, path: str, role: str | None = None, **kwargs: object) -> requests.Response:
        headers = {**self.headers(role), **dict(kwargs.pop("headers", {}) or {})}  # type: ignore[call-overload]
        return self.session.request(method, self.base + path, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]

    def get(self, path: str, role: str | None = None, **kwargs: object) -> requests.Response:
        return self.request("GET", path, role, **kwargs)


@pytest.fixture(scope="session")
def client(stack: Stack) -> Client:
    """The EHR API through Orthanc's own HTTP port."""
    return Client(stack)


@pytest.fixture(scope="session")
def api(stack: Stack) -> Client:
    """The EHR API through the plugin's own listener (form uploads, query strings on every method)."""
    return Client(stack, stack.api_url)
