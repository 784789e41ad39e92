"""The records back-office: record types refuse invalid schemas, the records changelist filters
and searches, admin edits and deletes go through the one service, the ledger is read-only."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from records.models import Record, RecordType, RecordVersion, Team
from sync.models import LedgerEntry
from tests.conftest import DeviceClient, logged_in


def stock(**fields: Any) -> dict[str, Any]:
    return {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each", **fields}


def pushed(device: DeviceClient, type_key: str = "stock_count", data: dict[str, Any] | None = None) -> Record:
    record = str(uuid.uuid4())
    action = {
        "id": str(uuid.uuid4()),
        "op": "create",
        "type": type_key,
        "record": record,
        "data": stock() if data is None else data,
        "captured_at": (timezone.now() - timedelta(minutes=5)).isoformat(),
    }
    [result] = device.push([action]).json()["results"]
    assert result["status"] == "applied", result
    return Record.objects.get(pk=record)


@pytest.fixture
def admin(demo: None) -> Client:
    return logged_in("admin")


@pytest.fixture
def olivia(demo: None) -> Client:
    return logged_in("olivia")


def listed(response: Any) -> set[str]:
    assert response.status_code == 200, response.content[:500]
    return {str(r.pk) for r in response.context["cl"].result_list}


# --- record types -----------------------------------------------------------------------------


def record_type_form(**overrides: Any) -> dict[str, Any]:
    form = {
        "key": "meter_reading",
        "name": "Meter reading",
        "schema": json.dumps({"type": "object", "properties": {"reading": {"type": "integer"}}}),
        "schema_version": "1",
        "conflict_policy": "lww",
        "field_policies": "{}",
    }
    return {**form, **overrides}


def test_a_record_type_with_a_valid_schema_is_saved(admin: Client) -> None:
    response = admin.post("/admin/records/recordtype/add/", record_type_form())

    assert response.status_code == 302, response.content[:2000]
    assert RecordType.objects.get(key="meter_reading").schema["properties"]["reading"] == {"type": "integer"}


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "object", "properties": {"reading": {"type": "nonsense"}}}, "Not a valid JSON Schema"),
        ({"type": "object", "required": "reading"}, "Not a valid JSON Schema"),
        ({"type": "array"}, 'must have "type": "object"'),
        (["not", "an", "object"], "must be a JSON object"),
    ],
    ids=["unknown-type", "required-not-a-list", "not-an-object-schema", "a-list"],
)
def test_a_record_type_with_an_invalid_schema_is_refused_with_the_reason(
    admin: Client, schema: Any, reason: str
) -> None:
    response = admin.post("/admin/records/recordtype/add/", record_type_form(schema=json.dumps(schema)))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "schema" in errors
    assert reason in " ".join(errors["schema"])
    assert not RecordType.objects.filter(key="meter_reading").exists()


def test_field_policies_must_name_fields_of_the_schema(admin: Client) -> None:
    response = admin.post(
        "/admin/records/recordtype/add/", record_type_form(field_policies=json.dumps({"colour": "merge"}))
    )

    assert response.status_code == 200
    assert "colour" in " ".join(response.context["adminform"].form.errors["field_policies"])


# --- records changelist -----------------------------------------------------------------------


@pytest.fixture
def records(device_for: Any) -> dict[str, Record]:
    alice, carol = device_for("alice"), device_for("carol")
    found = {
        "north_stock": pushed(alice),
        "north_job": pushed(alice, "job_card", {"title": "Fix pump", "site": "Mine 3", "status": "open"}),
        "south_stock": pushed(carol),
        "north_gone": pushed(alice),
    }
    gone = found["north_gone"]
    action = {
        "id": str(uuid.uuid4()),
        "op": "delete",
        "type": "stock_count",
        "record": str(gone.pk),
        "base_version": 1,
        "captured_at": timezone.now().isoformat(),
    }
    assert alice.push([action]).json()["results"][0]["status"] == "applied"
    return found


def ids(records: dict[str, Record], *names: str) -> set[str]:
    return {str(records[name].pk) for name in names}


def test_the_records_changelist_filters_by_type_team_and_deleted(admin: Client, records: dict[str, Record]) -> None:
    job_card = RecordType.objects.get(key="job_card")
    south = Team.objects.get(slug="south")
    url = "/admin/records/record/"

    assert listed(admin.get(url)) == ids(records, "north_stock", "north_job", "south_stock", "north_gone")
    assert listed(admin.get(url, {"type__id__exact": job_card.pk})) == ids(records, "north_job")
    assert listed(admin.get(url, {"team__id__exact": south.pk})) == ids(records, "south_stock")
    assert listed(admin.get(url, {"deleted__exact": "1"})) == ids(records, "north_gone")
    assert listed(admin.get(url, {"deleted__exact": "0", "team__id__exact": south.pk})) == ids(records, "south_stock")


def test_the_records_changelist_searches_by_uuid(admin: Client, records: dict[str, Record]) -> None:
    wanted = records["south_stock"]

    assert listed(admin.get("/admin/records/record/", {"q": str(wanted.pk)})) == {str(wanted.pk)}
    assert listed(admin.get("/admin/records/record/", {"q": f"  {str(wanted.pk).upper()} "})) == {str(wanted.pk)}
    assert listed(admin.get("/admin/records/record/", {"q": "not-a-uuid"})) == set()
    assert listed(admin.get("/admin/records/record/", {"q": str(uuid.uuid4())})) == set()


def test_a_record_page_shows_its_data_and_versions_read_only(admin: Client, records: dict[str, Record]) -> None:
    record = records["north_gone"]

    response = admin.get(f"/admin/records/record/{record.pk}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "&quot;sku&quot;: &quot;BOLT-8&quot;" in page  # pretty-printed, not a one-line blob
    [versions] = [f for f in response.context["inline_admin_formsets"]]
    assert versions.has_add_permission is False
    assert versions.has_change_permission is False
    assert versions.formset.can_delete is False
    assert len(list(versions)) == 2


# --- edits go through the service -------------------------------------------------------------


def change_form(record: Record, data: dict[str, Any]) -> dict[str, Any]:
    count = record.versions.count()
    return {
        "data": json.dumps(data),
        "base_version": str(record.version),
        "versions-TOTAL_FORMS": str(count),
        "versions-INITIAL_FORMS": str(count),
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }


def test_editing_a_records_data_in_the_admin_goes_through_the_service(
    olivia: Client, records: dict[str, Record]
) -> None:
    record = records["north_stock"]

    response = olivia.post(f"/admin/records/record/{record.pk}/change/", change_form(record, stock(counted=41)))

    assert response.status_code == 302, response.content[:3000]
    record.refresh_from_db()
    assert (record.version, record.data["counted"]) == (2, 41)
    version = RecordVersion.objects.get(record=record, version=2)
    assert (version.op, version.source, version.actor.username, version.device_id) == (
        "update",
        "admin",
        "olivia",
        None,
    )
    event = AuditEvent.objects.get(object_id=str(record.pk), verb="record.updated")
    assert (event.source, event.actor_username, event.changes) == ("admin", "olivia", {"counted": [40, 41]})
    assert record.change_seq == event.seq  # devices pull the admin's edit too


def test_an_admin_edit_that_breaks_the_schema_is_refused_and_changes_nothing(
    olivia: Client, records: dict[str, Record]
) -> None:
    record = records["north_stock"]
    events = AuditEvent.objects.count()

    response = olivia.post(f"/admin/records/record/{record.pk}/change/", change_form(record, stock(counted="lots")))

    assert response.status_code == 200
    assert "data.counted" in " ".join(response.context["adminform"].form.errors["data"])
    record.refresh_from_db()
    assert record.version == 1
    assert AuditEvent.objects.count() == events


def test_an_admin_edit_the_service_refuses_is_neither_logged_nor_called_a_success(
    olivia: Client, records: dict[str, Record]
) -> None:
    from django.contrib.admin.models import LogEntry

    record = records["north_stock"]
    form = change_form(record, stock(counted=41))
    Record.objects.filter(pk=record.pk).update(deleted=True)  # deleted while the officer had the page open

    response = olivia.post(f"/admin/records/record/{record.pk}/change/", form, follow=True)

    shown = [str(m) for m in response.context["messages"]]
    assert any(m.startswith("Not saved:") for m in shown), shown
    assert not any("successfully" in m for m in shown), shown
    assert response.redirect_chain[-1][0].endswith(f"/admin/records/record/{record.pk}/change/")
    assert not LogEntry.objects.filter(object_id=str(record.pk)).exists()
    record.refresh_from_db()
    assert record.version == 1


def test_deleting_a_record_in_the_admin_leaves_a_tombstone(admin: Client, records: dict[str, Record]) -> None:
    record = records["north_stock"]

    response = admin.post(f"/admin/records/record/{record.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    record.refresh_from_db()
    assert (record.deleted, record.version) == (True, 2)
    assert RecordVersion.objects.get(record=record, version=2).source == "admin"
    event = AuditEvent.objects.get(object_id=str(record.pk), verb="record.deleted")
    assert (event.source, event.actor_username) == ("admin", "admin")


def test_bulk_deleting_records_in_the_admin_leaves_tombstones(admin: Client, records: dict[str, Record]) -> None:
    chosen = [records["north_stock"], records["south_stock"]]

    response = admin.post(
        "/admin/records/record/",
        {"action": "delete_selected", "_selected_action": [str(r.pk) for r in chosen], "post": "yes"},
    )

    assert response.status_code == 302
    assert Record.objects.filter(pk__in=[r.pk for r in chosen], deleted=True).count() == 2
    assert Record.objects.count() == 4


# --- the ledger -------------------------------------------------------------------------------


def test_the_action_ledger_is_read_only_in_the_admin(admin: Client, records: dict[str, Record]) -> None:
    entry = LedgerEntry.objects.first()
    assert entry is not None
    base = "/admin/sync/ledgerentry/"

    assert admin.get(base).status_code == 200
    assert admin.get(base, {"status__exact": "applied"}).status_code == 200
    assert admin.get(base, {"device__id__exact": str(entry.device_id)}).status_code == 200
    assert admin.get(f"{base}add/").status_code == 403
    assert admin.get(f"{base}{entry.pk}/delete/").status_code == 403
    assert admin.post(f"{base}{entry.pk}/change/", {"status": "rejected"}).status_code == 403
    page = admin.get(f"{base}{entry.pk}/change/")
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    entry.refresh_from_db()
    assert entry.status == "applied"


def test_the_ledger_changelist_offers_no_bulk_delete(admin: Client, records: dict[str, Record]) -> None:
    response = admin.get("/admin/sync/ledgerentry/")

    assert response.status_code == 200
    assert b"delete_selected" not in response.content
