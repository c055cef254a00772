"""The orders a batch of studies could be linked to (or moved to in progress) are found from indexes of
``imaging_orders``, never by reading the whole table: the ingest worker asks once per batch of up to
IngestBatchSize studies (store/link_candidates.py), and a hospital keeps every order it ever placed.

The plans are read as a hospital's database would plan them: 20,000 orders inserted and analysed inside the
test's transaction (rolled back after), so the planner's choice is the one it makes at scale, not the scan it
prefers on a nearly empty table.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.engine import Compiled

from ehr_imaging.store import link_candidates
from ehr_stack.stack import Stack
from tests.integration.helpers import schema_connection

pytestmark = pytest.mark.integration

KEYS = [link_candidates.candidate_key(f"1.2.3.{n}", f"acc-{n}", f"mrn-{n}", f"ORD-{n}" if n % 2 else None)
        for n in range(50)]


@pytest.fixture(scope="module")
def connection(stack: Stack) -> Iterator[Connection]:
    with schema_connection(stack) as conn:
        yield conn


ORDERS = 20_000


def plan(conn: Connection, condition: link_candidates.Condition) -> str:
    compiled: Compiled = link_candidates.statement(KEYS, condition).compile(dialect=conn.dialect)
    try:
        conn.execute(text("INSERT INTO imaging_orders (order_id, accession_number, mrn, patient_id, status)"
                          " SELECT 'PLAN-' || n, 'PACC-' || n, 'PMRN-' || (n % 5000), 'p-' || (n % 5000),"
                          " CASE WHEN n % 3 = 0 THEN 'scheduled' ELSE 'completed' END"
                          " FROM generate_series(1, :orders) AS n"), {"orders": ORDERS})
        conn.execute(text("ANALYZE imaging_orders"))
        rows = conn.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params).all()
    finally:
        conn.rollback()
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("condition", [link_candidates.CANDIDATE, link_candidates.SCHEDULED_WITH_BOTH],
                         ids=["link candidates", "scheduled orders of first instances"])
def test_a_batch_finds_its_orders_from_indexes(connection: Connection, condition: link_candidates.Condition) -> None:
    explained = plan(connection, condition)
    assert "Seq Scan on imaging_orders" not in explained, explained
    # Looked up per study by its accession (an index of upper(accession_number)), not read whole in some order.
    assert "Index Cond: (upper(accession_number) = k.acc)" in explained, explained
