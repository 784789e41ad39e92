"""The managers' audit trail in the admin: filters, exact search, pages without COUNT(*), a date
hierarchy without DISTINCT scans, a bounded number of queries per page, the streaming CSV export of
the filtered view, and the per-record timeline."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import audit.admin
from approvals.services import decide_review
from attachments.models import Attachment, AttachmentLink
from audit.models import AuditEvent
from audit.services import record_event
from sync.models import LedgerEntry
from tests.conftest import logged_in
from tests.reviewing import INSPECTION, create, inspection_conflict, push_one, update

TRAIL = "/admin/audit/auditevent/"
EXPORT = "/admin/audit/auditevent/export/"
STOCK = {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each"}


@pytest.fixture
def mark(demo: None) -> Client:
    return logged_in("mark")


def journal(n: int, **fields: Any) -> list[AuditEvent]:
    made = []
    for i in range(n):
        with transaction.atomic():
            made.append(
                record_event(
                    **{
                        "verb": "record.updated",
                        "source": "device",
                        "object_type": "record",
                        "object_id": str(uuid.uuid4()),
                        "changes": {"counted": [i, i + 1]},
                        **fields,
                    }
                )
            )
    return made


def listed(response: Any) -> list[int]:
    assert response.status_code == 200, response
    return [event.seq for event in response.context["cl"].result_list]


def exported(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200
    assert response.streaming
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


# --- the changelist -----------------------------------------------------------------------------


def test_the_trail_lists_the_newest_first(mark) -> None:
    made = journal(3)
    assert listed(mark.get(TRAIL)) == [e.seq for e in reversed(made)]


def test_no_page_of_the_trail_counts_rows(mark) -> None:
    journal(250)
    for params in ({}, {"p": 2}, {"verb": "record.updated"}, {"q": "#5"}):
        with CaptureQueriesContext(connection) as queries:
            assert mark.get(TRAIL, params).status_code == 200
        counting = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        assert counting == [], params
        distinct = [
            q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"].upper() and "recorded_at" in q["sql"]
        ]
        assert distinct == [], "the date hierarchy must not scan for distinct dates"


def test_a_page_is_one_query_even_when_everything_fits_on_it(mark) -> None:
    journal(3)
    for params in ({}, {"q": "#2"}, {"team": "north"}):
        with CaptureQueriesContext(connection) as queries:
            assert mark.get(TRAIL, params).status_code == 200
        pages = [q for q in queries.captured_queries if re.search(r"ORDER BY .audit_auditevent.\..seq. DESC", q["sql"])]
        assert len(pages) == 1, params


def test_pages_go_on_while_there_are_older_events(mark) -> None:
    made = journal(250)
    newest_first = [e.seq for e in reversed(made)]

    first = mark.get(TRAIL)
    assert listed(first) == newest_first[:100]
    assert b'id="audit-older"' in first.content and b'id="audit-newer"' not in first.content
    last = mark.get(TRAIL, {"p": 3})
    assert listed(last) == newest_first[200:]
    assert b'id="audit-older"' not in last.content and b'id="audit-newer"' in last.content
    assert b"250" not in last.content.split(b'id="audit-pagination"')[1][:200]


@pytest.mark.parametrize("page_size", [5, 300])
def test_a_page_costs_the_same_number_of_queries_however_many_events(
    mark, page_size, django_assert_max_num_queries
) -> None:
    journal(page_size, actor=User.objects.get(username="alice"), device_id=uuid.uuid4(), team="north")
    # session + user + permissions, the page, the date span, and one per choice filter
    with django_assert_max_num_queries(12):
        response = mark.get(TRAIL)
    assert response.status_code == 200


def test_filters_by_verb_source_actor_device_record_type_and_team(mark) -> None:
    alice = User.objects.get(username="alice")
    phone = uuid.uuid4()
    [by_alice] = journal(1, actor=alice, device_id=phone, team="north", record_type="inspection")
    [by_admin] = journal(1, verb="team.changed", source="admin", team="south", object_type="team")
    journal(2)

    assert listed(mark.get(TRAIL, {"verb": "team.changed"})) == [by_admin.seq]
    assert listed(mark.get(TRAIL, {"source__exact": "admin"})) == [by_admin.seq]
    assert listed(mark.get(TRAIL, {"actor__id__exact": alice.pk})) == [by_alice.seq]
    assert listed(mark.get(TRAIL, {"device_id": str(phone)})) == [by_alice.seq]
    assert listed(mark.get(TRAIL, {"record_type": "inspection"})) == [by_alice.seq]
    assert listed(mark.get(TRAIL, {"team": "south"})) == [by_admin.seq]
    assert listed(mark.get(TRAIL, {"team": "north", "source__exact": "device"})) == [by_alice.seq]


def test_a_bad_device_id_is_an_error_page_not_a_crash(mark) -> None:
    response = mark.get(TRAIL, {"device_id": "not-a-uuid"})
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_search_finds_a_record_or_an_action_by_exact_id_or_an_event_by_seq(mark, device_for) -> None:
    alice = device_for("alice")
    record = create(alice, "stock_count", STOCK)
    result = push_one(alice, op="update", type="stock_count", record=record, base_version=1, data={"counted": 9})
    journal(3)
    of_record = list(AuditEvent.objects.filter(object_id=str(record)).order_by("-seq").values_list("seq", flat=True))

    assert listed(mark.get(TRAIL, {"q": str(record)})) == of_record
    assert listed(mark.get(TRAIL, {"q": result["id"]})) == [of_record[0]]
    assert listed(mark.get(TRAIL, {"q": f"#{of_record[1]}"})) == [of_record[1]]
    assert listed(mark.get(TRAIL, {"q": "counted"})) == []


def test_the_date_hierarchy_drills_down_to_a_day(mark) -> None:
    journal(2)
    today = timezone.now()
    response = mark.get(TRAIL)
    assert f"recorded_at__year={today.year}".encode() in response.content

    day = {"recorded_at__year": today.year, "recorded_at__month": today.month, "recorded_at__day": today.day}
    assert len(listed(mark.get(TRAIL, day))) == 2
    yesterday = today - timedelta(days=1)
    other = {
        "recorded_at__year": yesterday.year,
        "recorded_at__month": yesterday.month,
        "recorded_at__day": yesterday.day,
    }
    assert listed(mark.get(TRAIL, other)) == []


def test_an_event_page_shows_its_field_diff_and_links_the_record_timeline(mark, device_for) -> None:
    alice = device_for("alice")
    record = create(alice, "stock_count", STOCK)
    push_one(alice, op="update", type="stock_count", record=record, base_version=1, data={"counted": 9})
    event = AuditEvent.objects.get(verb="record.updated")

    response = mark.get(f"{TRAIL}{event.pk}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<table class="audit-diff">' in html
    assert "<th>counted</th><td><code>40</code></td><td><code>9</code></td>" in html
    assert f"/admin/sync/ledgerentry/record/{record}/timeline/" in html
    assert 'name="_save"' not in html


# --- export -------------------------------------------------------------------------------------


def test_the_export_streams_the_filtered_view_newest_first(mark, monkeypatch) -> None:
    monkeypatch.setattr(audit.admin, "EXPORT_CHUNK", 3)  # several seq-range chunks
    north = journal(7, team="north")
    journal(2, team="south")

    rows = exported(mark.get(EXPORT, {"team": "north"}))

    assert [int(r["seq"]) for r in rows] == [e.seq for e in reversed(north)]
    assert rows[0]["hash"] == north[-1].hash
    assert rows[0]["changes"] == '{"counted":[6,7]}'
    assert set(rows[0]) == set(audit.admin.CSV_COLUMNS)


def test_the_export_link_carries_the_filters_and_search(mark) -> None:
    journal(1)
    response = mark.get(TRAIL, {"team": "north", "q": "#1"})
    assert 'href="/admin/audit/auditevent/export/?team=north&amp;q=%231"' in response.content.decode()


def test_the_export_defuses_spreadsheet_formulas(mark) -> None:
    journal(1, object_id='=HYPERLINK("http://evil")')
    [row] = exported(mark.get(EXPORT))
    assert row["object_id"].startswith("'=")


def test_only_users_who_may_view_the_trail_export_it(demo, device_for) -> None:
    journal(1)
    assert logged_in("olivia").get(EXPORT).status_code == 200
    alice = logged_in("alice").get(EXPORT)
    assert alice.status_code == 302 and "/login/" in alice["Location"]
    User.objects.create_user(username="sam", password="x", is_staff=True)
    assert logged_in("sam").get(EXPORT).status_code == 403


# --- the record timeline ------------------------------------------------------------------------


def timeline(record: uuid.UUID) -> str:
    return f"/admin/sync/ledgerentry/record/{record}/timeline/"


def test_a_replayed_action_is_counted_on_its_ledger_row(device_for) -> None:
    alice = device_for("alice")
    action = {
        "id": str(uuid.uuid4()),
        "op": "create",
        "type": "stock_count",
        "record": str(uuid.uuid4()),
        "data": STOCK,
        "captured_at": timezone.now().isoformat(),
    }
    alice.push([action])
    alice.push([action])
    [result] = alice.push([action]).json()["results"]

    assert result["replayed"] is True
    entry = LedgerEntry.objects.get(action_id=action["id"])
    assert entry.replays == 2
    assert entry.last_replayed_at is not None


def test_the_timeline_shows_every_action_event_review_and_attachment_of_a_record(mark, device_for, user) -> None:
    conflict = inspection_conflict(device_for)
    alice = device_for("alice")
    # A duplicate (replayed), a rejected edit and the officer's decision, on the same record.
    replayed = {
        "id": str(uuid.uuid4()),
        "op": "update",
        "type": "inspection",
        "record": str(conflict.record),
        "base_version": 2,
        "data": {"inspector": "Alice B."},
        "captured_at": timezone.now().isoformat(),
    }
    alice.push([replayed])
    alice.push([replayed])
    rejected = update(alice, conflict.record, 3, {"odometer_km": -5})
    assert rejected["status"] == "rejected"
    decide_review(
        review_id=conflict.review.id,
        officer=user("olivia"),
        decision="approve",
        seen_version=3,
        choices={"odometer_km": "device"},
    )
    photo = Attachment.objects.create(
        id=uuid.uuid4(),
        owner=user("alice"),
        filename="dent.jpg",
        storage_key=f"k/{uuid.uuid4()}",
        declared_size=10,
        state="rejected",
        reject_reason="not_an_image",
    )
    AttachmentLink.objects.create(attachment=photo, record_id=conflict.record, team_id=1)
    with transaction.atomic():
        record_event(verb="attachment.rejected", source="system", object_type="attachment", object_id=photo.pk)

    response = mark.get(timeline(conflict.record))

    assert response.status_code == 200
    html = response.content.decode()
    statuses = [item.entry.status for item in response.context["items"] if item.entry]
    assert statuses == ["applied", "applied", "pending_review", "applied", "rejected"]
    verbs = [item.event.verb for item in response.context["items"] if item.event]
    assert verbs == [
        "record.created",
        "record.updated",
        "review.opened",
        "record.updated",
        "record.updated",
        "review.decided",
        "attachment.rejected",
    ]
    assert 'id="timeline-replays">1<' in html
    assert "sent 2 times" in html
    assert "schema_violation" in html and "<code>data.odometer_km</code>" in html
    assert f"/admin/approvals/review/{conflict.review.pk}/change/" in html
    assert "dent.jpg" in html and "not_an_image" in html
    assert "<th>odometer_km</th><td><code>1200</code></td><td><code>1250</code></td>" in html


def test_the_timeline_of_a_record_that_was_never_created_shows_its_rejected_create(mark, device_for) -> None:
    alice = device_for("alice")
    record = uuid.uuid4()
    push_one(alice, op="create", type="stock_count", record=record, data={"sku": "no location"})

    response = mark.get(timeline(record))

    assert response.status_code == 200
    assert b'id="timeline-no-record"' in response.content
    assert [i.entry.status for i in response.context["items"]] == ["rejected"]


def test_the_timeline_costs_the_same_queries_for_a_long_history(
    mark, device_for, django_assert_max_num_queries
) -> None:
    alice = device_for("alice")
    record = create(alice, "inspection", INSPECTION)
    for version in range(1, 30):
        update(alice, record, version, {"odometer_km": 1000 + version})

    with django_assert_max_num_queries(10):
        response = mark.get(timeline(record))
    assert len(response.context["items"]) == 60


def test_the_record_page_and_the_ledger_link_the_timeline(mark, device_for) -> None:
    alice = device_for("alice")
    record = create(alice, "stock_count", STOCK)

    record_page = mark.get(f"/admin/records/record/{record}/change/").content.decode()
    ledger = mark.get("/admin/sync/ledgerentry/").content.decode()

    assert timeline(record) in record_page
    assert timeline(record) in ledger


def test_field_workers_and_staff_without_permissions_get_no_timeline(demo, device_for) -> None:
    alice = device_for("alice")
    record = create(alice, "stock_count", STOCK)
    assert logged_in("alice").get(timeline(record)).status_code == 302
    User.objects.create_user(username="sam", password="x", is_staff=True)
    assert logged_in("sam").get(timeline(record)).status_code == 403
