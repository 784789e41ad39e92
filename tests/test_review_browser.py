"""A compliance officer decides a conflict in a real browser (Playwright driving Debian's
chromium against the live server), and the device that made the edit learns the outcome.

Nothing here downloads a browser: the test uses /usr/bin/chromium from apt (.ci/run installs it).
Without it the test is skipped locally and fails when CI is set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from approvals.models import Review, ReviewState
from records.models import Record
from tests.browser import TIMEOUT_MS
from tests.reviewing import INSPECTION, inspection_conflict

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_officer_decides_a_conflict_in_the_browser_and_the_device_pulls_the_result(
    browser, live_server, device_for
) -> None:
    # The seed runs inside this transactional test (the flush after a transactional test empties
    # every table, the role groups and the audit chain head included; both come back on demand).
    conflict = inspection_conflict(device_for)
    review_id = conflict.review.pk
    assert conflict.review.classification == {
        "checklist": "unchanged",
        "inspector": "server_only",
        "odometer_km": "both_changed",
        "passed": "device_only",
        "vehicle": "unchanged",
    }
    bob = conflict.bob
    before = bob.pull().json()
    assert [(c["record"], c["version"]) for c in before["changes"]] == [(str(conflict.record), 2)]

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "fieldsync-demo")
    page.click("input[type=submit]")
    expect(page.locator("#pending-reviews-count")).to_have_text("1")

    page.click("#pending-reviews-count")
    expect(page).to_have_url(re.compile(r"/admin/approvals/review/\?state__exact=pending$"))
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    page.click(f'#result_list a[href*="/{review_id}/change/"]')

    expect(page.locator("table.review")).to_be_visible()
    expect(page.locator("table.review thead th")).to_have_text(
        ["Field", "Base", "Server now", "Device proposal", "Result"]
    )
    contested = page.locator('tr.both_changed[data-field="odometer_km"]')
    expect(contested).to_have_count(1)
    expect(contested.locator("td.server")).to_have_text("1200")
    expect(contested.locator("td.device")).to_have_text("1250")
    verdict = page.locator('tr.device_only[data-field="passed"]')
    expect(verdict.locator("td.server")).to_have_text("true")
    expect(verdict.locator("td.device")).to_have_text("false")
    # Keep the server's inspector (the default), take bob's verdict, enter the odometer by hand.
    expect(page.locator('input[name="choice__inspector"][value="server"]')).to_be_checked()
    page.check('input[name="choice__passed"][value="device"]')
    page.check('input[name="choice__odometer_km"][value="value"]')
    page.fill('input[name="value__odometer_km"]', "1225")
    page.fill("#id_note", "Odometer read off the dashboard photo; bob's verdict stands.")
    screenshot = Path(django_settings.VAR_DIR) / "review.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)

    page.click('input[name="_approve"]')
    expect(page.locator("ul.messagelist")).to_contain_text("Decision recorded.")
    expect(page).to_have_url(re.compile(r"/admin/approvals/review/$"))
    page.goto(f"{live_server.url}/admin/")
    expect(page.locator("#pending-reviews-count")).to_have_text("0")
    context.close()

    review = Review.objects.get(pk=review_id)
    assert (review.state, review.decided_by.username, review.result_version) == (ReviewState.RESOLVED, "olivia", 3)
    decided = {**INSPECTION, "odometer_km": 1225, "inspector": "Alice A.", "passed": False}
    assert Record.objects.get(pk=conflict.record).data == decided

    after = bob.pull(before["cursor"]).json()
    assert [(c["record"], c["version"], c["data"]) for c in after["changes"]] == [(str(conflict.record), 3, decided)]

    result = bob.get(f"/api/v1/sync/actions/{conflict.action_id}").json()
    assert result["status"] == "applied"
    assert (result["version"], result["data"]) == (3, decided)
    decision = result["decision"]
    assert (decision["state"], decision["decided_by"]) == ("resolved", "olivia")
    assert decision["note"] == "Odometer read off the dashboard photo; bob's verdict stands."
