"""The pull at scale, proven by query plans rather than by timing: with 20,000 records on
MariaDB, a page from the middle of the feed reads the (team, change_seq) index from the cursor,
not every entry of the team before it (docs/benchmarks.md, "Pull at a million records")."""

from __future__ import annotations

import io
import json
import random
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from records.models import Record, RecordType, Team
from sync.services import encode_cursor, pull
from tests.plans import analyze, tables

pytestmark = pytest.mark.mariadb

RECORDS = 20_000
LIMIT = 1000


@pytest.fixture(scope="module")
def big_feed(django_db_setup: None, django_db_blocker: Any) -> Any:
    """20,000 clock-ins, two thirds in north, the rest in south, random ids like devices'. Committed
    (ANALYZE TABLE commits anyway) and flushed afterwards."""
    rng = random.Random(7)
    with django_db_blocker.unblock():
        call_command("seed_demo", stdout=io.StringIO())
        clocking = RecordType.objects.get(key="clocking")
        north, south = Team.objects.get(slug="north"), Team.objects.get(slug="south")
        now = timezone.now()
        Record.objects.bulk_create(
            [
                Record(
                    id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    type=clocking,
                    team=north if rng.random() < 2 / 3 else south,
                    data={"worker": "worker-001", "event": "in", "at": now.isoformat(timespec="seconds")},
                    captured_at=now,
                    change_seq=seq,
                )
                for seq in range(1, RECORDS + 1)
            ],
            batch_size=2000,
        )
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE TABLE {Record._meta.db_table}")
            cursor.fetchall()
        yield
        call_command("flush", interactive=False, verbosity=0, reset_sequences=False)


@pytest.mark.parametrize("username", ["alice", "olivia"])
@pytest.mark.parametrize("where", [0.0, 0.5])
def test_a_page_reads_the_feed_from_the_cursor(big_feed: None, db: None, username: str, where: float) -> None:
    user = User.objects.get(username=username)
    team_ids = sorted(Team.objects.filter(members=user).values_list("pk", flat=True))
    feed = list(Record.objects.filter(team_id__in=team_ids).order_by("change_seq").values_list("change_seq", flat=True))
    after = feed[int(len(feed) * where)] if where else 0
    with CaptureQueriesContext(connection) as captured:
        answer = pull(user=user, cursor=encode_cursor(after, team_ids) if after else None, limit=LIMIT)
    assert len(answer["changes"]) == LIMIT and answer["has_more"]
    queries = [q["sql"] for q in captured.captured_queries if "FROM `records_record`" in q["sql"]]
    assert queries
    for sql in queries:
        plan = analyze(sql)
        [access] = [t for t in tables(plan) if t["table_name"] == "records_record"]
        text = json.dumps(plan)
        # A `ref` on team_id alone would walk the team's entries before the cursor (the index
        # condition on change_seq skips them one by one, and r_rows does not count them).
        assert access["access_type"] == "range", f"not a range read:\n{sql}\n{text}"
        assert "change_seq" in access["used_key_parts"], f"the cursor does not bound the read:\n{sql}\n{text}"
        assert access["r_rows"] <= LIMIT + 1, f"read {access['r_rows']} rows:\n{sql}\n{text}"
