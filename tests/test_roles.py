"""The three roles (Django groups made by a data migration) as they meet the admin, and the demo
data that `seed_demo` (re)creates."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client

from records.models import Record, RecordType, Team
from records.roles import COMPLIANCE_OFFICERS, FIELD_WORKERS, MANAGERS, ROLE_NAMES
from sync.models import Device, LedgerEntry
from tests.conftest import DeviceClient

PASSWORD = "fieldsync-demo"


def logged_in(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def seed() -> None:
    call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115


@pytest.fixture
def a_record(device_for: Callable[[str], DeviceClient]) -> Record:
    """One record pushed by alice's device: it leaves a record, a ledger entry and a device."""
    response = device_for("alice").push(
        [
            {
                "id": str(uuid.uuid4()),
                "op": "create",
                "type": "stock_count",
                "record": str(uuid.uuid4()),
                "data": {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each"},
                "captured_at": "2026-11-25T08:00:00Z",
            }
        ]
    )
    assert response.json()["results"][0]["status"] == "applied", response.content
    return Record.objects.get()


def admin_urls(record: Record) -> dict[str, str]:
    entry = LedgerEntry.objects.get()
    device = Device.objects.get()
    return {
        "record": f"/admin/records/record/{record.pk}/change/",
        "ledger": f"/admin/sync/ledgerentry/{entry.pk}/change/",
        "device": f"/admin/sync/device/{device.pk}/change/",
    }


CHANGELISTS = [
    "/admin/records/record/",
    "/admin/records/recordtype/",
    "/admin/records/team/",
    "/admin/sync/ledgerentry/",
    "/admin/sync/device/",
    "/admin/audit/auditevent/",
]


# --- the groups -----------------------------------------------------------------------------------


def test_the_three_role_groups_exist_after_migrate(db: None) -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLE_NAMES)


def test_field_workers_have_no_permissions(db: None) -> None:
    assert not Group.objects.get(name=FIELD_WORKERS).permissions.exists()


def test_managers_may_only_view(db: None) -> None:
    codenames = set(Group.objects.get(name=MANAGERS).permissions.values_list("codename", flat=True))
    assert {"view_record", "view_ledgerentry", "view_device", "view_auditevent"} <= codenames
    assert all(codename.startswith("view_") for codename in codenames)


def test_compliance_officers_may_view_everything_a_manager_sees(db: None) -> None:
    officers = set(Group.objects.get(name=COMPLIANCE_OFFICERS).permissions.values_list("codename", flat=True))
    managers = set(Group.objects.get(name=MANAGERS).permissions.values_list("codename", flat=True))
    assert managers <= officers


# --- field workers and the admin ------------------------------------------------------------------


def test_a_field_worker_is_not_staff(user: Callable[[str], User]) -> None:
    assert {name: user(name).is_staff for name in ("alice", "bob", "carol")} == {
        "alice": False,
        "bob": False,
        "carol": False,
    }


def test_a_field_worker_is_sent_to_the_admin_login(demo: None) -> None:
    response = logged_in("alice").get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_a_field_worker_cannot_log_into_the_admin(demo: None) -> None:
    client = Client()
    response = client.post("/admin/login/", {"username": "alice", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 200  # the form again, with an error
    assert b"staff account" in response.content
    assert client.get("/admin/records/record/").status_code == 302


# --- managers: read-only --------------------------------------------------------------------------


@pytest.mark.parametrize("url", CHANGELISTS)
def test_a_manager_can_view_every_changelist(a_record: Record, url: str) -> None:
    assert logged_in("mark").get(url).status_code == 200


@pytest.mark.parametrize("what", ["record", "ledger", "device"])
def test_a_manager_can_open_but_not_change_records_ledger_and_devices(a_record: Record, what: str) -> None:
    url = admin_urls(a_record)[what]
    mark = logged_in("mark")

    assert mark.get(url).status_code == 200
    assert mark.post(url, {"data": "{}"}).status_code == 403


def test_a_managers_post_leaves_the_record_as_it_was(a_record: Record) -> None:
    url = admin_urls(a_record)["record"]
    logged_in("mark").post(url, {"data": '{"location": "B2", "sku": "X", "counted": 1, "unit": "each"}'})
    a_record.refresh_from_db()
    assert a_record.version == 1
    assert a_record.data["location"] == "A1"


def test_a_manager_cannot_add_records_or_record_types(demo: None) -> None:
    mark = logged_in("mark")
    assert mark.get("/admin/records/record/add/").status_code == 403
    assert mark.get("/admin/records/recordtype/add/").status_code == 403


# --- compliance officers --------------------------------------------------------------------------


@pytest.mark.parametrize("url", CHANGELISTS)
def test_a_compliance_officer_can_view_every_changelist(a_record: Record, url: str) -> None:
    assert logged_in("olivia").get(url).status_code == 200


def test_a_compliance_officer_can_open_a_record_for_editing(a_record: Record) -> None:
    response = logged_in("olivia").get(admin_urls(a_record)["record"])
    assert response.status_code == 200
    assert b'name="_save"' in response.content


def test_a_compliance_officer_cannot_change_devices_or_the_ledger(a_record: Record) -> None:
    urls = admin_urls(a_record)
    olivia = logged_in("olivia")
    assert olivia.post(urls["ledger"], {}).status_code == 403
    assert olivia.post(urls["device"], {"name": "renamed"}).status_code == 403
    assert Device.objects.get().name == "alice's phone"


# --- seed_demo ------------------------------------------------------------------------------------


def snapshot() -> dict[str, Any]:
    return {
        "users": sorted(
            (u.username, u.is_staff, u.is_superuser, u.is_active, sorted(u.groups.values_list("name", flat=True)))
            for u in User.objects.all()
        ),
        "teams": sorted(
            (t.slug, t.name, sorted(t.members.values_list("username", flat=True))) for t in Team.objects.all()
        ),
        "record_types": sorted(
            (rt.key, rt.schema_version, rt.updated_at, rt.conflict_policy) for rt in RecordType.objects.all()
        ),
        "groups": Group.objects.count(),
    }


def test_seed_demo_twice_leaves_exactly_the_same_data(db: None) -> None:
    seed()
    first = snapshot()
    seed()
    assert snapshot() == first


def test_seed_demo_makes_the_demo_teams_users_and_record_types(db: None) -> None:
    seed()
    seed()
    assert sorted(User.objects.values_list("username", flat=True)) == [
        "admin",
        "alice",
        "bob",
        "carol",
        "mark",
        "olivia",
    ]
    assert {t.slug: sorted(t.members.values_list("username", flat=True)) for t in Team.objects.all()} == {
        "north": ["alice", "bob", "olivia"],
        "south": ["carol", "olivia"],
    }
    assert sorted(RecordType.objects.values_list("key", flat=True)) == [
        "clocking",
        "incident",
        "inspection",
        "job_card",
        "stock_count",
    ]
    assert set(RecordType.objects.values_list("schema_version", flat=True)) == {1}
    assert User.objects.get(username="admin").is_superuser


def test_every_demo_password_works_after_seeding_twice(db: None) -> None:
    seed()
    seed()
    for username in ("alice", "bob", "carol", "olivia", "mark", "admin"):
        assert authenticate(username=username, password=PASSWORD) is not None, username


def test_seed_demo_resets_a_changed_demo_user(db: None) -> None:
    seed()
    alice = User.objects.get(username="alice")
    alice.set_password("something else")
    alice.is_active = False
    alice.save()
    Team.objects.get(slug="north").members.remove(alice)

    seed()
    alice.refresh_from_db()
    assert alice.is_active
    assert authenticate(username="alice", password=PASSWORD) is not None
    assert Team.objects.filter(slug="north", members=alice).exists()


def test_seed_demo_bumps_the_schema_version_only_when_a_record_type_changed(db: None) -> None:
    seed()
    RecordType.objects.filter(key="clocking").update(name="Renamed by hand")
    seed()
    versions = dict(RecordType.objects.values_list("key", "schema_version"))
    assert versions["clocking"] == 2
    assert RecordType.objects.get(key="clocking").name == "Clock-in / clock-out"
    assert {key: v for key, v in versions.items() if key != "clocking"} == {
        "incident": 1,
        "inspection": 1,
        "job_card": 1,
        "stock_count": 1,
    }
