"""The audit trail at scale, proven by query plans rather than by timing: with 20,000 events on
MariaDB, every query the changelist, its filters, its search, its date hierarchy, the export and
the timeline run reads an index range and stops after the page (MariaDB's ANALYZE reports the rows
it actually read), and the number of queries per page does not depend on the journal's size.

A million rows would prove the same plans, only slower to load; timing them at that size is the
benchmark's job (docs/audit.md, "Scale", has what to measure)."""

from __future__ import annotations

import io
import json
import random
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import audit.admin
from audit.models import AuditEvent
from tests.plans import analyze, tables

pytestmark = pytest.mark.mariadb

EVENTS = 20_000
PAGE = 100
TRAIL = "/admin/audit/auditevent/"
EXPORT = "/admin/audit/auditevent/export/"
RECORD_TYPES = ["clocking", "inspection", "job_card", "incident", "stock_count"]
VERBS = ["record.created", "record.updated", "record.merged", "record.deleted", "review.opened", "review.decided"]


@pytest.fixture(scope="module")
def big_journal(django_db_setup: None, django_db_blocker: Any) -> Any:
    """20,000 events over 60 days: fifty devices, two teams, five record types, an admin edit
    now and then. Inserted once for the module and committed (MariaDB's ANALYZE TABLE, which the
    plans need, commits anyway); flushed afterwards as a transactional test would be. Their
    hashes do not chain: these tests are about plans, not verification."""
    rng = random.Random(6)
    with django_db_blocker.unblock():
        call_command("seed_demo", stdout=io.StringIO())
        devices = [uuid.uuid4() for _ in range(50)]
        users = list(User.objects.all())
        start = timezone.now() - timedelta(days=60)
        step = timedelta(days=60) / EVENTS
        records = [uuid.uuid4() for _ in range(4000)]
        rows = []
        for seq in range(1, EVENTS + 1):
            admin_edit = seq % 97 == 0
            rows.append(
                AuditEvent(
                    seq=seq,
                    occurred_at=start + seq * step,
                    recorded_at=start + seq * step,
                    actor=rng.choice(users),
                    actor_username="x",
                    device_id=None if admin_edit else rng.choice(devices),
                    source="admin" if admin_edit else "device",
                    verb="team.changed" if admin_edit else rng.choice(VERBS),
                    object_type="team" if admin_edit else "record",
                    object_id="1" if admin_edit else str(rng.choice(records)),
                    record_type="" if admin_edit else rng.choice(RECORD_TYPES),
                    team=rng.choice(["north", "south"]),
                    action_id=None if admin_edit else uuid.uuid4(),
                    changes={"counted": [seq, seq + 1]},
                    prev_hash=f"{seq - 1:064x}",
                    hash=f"{seq:064x}",
                )
            )
        AuditEvent.objects.bulk_create(rows, batch_size=2000)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE TABLE {AuditEvent._meta.db_table}")
            cursor.fetchall()
        yield {"devices": devices, "records": records}
        call_command("flush", interactive=False, verbosity=0, reset_sequences=False)


def audit_queries(client: Client, params: dict[str, Any]) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(TRAIL, params)
    assert response.status_code == 200, response
    return [q["sql"] for q in captured.captured_queries if "`audit_auditevent`" in q["sql"]]


def assert_reads_an_index_range(sql: str, *, at_most: int) -> dict[str, Any]:
    plan = analyze(sql)
    [access] = [t for t in tables(plan) if t["table_name"] == "audit_auditevent"]
    text = json.dumps(plan)
    assert access["access_type"] != "ALL", f"full table scan:\n{sql}\n{text}"
    assert "filesort" not in text, f"sorts every matching row:\n{sql}\n{text}"
    assert access["r_rows"] <= at_most, f"read {access['r_rows']} rows:\n{sql}\n{text}"
    return access


@pytest.fixture
def mark(demo: None) -> Client:
    client = Client()
    client.force_login(User.objects.get(username="mark"))
    return client


def page_query(queries: list[str]) -> str:
    [sql] = [q for q in queries if re.search(r"LIMIT 101\b", q)]
    return sql


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"p": 3},
        {"verb": "review.decided"},
        {"source__exact": "admin"},
        {"team": "south"},
        {"record_type": "incident"},
        {"team": "north", "verb": "record.created"},
    ],
    ids=["default", "page-3", "verb", "source", "team", "record-type", "team+verb"],
)
def test_each_changelist_page_reads_an_index_range_and_stops(big_journal, mark, params) -> None:
    queries = audit_queries(mark, params)
    assert not [q for q in queries if "COUNT(" in q.upper()]
    offset = (params.get("p", 1) - 1) * PAGE
    filters = len(set(params) - {"p"})
    # One filter: its (filter, seq) index yields exactly the page (and the one row that says
    # there is a next page). Two: one index, the other condition checked on the rows it yields.
    assert_reads_an_index_range(page_query(queries), at_most=(offset + PAGE + 1) * (3 if filters > 1 else 1))


def test_the_device_and_actor_filters_read_their_index(big_journal, mark) -> None:
    device = big_journal["devices"][0]
    alice = User.objects.get(username="alice")
    for params in ({"device_id": str(device)}, {"actor__id__exact": alice.pk}):
        access = assert_reads_an_index_range(page_query(audit_queries(mark, params)), at_most=PAGE + 1)
        assert access["key"] in ("audit_device_seq", "audit_actor_seq"), access


def test_search_by_record_or_action_id_reads_only_the_matches(big_journal, mark) -> None:
    record = big_journal["records"][0]
    matches = AuditEvent.objects.filter(object_id=str(record)).count()
    action = AuditEvent.objects.filter(action_id__isnull=False).values_list("action_id", flat=True).first()
    for term in (str(record), str(action), "#1234"):
        queries = audit_queries(mark, {"q": term})
        sql = next(q for q in queries if "LIMIT" in q and "`seq` DESC" in q)
        plan = analyze(sql)
        [access] = [t for t in tables(plan) if t["table_name"] == "audit_auditevent"]
        assert access["access_type"] != "ALL", json.dumps(plan)
        # A seq is a const lookup of the unique index (ANALYZE reports no r_rows for those).
        assert access["access_type"] == "const" or access["r_rows"] <= matches + 1, json.dumps(plan)


@pytest.mark.parametrize("level", ["year", "month", "day", "month+verb"])
def test_a_date_of_the_date_hierarchy_reads_its_range_backwards_and_stops(big_journal, mark, level) -> None:
    when = timezone.now() - timedelta(days=40)
    params: dict[str, Any] = {"recorded_at__year": when.year}
    if level != "year":
        params["recorded_at__month"] = when.month
    if level == "day":
        params["recorded_at__day"] = when.day
    if level == "month+verb":
        params["verb"] = "review.decided"
    queries = audit_queries(mark, params)
    # One verb in six: the range read checks the verb on each row it reads.
    assert_reads_an_index_range(page_query(queries), at_most=(PAGE + 1) * (12 if "verb" in params else 1))


def test_the_filter_choices_and_date_hierarchy_never_scan_the_table(big_journal, mark) -> None:
    queries = audit_queries(mark, {})
    support = [q for q in queries if "LIMIT 101" not in q]
    assert support, "expected the filter and date queries"
    for sql in support:
        plan = analyze(sql)
        for access in tables(plan):
            if access["table_name"] != "audit_auditevent":
                continue
            text = json.dumps(plan)
            # DISTINCT verb/team/record_type: a loose index scan over its (x, seq) index; the
            # date span: MIN/MAX straight from the recorded_at index.
            assert access["r_rows"] <= 50 or "Select tables optimized away" in text, f"{sql}\n{text}"


def test_the_page_costs_the_same_queries_at_20000_events(big_journal, mark, django_assert_max_num_queries) -> None:
    with django_assert_max_num_queries(12):
        assert mark.get(TRAIL).status_code == 200


@pytest.mark.parametrize(
    "params",
    [{"team": "north"}, {"recorded_at__year": "{year}", "recorded_at__month": "{month}"}],
    ids=["team", "month"],
)
def test_the_export_reads_each_chunk_through_an_index(big_journal, mark, params, monkeypatch) -> None:
    monkeypatch.setattr(audit.admin, "EXPORT_CHUNK", 500)
    when = timezone.now() - timedelta(days=40)
    params = {k: v.format(year=when.year, month=when.month) for k, v in params.items()}
    with CaptureQueriesContext(connection) as captured:
        response = mark.get(EXPORT, params)
        rows = b"".join(response.streaming_content).count(b"\n") - 1
    chunks = [q["sql"] for q in captured.captured_queries if "LIMIT 500" in q["sql"]]
    assert rows > 500 and len(chunks) == rows // 500 + 1
    for sql in chunks:
        assert_reads_an_index_range(sql, at_most=500)
    fetches = [q["sql"] for q in captured.captured_queries if "`seq` IN (" in q["sql"]]
    assert len(fetches) == len(chunks)
    assert_reads_an_index_range(fetches[0], at_most=500)
    [bounds] = [q["sql"] for q in captured.captured_queries if "MAX(" in q["sql"] and "`seq`" in q["sql"]]
    for access in tables(analyze(bounds)):
        assert access["access_type"] != "ALL"


def test_the_timeline_reads_one_record_through_its_index(big_journal) -> None:
    record = big_journal["records"][0]
    sql, params = (
        AuditEvent.objects.filter(object_type="record", object_id=str(record)).order_by("seq").query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE FORMAT=JSON {sql}", params)
        plan = json.loads(cursor.fetchone()[0])
    [access] = [t for t in tables(plan) if t["table_name"] == "audit_auditevent"]
    assert access["key"] == "audit_object_seq", json.dumps(plan)
    assert access["r_rows"] <= 20, json.dumps(plan)
