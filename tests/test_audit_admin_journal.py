"""Admin edits of record types, devices, users, teams and roles are journalled: source "admin",
the admin who did it, and the before/after of what changed (membership changes get their own
verb). The edit and its journal entry commit together."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.db import transaction
from django.test import Client

import audit.admin_journal
from audit.models import AuditEvent
from audit.services import record_event
from records.models import RecordType, Team
from sync.models import Device
from tests.conftest import logged_in

SECRET = "Corr3ct-horse-battery"


@pytest.fixture
def admin(demo: None) -> Client:
    return logged_in("admin")


def journal(verb: str) -> AuditEvent:
    return AuditEvent.objects.get(verb=verb)


def ids(*usernames: str) -> list[int]:
    return [User.objects.get(username=name).pk for name in usernames]


def posted(response: Any) -> None:
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response


def user_form(user: User, **fields: Any) -> dict[str, Any]:
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "groups": [g.pk for g in user.groups.all()],
        **({"is_active": "on"} if user.is_active else {}),
        **({"is_staff": "on"} if user.is_staff else {}),
    }
    data.update(fields)
    return data


def test_adding_a_team_journals_it_with_its_members(admin) -> None:
    posted(admin.post("/admin/records/team/add/", {"slug": "east", "name": "East depot", "members": ids("carol")}))

    event = journal("team.created")
    assert (event.source, event.actor_username, event.object_type, event.team) == ("admin", "admin", "team", "east")
    assert event.object_id == str(Team.objects.get(slug="east").pk)
    assert event.changes == {"members": [None, ["carol"]], "name": [None, "East depot"], "slug": [None, "east"]}


def test_a_team_membership_change_has_its_own_verb_and_both_member_lists(admin) -> None:
    north = Team.objects.get(slug="north")
    url = f"/admin/records/team/{north.pk}/change/"
    posted(admin.post(url, {"slug": "north", "name": "North depot", "members": ids("alice", "carol", "olivia")}))

    event = journal("team.members_changed")
    assert event.changes == {"members": [["alice", "bob", "olivia"], ["alice", "carol", "olivia"]]}
    assert event.team == "north"
    assert not AuditEvent.objects.filter(verb="team.changed").exists()


def test_a_save_that_changes_nothing_journals_nothing(admin) -> None:
    north = Team.objects.get(slug="north")
    before = AuditEvent.objects.count()
    url = f"/admin/records/team/{north.pk}/change/"
    posted(admin.post(url, {"slug": "north", "name": "North depot", "members": ids("alice", "bob", "olivia")}))
    assert AuditEvent.objects.count() == before


def test_a_record_type_change_journals_the_changed_fields_only(admin) -> None:
    stock = RecordType.objects.get(key="stock_count")
    form = {
        "key": stock.key,
        "name": "Stock take",
        "schema": json.dumps(stock.schema),
        "schema_version": stock.schema_version,
        "conflict_policy": "merge",
        "field_policies": "{}",
    }
    posted(admin.post(f"/admin/records/recordtype/{stock.pk}/change/", form))

    event = journal("record_type.changed")
    assert event.record_type == "stock_count"
    assert event.changes == {"conflict_policy": ["lww", "merge"], "name": [stock.name, "Stock take"]}


def test_a_new_user_is_journalled_without_their_password(admin) -> None:
    posted(
        admin.post(
            "/admin/auth/user/add/",
            {"username": "dave", "password1": SECRET, "password2": SECRET, "usable_password": "true"},
        )
    )

    event = journal("user.created")
    assert event.changes["username"] == [None, "dave"]
    assert event.changes["password"] == [None, "(set)"]
    assert SECRET not in json_of(event)
    assert User.objects.get(username="dave").password not in json_of(event)


def json_of(event: AuditEvent) -> str:
    return json.dumps(event.changes)


def test_a_role_change_of_a_user_is_journalled_as_roles_changed(admin) -> None:
    bob = User.objects.get(username="bob")
    managers = Group.objects.get(name="Managers")
    response = admin.post(
        f"/admin/auth/user/{bob.pk}/change/", user_form(bob, groups=[g.pk for g in bob.groups.all()] + [managers.pk])
    )
    posted(response)

    event = journal("user.roles_changed")
    assert event.changes == {"groups": [["Field workers"], ["Field workers", "Managers"]]}
    assert event.object_id == str(bob.pk)


def test_staff_and_superuser_flags_are_journalled_as_a_user_change(admin) -> None:
    bob = User.objects.get(username="bob")
    posted(admin.post(f"/admin/auth/user/{bob.pk}/change/", user_form(bob, is_staff="on", email="bob@north.example")))

    event = journal("user.changed")
    assert event.changes == {"email": ["bob@example.com", "bob@north.example"], "is_staff": [False, True]}


def test_a_password_change_is_journalled_as_changed_without_the_hash(admin) -> None:
    bob = User.objects.get(username="bob")
    old_hash = bob.password
    posted(
        admin.post(
            f"/admin/auth/user/{bob.pk}/password/",
            {"password1": SECRET, "password2": SECRET, "usable_password": "true"},
        )
    )

    event = journal("user.changed")
    assert event.changes == {"password": ["(set)", "(changed)"]}
    bob.refresh_from_db()
    assert old_hash not in json_of(event) and bob.password not in json_of(event)


def test_a_new_group_is_journalled_with_its_permissions(admin) -> None:
    view_audit = Permission.objects.get(codename="view_auditevent")
    posted(admin.post("/admin/auth/group/add/", {"name": "Auditors", "permissions": [view_audit.pk]}))

    event = journal("group.created")
    assert event.changes == {"name": [None, "Auditors"], "permissions": [None, ["audit.view_auditevent"]]}


def test_deleting_a_user_journals_what_was_there_and_keeps_their_old_events(admin) -> None:
    erin = User.objects.create_user(username="erin", email="erin@example.com")
    with transaction.atomic():
        earlier = record_event(verb="test.done", source="system", object_type="test", object_id="1", actor=erin)
    response = admin.post(f"/admin/auth/user/{erin.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302

    event = journal("user.deleted")
    assert event.changes["username"] == ["erin", None]
    assert event.changes["email"] == ["erin@example.com", None]
    earlier = AuditEvent.objects.get(pk=earlier.pk)
    assert earlier.actor_username == "erin"
    call_command("audit_verify", stdout=io.StringIO())


def test_the_bulk_delete_action_journals_each_team(admin) -> None:
    east = Team.objects.create(slug="east", name="East")
    west = Team.objects.create(slug="west", name="West")
    response = admin.post(
        "/admin/records/team/",
        {"action": "delete_selected", "_selected_action": [east.pk, west.pk], "post": "yes"},
    )
    assert response.status_code == 302

    deleted = AuditEvent.objects.filter(verb="team.deleted").order_by("seq")
    assert [e.team for e in deleted] == ["east", "west"]
    assert not Team.objects.filter(slug__in=["east", "west"]).exists()


def test_revoking_a_device_in_the_admin_is_journalled_with_the_admin_as_actor(admin, device_for) -> None:
    alice = device_for("alice")
    response = admin.post(
        "/admin/sync/device/", {"action": "revoke", "_selected_action": [str(alice.device_id)]}, follow=True
    )
    assert response.status_code == 200

    event = journal("device.revoked")
    assert (event.source, event.actor_username, event.device_id) == ("admin", "admin", alice.device_id)
    assert Device.objects.get(pk=alice.device_id).revoked_at is not None


def test_an_admin_edit_whose_journal_entry_fails_is_not_saved(admin, monkeypatch) -> None:
    def journal_fails(**kwargs: Any) -> None:
        raise RuntimeError("journal down")

    monkeypatch.setattr(audit.admin_journal, "record_event", journal_fails)
    north = Team.objects.get(slug="north")

    with pytest.raises(RuntimeError, match="journal down"):
        admin.post(
            f"/admin/records/team/{north.pk}/change/", {"slug": "north", "name": "Renamed", "members": ids("alice")}
        )

    north.refresh_from_db()
    assert north.name == "North depot"
    assert sorted(north.members.values_list("username", flat=True)) == ["alice", "bob", "olivia"]
