"""A manager follows one record through the audit trail in a real browser (Playwright driving
Debian's chromium against a live server on 127.0.0.1): filters the trail to the record, opens its
timeline and exports the filtered trail as CSV.

Nothing here downloads a browser: /usr/bin/chromium comes from apt (.ci/run installs it). Without
it the test is skipped locally and fails when CI is set (as tests/test_review_browser.py)."""

from __future__ import annotations

import csv
import io
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from audit.models import AuditEvent
from tests.browser import TIMEOUT_MS
from tests.conftest import DeviceClient
from tests.reviewing import push_one

PORTS = range(8500, 8600)
STOCK = {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each"}

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    for port in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


@pytest.fixture
def server() -> Iterator[str]:
    """A live server on 127.0.0.1 in the project's port range (pytest-django's own picks any)."""
    from pytest_django.live_server_helper import LiveServer

    live = LiveServer(f"127.0.0.1:{_free_port()}")
    live._live_server_modified_settings.enable()
    try:
        yield live.url
    finally:
        live._live_server_modified_settings.disable()
        live.stop()


def history(alice: DeviceClient) -> uuid.UUID:
    """A record with a create, an update sent twice (one replay), and a rejected update."""
    record = uuid.uuid4()
    push_one(alice, op="create", type="stock_count", record=record, team="north", data=STOCK)
    twice = {
        "id": str(uuid.uuid4()),
        "op": "update",
        "type": "stock_count",
        "record": str(record),
        "base_version": 1,
        "data": {"counted": 41},
        "captured_at": timezone.now().isoformat(),
    }
    alice.push([twice])
    alice.push([twice])
    rejected = push_one(alice, op="update", type="stock_count", record=record, base_version=2, data={"counted": "lots"})
    assert rejected["status"] == "rejected"
    return record


def test_a_manager_filters_the_trail_to_a_record_opens_its_timeline_and_exports_it(server, browser, device_for) -> None:
    # `server` first: fixtures are torn down in reverse, so the browser (and its open
    # connections) goes before the server stops sharing the test database with its threads.
    from playwright.sync_api import expect

    alice = device_for("alice")
    record = history(alice)
    push_one(alice, op="create", type="stock_count", record=uuid.uuid4(), team="north", data=STOCK)  # another
    of_record = list(AuditEvent.objects.filter(object_id=str(record)).order_by("-seq"))
    assert [e.verb for e in of_record] == ["record.updated", "record.created"]

    page = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server}/admin/")
    page.fill("#id_username", "mark")
    page.fill("#id_password", "fieldsync-demo")
    page.click("input[type=submit]")
    expect(page.locator("#dashboard-actions-chart")).to_be_visible()

    # The trail, filtered to the record by searching its id.
    page.click('a[href="/admin/audit/auditevent/"]')
    expect(page.locator("#result_list tbody tr")).not_to_have_count(0)
    page.fill("#searchbar", str(record))
    page.press("#searchbar", "Enter")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.locator("td.field-verb")).to_have_text(["record.updated", "record.created"])
    screenshots = Path(django_settings.VAR_DIR)
    screenshots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshots / "audit-trail.png"), full_page=True)

    # Its timeline, from the event's object link.
    page.locator('#result_list a[href*="/timeline/"]').first.click()
    expect(page.locator("h1")).to_contain_text(str(record))
    expect(page.locator("#timeline-actions")).to_have_text("3")
    expect(page.locator("#timeline-replays")).to_have_text("1")
    expect(page.locator("tr.timeline-action")).to_have_count(3)
    expect(page.locator('tr.timeline-action[data-status="rejected"]')).to_contain_text("schema_violation")
    expect(page.locator("tr.timeline-action .replays")).to_have_text("sent 2 times")
    expect(page.locator('tr.timeline-event[data-verb="record.updated"] table.diff')).to_contain_text("counted")
    page.screenshot(path=str(screenshots / "audit-timeline.png"), full_page=True)

    # Back to the filtered trail, and its CSV.
    page.go_back()
    expect(rows).to_have_count(2)
    with page.expect_download() as download_info:
        page.click("#audit-export-csv")
    download = download_info.value
    assert download.suggested_filename.startswith("audit-trail-") and download.suggested_filename.endswith(".csv")
    exported = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))

    assert [(int(r["seq"]), r["verb"], r["object_id"]) for r in exported] == [
        (e.seq, e.verb, str(record)) for e in of_record
    ]
    assert exported[0]["changes"] == '{"counted":[40,41]}'
    assert exported[0]["actor"] == "alice"
    assert exported[0]["hash"] == of_record[0].hash
