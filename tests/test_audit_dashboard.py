"""The admin index dashboard: reviews waiting, rejected attachments, devices gone silent and a
14-day chart of device actions by outcome."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from attachments.models import Attachment
from sync.models import Device, LedgerEntry
from tests.conftest import logged_in
from tests.reviewing import inspection_conflict

STOCK = {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each"}


@pytest.fixture
def mark(demo: None) -> Client:
    return logged_in("mark")


def dashboard(client: Client) -> str:
    response = client.get("/admin/")
    assert response.status_code == 200
    return response.content.decode()


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    assert match, f"no #{element_id}"
    return match.group(1).strip()


def ledger(device_id: uuid.UUID, status: str, days_ago: int) -> None:
    LedgerEntry.objects.create(
        device_id=device_id,
        action_id=uuid.uuid4(),
        fingerprint="0" * 64,
        op="update",
        type_key="stock_count",
        record_id=uuid.uuid4(),
        status=status,
        captured_at=timezone.now(),
        clock_offset_ms=0,
        received_at=timezone.now() - timedelta(days=days_ago),
    )


def test_the_dashboard_keeps_the_pending_reviews_count(mark, device_for) -> None:
    inspection_conflict(device_for)
    assert text_of(dashboard(mark), "pending-reviews-count") == "1"


def test_it_counts_rejected_attachments(mark, user) -> None:
    for state in ("rejected", "rejected", "verified"):
        Attachment.objects.create(
            id=uuid.uuid4(),
            owner=user("alice"),
            filename="x.jpg",
            storage_key=str(uuid.uuid4()),
            declared_size=1,
            state=state,
        )
    assert text_of(dashboard(mark), "rejected-attachments-count") == "2"


def test_it_lists_devices_not_seen_for_the_configured_days(mark, device_for, settings) -> None:
    settings.DASHBOARD_SILENT_DEVICE_DAYS = 7
    quiet, busy, revoked, never = (device_for(name) for name in ("alice", "bob", "carol", "olivia"))
    now = timezone.now()
    Device.objects.filter(pk=quiet.device_id).update(last_seen=now - timedelta(days=9))
    Device.objects.filter(pk=busy.device_id).update(last_seen=now - timedelta(days=2))
    Device.objects.filter(pk=revoked.device_id).update(last_seen=now - timedelta(days=30), revoked_at=now)
    Device.objects.filter(pk=never.device_id).update(last_seen=None, created=now - timedelta(days=8))

    html = dashboard(mark)

    assert "Devices not seen for 7 days:" in html
    assert text_of(html, "silent-devices-count") == "2"
    section = html.split('id="dashboard-silent-devices"')[1].split("</div>")[0]
    assert "alice&#x27;s phone" in section and "olivia&#x27;s phone" in section
    assert "bob&#x27;s phone" not in section and "carol&#x27;s phone" not in section
    assert "never synced" in section

    settings.DASHBOARD_SILENT_DEVICE_DAYS = 10
    assert text_of(dashboard(mark), "silent-devices-count") == "0"


def test_the_chart_stacks_14_days_of_actions_by_outcome(mark, device_for) -> None:
    device = device_for("alice").device_id
    for status, days_ago in [
        ("applied", 0),
        ("applied", 0),
        ("rejected", 0),
        ("merged", 3),
        ("pending_review", 13),
        ("applied", 14),  # fifteen days back: outside the chart
    ]:
        ledger(device, status, days_ago)

    html = dashboard(mark)
    chart = html.split('id="dashboard-actions-chart"')[1]
    days = re.findall(r'<g class="day" data-day="([\d-]+)" data-total="(\d+)"', chart)

    assert len(days) == 14
    today = timezone.localdate()
    assert days[-1] == (today.isoformat(), "3")
    assert days[-4] == ((today - timedelta(days=3)).isoformat(), "1")
    assert days[0] == ((today - timedelta(days=13)).isoformat(), "1")
    assert sum(int(total) for _, total in days) == 5
    today_bar = chart.split(f'data-day="{today.isoformat()}"')[1].split("</g>")[0]
    assert re.findall(r'data-outcome="(\w+)" data-n="(\d+)"', today_bar) == [("applied", "2"), ("rejected", "1")]
    assert "Rejected (1)" in chart


def test_the_dashboard_costs_a_fixed_number_of_queries(mark, device_for, django_assert_max_num_queries) -> None:
    device = device_for("alice").device_id
    for i in range(40):
        ledger(device, "applied", i % 14)
    with django_assert_max_num_queries(14):
        dashboard(mark)


def test_field_workers_have_no_dashboard(demo) -> None:
    response = logged_in("alice").get("/admin/")
    assert response.status_code == 302


def test_a_staff_user_without_view_permissions_sees_none_of_it(demo, device_for) -> None:
    User.objects.create_user(username="sam", password="x", is_staff=True)
    html = dashboard(logged_in("sam"))
    assert 'id="dashboard-actions-chart"' not in html
    assert 'id="dashboard-silent-devices"' not in html
    assert 'id="pending-reviews-count"' not in html
