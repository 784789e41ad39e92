"""Who may do what in the admin: a permission matrix over every admin page (changelist, change
page, add, delete, a change POST and the bulk actions) for the four kinds of user.

mark (manager) views records, reviews, devices, the ledger, attachments and the audit trail and
changes nothing; olivia (officer) also edits records and decides reviews; alice (field worker)
has no admin at all; admin (superuser) may do everything except edit the append-only ledger and
journal, which nobody may."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from approvals.models import Review, ReviewState
from attachments.models import Attachment
from audit.models import AuditEvent
from records.models import Record, RecordType, Team
from sync.models import Device, LedgerEntry
from tests.reviewing import inspection_conflict

VIEW, ADD, CHANGE, DELETE = "view", "add", "change", "delete"


@dataclass(frozen=True)
class Page:
    url: str  # the changelist
    model: type
    may: dict[str, set[str]]  # role -> what it may do beyond nothing


EVERYONE_VIEWS = {"mark": {VIEW}, "olivia": {VIEW}, "admin": {VIEW}}
PAGES = {
    "team": Page("/admin/records/team/", Team, {**EVERYONE_VIEWS, "admin": {VIEW, ADD, CHANGE, DELETE}}),
    "recordtype": Page(
        "/admin/records/recordtype/", RecordType, {**EVERYONE_VIEWS, "admin": {VIEW, ADD, CHANGE, DELETE}}
    ),
    "record": Page(
        "/admin/records/record/",
        Record,
        {"mark": {VIEW}, "olivia": {VIEW, CHANGE}, "admin": {VIEW, ADD, CHANGE, DELETE}},
    ),
    "device": Page("/admin/sync/device/", Device, {**EVERYONE_VIEWS, "admin": {VIEW, CHANGE}}),
    "ledgerentry": Page("/admin/sync/ledgerentry/", LedgerEntry, EVERYONE_VIEWS),
    "auditevent": Page("/admin/audit/auditevent/", AuditEvent, EVERYONE_VIEWS),
    "review": Page(
        "/admin/approvals/review/", Review, {"mark": {VIEW}, "olivia": {VIEW, CHANGE}, "admin": {VIEW, CHANGE}}
    ),
    "attachment": Page("/admin/attachments/attachment/", Attachment, EVERYONE_VIEWS),
    "user": Page("/admin/auth/user/", User, {"admin": {VIEW, ADD, CHANGE, DELETE}}),
    "group": Page("/admin/auth/group/", Group, {"admin": {VIEW, ADD, CHANGE, DELETE}}),
}
ROLES = ["mark", "olivia", "alice", "admin"]


@pytest.fixture
def objects(device_for, user) -> dict[str, Any]:
    """One object of each kind, made the way they arise."""
    conflict = inspection_conflict(device_for)
    attachment = Attachment.objects.create(
        id=uuid.uuid4(), owner=user("alice"), filename="a.jpg", storage_key=str(uuid.uuid4()), declared_size=1
    )
    return {
        "team": Team.objects.get(slug="north"),
        "recordtype": RecordType.objects.get(key="stock_count"),
        "record": Record.objects.get(pk=conflict.record),
        "device": Device.objects.get(pk=conflict.bob.device_id),
        "ledgerentry": LedgerEntry.objects.filter(device_id=conflict.bob.device_id).first(),
        "auditevent": AuditEvent.objects.order_by("seq").first(),
        "review": conflict.review,
        "attachment": attachment,
        "user": user("bob"),
        "group": Group.objects.get(name="Managers"),
    }


def client_for(username: str) -> Client:
    client = Client()
    client.force_login(User.objects.get(username=username))
    return client


def expected(role: str, page: Page, capability: str) -> int:
    if role == "alice":
        return 302  # not staff: the admin sends her to its login page
    may = page.may.get(role, set())
    if capability == VIEW:
        return 200 if may & {VIEW, CHANGE} else 403
    return 200 if capability in may else 403


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", list(PAGES))
def test_the_admin_pages_answer_each_role_as_its_permissions_say(role: str, name: str, objects) -> None:
    page, obj = PAGES[name], objects[name]
    client = client_for(role)
    change_url = f"{page.url}{obj.pk}/change/"

    got = {
        "changelist": client.get(page.url).status_code,
        "change page": client.get(change_url).status_code,
        "add": client.get(f"{page.url}add/").status_code,
        "delete": client.get(f"{page.url}{obj.pk}/delete/").status_code,
    }

    assert got == {
        "changelist": expected(role, page, VIEW),
        "change page": expected(role, page, VIEW),
        "add": expected(role, page, ADD),
        "delete": expected(role, page, DELETE),
    }


@pytest.mark.parametrize("role", ["mark", "olivia", "alice"])
@pytest.mark.parametrize("name", [n for n in PAGES if n not in ("record", "review")])
def test_a_change_post_without_the_change_permission_is_refused(role: str, name: str, objects) -> None:
    page, obj = PAGES[name], objects[name]
    response = client_for(role).post(f"{page.url}{obj.pk}/change/", {"name": "changed", "slug": "changed"})
    assert response.status_code == (302 if role == "alice" else 403)
    assert response.status_code != 302 or "/login/" in response["Location"]


def test_a_manager_cannot_edit_a_record_or_decide_a_review(objects) -> None:
    record, review = objects["record"], objects["review"]
    mark = client_for("mark")

    edit = mark.post(
        f"/admin/records/record/{record.pk}/change/",
        {
            "type": record.type_id,
            "team": record.team_id,
            "data": '{"vehicle": "STOLEN"}',
            "base_version": record.version,
        },
    )
    decide = mark.post(f"/admin/approvals/review/{review.pk}/change/", {"seen_version": record.version})

    assert edit.status_code == 403
    assert decide.status_code == 200  # the page, read-only: no decision form, nothing decided
    assert b'name="_reject"' not in decide.content
    record.refresh_from_db()
    review.refresh_from_db()
    assert record.version == 2 and record.data["vehicle"] == "VAN-12"
    assert review.state == ReviewState.PENDING


@pytest.mark.parametrize("name", list(PAGES))
def test_a_manager_bulk_delete_deletes_nothing(name: str, objects) -> None:
    page, obj = PAGES[name], objects[name]
    client_for("mark").post(page.url, {"action": "delete_selected", "_selected_action": [str(obj.pk)], "post": "yes"})
    assert page.model._default_manager.filter(pk=obj.pk).exists()


def test_a_manager_sees_no_actions_on_any_changelist(objects) -> None:
    mark = client_for("mark")
    for name, page in PAGES.items():
        response = mark.get(page.url)
        if response.status_code == 200:
            assert b'name="action"' not in response.content, name


@pytest.mark.parametrize("role", ["mark", "olivia"])
def test_only_the_admin_revokes_devices_and_only_officers_approve_reviews(role: str, objects) -> None:
    device, review = objects["device"], objects["review"]
    client = client_for(role)

    client.post("/admin/sync/device/", {"action": "revoke", "_selected_action": [str(device.pk)]})
    client.post("/admin/approvals/review/", {"action": "bulk_approve", "_selected_action": [str(review.pk)]})

    device.refresh_from_db()
    review.refresh_from_db()
    assert device.revoked_at is None
    # olivia may bulk-approve, but not this one: a field was changed on both sides.
    assert review.state == ReviewState.PENDING


def test_nobody_not_even_a_superuser_edits_the_journal_or_the_ledger(objects) -> None:
    admin = client_for("admin")
    event, entry = objects["auditevent"], objects["ledgerentry"]
    before = (event.verb, event.hash, entry.status)

    assert admin.post(f"/admin/audit/auditevent/{event.pk}/change/", {"verb": "x"}).status_code == 403
    assert admin.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin.post(f"/admin/sync/ledgerentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    admin.post("/admin/audit/auditevent/", {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"})

    event.refresh_from_db()
    entry.refresh_from_db()
    assert (event.verb, event.hash, entry.status) == before
