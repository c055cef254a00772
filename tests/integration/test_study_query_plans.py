"""GET /studies stays an index lookup at a hospital's scale: every filter the EHR uses to find a patient's or an
order's studies, and the newest-first page itself, is answered from an index of ``study_links``, never by reading
the whole table (at 50,000 studies a scan made ``GET /studies?patient_id=`` take 94 ms; issue 12).

PostgreSQL's planner prefers a scan on a small table, so the plans are read with sequential scans priced out
(``enable_seqscan = off``): a statement that *can* use an index then does, and one that cannot still scans and
fails here. The patient-name search is a contains-match (``%family%given%``), answered from a trigram index
(pg_trgm, installed by orthanc-config/postgres-roles.sql as the test stack's PostgreSQL starts).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import Compiled
from sqlalchemy.orm import Session

from ehr_imaging.store import db, migrations, name_search
from ehr_imaging.store.studies import StudyFilter, search_statements
from ehr_stack.stack import Stack
from tests.integration.helpers import schema_connection

pytestmark = pytest.mark.integration

INDEXED_FILTERS = {
    "no filter (newest first)": StudyFilter(),
    "a deep page": StudyFilter(offset=5000),
    "patient_id": StudyFilter(patient_id="6a0f6f0e-0000-4000-8000-000000000001"),
    "patient scope": StudyFilter(patient_scope=frozenset({"6a0f6f0e-0000-4000-8000-000000000001", "another"})),
    "mrn": StudyFilter(mrn="mrn-123"),
    "accession": StudyFilter(accession="acc-123"),
    "order_id": StudyFilter(order_id="ORD-1"),
    "study_uid": StudyFilter(study_uid="1.2.3.4"),
    "modality": StudyFilter(modality="CT"),
    "study date range": StudyFilter(study_date_from=date(2020, 1, 1), study_date_to=date(2020, 12, 31)),
    "order_status": StudyFilter(order_status="completed"),
    "patient_name": StudyFilter(patient_name="doe jo"),
    "patient_name of two letters": StudyFilter(patient_name="jo"),
    "patient_name of short parts": StudyFilter(patient_name="li w"),
}


@pytest.fixture(scope="module", autouse=True)
def settled(stack: Stack) -> None:
    """study_links as autovacuum leaves a settled archive, before any plan is read: statistics, and the visibility
    map set (what index-only scans need)."""
    engine = create_engine(db.normalize_url(stack.postgres.url))
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text('VACUUM ANALYZE "ehr_imaging".study_links'))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def connection(stack: Stack) -> Iterator[Connection]:
    with schema_connection(stack, "SET enable_seqscan = off") as conn:
        yield conn


@pytest.fixture(scope="module")
def planner_defaults(stack: Stack) -> Iterator[Connection]:
    with schema_connection(stack) as conn:
        yield conn


def plan(conn: Connection, statement: object) -> str:
    compiled: Compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    rows = conn.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params).all()
    conn.rollback()
    return "\n".join(row[0] for row in rows)


def name_plan(conn: Connection, where: StudyFilter, statement: object, *, broad: bool = False) -> str:
    """The plan under the settings studies.search gives a name search's transaction (name_search)."""
    name_search.plan_the_search(Session(bind=conn), where.patient_name or "", broad)
    return plan(conn, statement)


@pytest.mark.parametrize(("name", "broad"), [(name, False) for name in sorted(INDEXED_FILTERS)] + [
    (name, True) for name in sorted(INDEXED_FILTERS) if INDEXED_FILTERS[name].patient_name])  # only a name is broad
def test_a_study_search_reads_study_links_from_an_index(connection: Connection, name: str, broad: bool) -> None:
    where = INDEXED_FILTERS[name]
    count, page = search_statements(where, broad_name=broad)
    for label, statement in (("count", count), ("page", page)):
        explained = name_plan(connection, where, statement, broad=broad) if where.patient_name else plan(
            connection, statement)
        assert "Seq Scan on study_links" not in explained, f"{name} ({label}) scans study_links:\n{explained}"


def test_the_newest_first_page_is_read_in_index_order_without_a_sort(connection: Connection) -> None:
    _, page = search_statements(StudyFilter(limit=50))
    explained = plan(connection, page)
    assert "ix_study_links_newest" in explained, explained
    assert "Sort" not in explained, explained


def test_a_search_without_an_order_status_filter_does_not_join_the_orders(connection: Connection) -> None:
    _, page = search_statements(StudyFilter(mrn="mrn-123"))
    assert "imaging_orders" not in plan(connection, page)


def test_the_patient_name_search_counts_from_the_trigram_index(connection: Connection) -> None:
    # (Its page may as well come from the newest-first index, filtered: both are indexes, the planner's choice.)
    where = StudyFilter(patient_name="smith")
    count, _ = search_statements(where)
    explained = name_plan(connection, where, count)
    assert "ix_study_links_patient_name_trgm" in explained, explained
    # Not by walking the whole lowered names' index (it holds the names too: 21 ms that way for 3,444 matches
    # of 100,000, 3.5 ms from the trigrams), which the planner prices lower.
    assert "ix_study_links_patient_name_lower" not in explained, explained


@pytest.mark.parametrize("name", ["j", "jo", "joh", "doe jo"])
def test_a_broad_name_search_counts_from_the_lowered_names_alone(planner_defaults: Connection, name: str) -> None:
    # Matching most studies, its count tests every lowered name in the index and reads no row: at 100,000 studies
    # all matching, 24 ms that way, 51 ms from the pairs, 105 ms from the trigrams. (The planner's own settings
    # but those the search's transaction is given: on this small table it would scan it rather.)
    where = StudyFilter(patient_name=name)
    count, _ = search_statements(where, broad_name=True)
    explained = name_plan(planner_defaults, where, count, broad=True)
    assert "Index Only Scan using ix_study_links_patient_name_lower" in explained, explained


def test_a_name_search_with_few_matches_sorts_them_rather_than_walk_the_newest_first_index(
        connection: Connection) -> None:
    # Misled by its statistics (it guessed many matches), the planner walked the newest-first index testing every
    # name: ~200 ms a page at 100,000 studies for 34 matches, ~17 ms from the trigram index and a sort.
    # (This small table never misleads it: the test checks that no index walk is left to choose, and that the
    # page is still read from the name's index.)
    def index_walks_after(matches: int) -> str:
        name_search.sort_the_matches(Session(bind=connection), matches)
        return str(connection.exec_driver_sql("SHOW enable_indexscan").scalar())

    def plan_cache_mode() -> str:  # a prepared page is planned again under this transaction's settings
        return str(connection.exec_driver_sql("SHOW plan_cache_mode").scalar())

    _, page = search_statements(StudyFilter(patient_name="doe john1234", limit=50))
    assert plan_cache_mode() == "auto"
    assert index_walks_after(name_search.FEW_MATCHES) == "off"
    assert plan_cache_mode() == "force_custom_plan"
    explained = plan(connection, page)  # (rolled back: the setting ends with it)
    assert "ix_study_links_patient_name_trgm" in explained and "ix_study_links_newest" not in explained, explained
    assert "Seq Scan on study_links" not in explained, explained
    assert index_walks_after(name_search.FEW_MATCHES + 1) == "on"  # many matches: the planner's choice
    connection.rollback()


def test_a_name_search_of_one_or_two_letters_reads_the_names_letter_pairs(connection: Connection) -> None:
    # Trigrams cannot answer it (pg_trgm finds no trigram in "jo"): without the letter pairs it read every study.
    for name in ("jo", "li w"):
        where = StudyFilter(patient_name=name)
        count, _ = search_statements(where)
        explained = name_plan(connection, where, count)
        assert "ix_study_links_patient_name_grams" in explained, explained


def test_the_trigram_index_is_made_whenever_pg_trgm_is_installed(stack: Stack) -> None:
    # As the superuser, in one transaction rolled back: without the extension no index (the search scans), and
    # the next start after an administrator installs it makes the index.
    engine = create_engine(db.normalize_url(stack.postgres.url))
    try:
        with engine.connect() as conn:
            conn.execute(text('SET LOCAL search_path TO "ehr_imaging"'))
            conn.execute(text("DROP EXTENSION pg_trgm CASCADE"))  # its index goes with it
            assert migrations.ensure_trigram_index(conn) is False
            assert conn.execute(text("SELECT count(*) FROM pg_indexes WHERE indexname = :i"),
                                {"i": migrations.TRIGRAM_INDEX}).scalar() == 0
            conn.execute(text("CREATE EXTENSION pg_trgm WITH SCHEMA ehr_imaging_ext"))
            assert migrations.ensure_trigram_index(conn) is True
            [indexdef] = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = :i"),
                                      {"i": migrations.TRIGRAM_INDEX}).scalars().all()
            assert "gin (patient_name ehr_imaging_ext.gin_trgm_ops)" in indexdef
            assert migrations.ensure_trigram_index(conn) is True  # idempotent
            conn.rollback()
        assert migrations.has_trigram_index(engine, "ehr_imaging")  # the rollback gave the running index back
    finally:
        engine.dispose()
