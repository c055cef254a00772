"""Fixtures of the integration tests that several modules share."""

from __future__ import annotations

import pytest

from tests.conftest import Client
from tests.integration.viewer_helpers import StoredStudy, store_study


@pytest.fixture(scope="session")
def two_studies(client: Client, tmp_path_factory: pytest.TempPathFactory) -> tuple[StoredStudy, StoredStudy]:
    """Studies A and B, each of its own patient and linked to its own order (uploaded, so stored at once)."""
    return (store_study(client, tmp_path_factory.mktemp("a")), store_study(client, tmp_path_factory.mktemp("b")))
