"""The use cases (``ehr_imaging.app``) without Orthanc: a real PostgreSQL (only it, on a free port, migrated as
the plugin migrates at start-up) and an in-memory Orthanc (``tests.fakes.orthanc``), wired by the composition
root's own ``bootstrap.build_services``. Seconds instead of a stack; each test gets a fresh Orthanc."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ehr_imaging.bootstrap import build_services
from ehr_imaging.config import Settings
from ehr_imaging.core.holds import StudyHolds
from ehr_imaging.services import Services
from ehr_imaging.store import migrations
from ehr_stack.postgres import PostgresCluster
from ehr_stack.procs import free_port
from tests.conftest import stack_dir
from tests.fakes.orthanc import FakeOrthanc

SETTINGS = Settings(JwtSecret="app-tests-secret-0123456789abcdef", Timezone="America/Chicago", DatabasePoolSize=2,
                    DatabaseConnectTimeoutSeconds=5)
URL = "http://127.0.0.1:9/ehr-events"  # an event endpoint never reached: the tests hand workers their own sender
SECRET = "app-tests-event-secret-0123456789"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster with the plugin's roles, for this session only."""
    root = stack_dir()
    cluster = PostgresCluster(root / "postgres", free_port(), secrets.token_urlsafe(16),
                              plugin_password=secrets.token_urlsafe(16), orthanc_password=secrets.token_urlsafe(16))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def base_services(postgres: PostgresCluster) -> Iterator[Services]:
    """The plugin's services as plugin.py builds them (its own database role), on the migrated schema."""
    services = build_services(dataclasses.replace(SETTINGS, DatabaseUrl=postgres.plugin_url), FakeOrthanc())
    migrations.migrate(services.engine, SETTINGS.DatabaseSchema)
    try:
        yield services
    finally:
        services.engine.dispose()


@pytest.fixture(scope="session")
def event_services(postgres: PostgresCluster, base_services: Services) -> Iterator[Services]:
    """Services with an event endpoint configured (an engine of their own: base_services' writes no events)."""
    settings = dataclasses.replace(SETTINGS, DatabaseUrl=postgres.plugin_url, EventRetryBaseSeconds=60,
                                   EventEndpoints=[{"url": URL, "secret": SECRET}])
    services = build_services(settings, FakeOrthanc())
    try:
        yield services
    finally:
        services.engine.dispose()


@dataclass
class Handed:
    """What the use cases handed to the ingest worker (plugin.py connects these to it)."""

    later: list[str] = field(default_factory=list)  # Services.ingest_later: studies to record once possible
    revisited: list[str] = field(default_factory=list)  # Services.revisit_study: linked outside ingest


@pytest.fixture()
def handed() -> Handed:
    return Handed()


@pytest.fixture()
def orthanc() -> FakeOrthanc:
    return FakeOrthanc()


@pytest.fixture()
def services(base_services: Services, orthanc: FakeOrthanc, handed: Handed) -> Services:
    """The session's services with this test's own Orthanc, holds and worker hand-offs."""
    return dataclasses.replace(base_services, pacs=orthanc, holds=StudyHolds(), ingest_later=handed.later.append,
                               revisit_study=handed.revisited.append)
