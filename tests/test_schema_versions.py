"""Record-type schema versions: an officer changes a form while devices are offline with the old
one, and nothing they captured is lost or silently broken (docs/schema-versions.md).

Through the HTTP API and the admin, on SQLite and (with DATABASE_URL) MariaDB. The form is the
demo's stock count; alice's phone captured with version 1, the admin (a superuser) changes it."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from approvals.models import Review
from audit.models import AuditEvent
from records.models import Record, RecordType, RecordTypeVersion, RecordVersion
from tests.conftest import DeviceClient, logged_in

SHORT = {"type": "string", "minLength": 1, "maxLength": 200}


@pytest.fixture
def admin(demo: None) -> Client:
    return logged_in("admin")


@pytest.fixture
def alice(device_for: Any) -> DeviceClient:
    return device_for("alice")


def stock_type() -> RecordType:
    return RecordType.objects.get(key="stock_count")


def schema_v1() -> dict[str, Any]:
    return copy.deepcopy(RecordTypeVersion.objects.get(record_type=stock_type(), version=1).schema)


def with_changes(
    *, add: dict[str, Any] | None = None, remove: tuple[str, ...] = (), require: tuple[str, ...] = ()
) -> dict[str, Any]:
    schema = schema_v1()
    for name in remove:
        del schema["properties"][name]
    schema["properties"].update(add or {})
    schema["required"] = [*[n for n in schema["required"] if n not in remove], *require]
    return schema


def change_schema(admin: Client, schema: dict[str, Any], rules: dict[str, Any] | None = None, **form: Any) -> Any:
    stock = stock_type()
    body = {
        "key": stock.key,
        "name": stock.name,
        "schema": json.dumps(schema),
        "upgrade": json.dumps(rules) if rules else "",
        "conflict_policy": stock.conflict_policy,
        "field_policies": json.dumps(stock.field_policies),
        **form,
    }
    return admin.post(f"/admin/records/recordtype/{stock.pk}/change/", body)


def saved(response: Any) -> None:
    if response.status_code != 302:
        form = response.context["adminform"].form
        raise AssertionError(f"not saved: {form.errors.as_json()}")


def refused(response: Any, field: str = "schema") -> str:
    assert response.status_code == 200, response.status_code
    errors = response.context["adminform"].form.errors
    assert field in errors, errors.as_json()
    return " ".join(errors[field])


def stock(**fields: Any) -> dict[str, Any]:
    return {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each", **fields}


def push(device: DeviceClient, **action: Any) -> dict[str, Any]:
    body = {
        "id": str(uuid.uuid4()),
        "type": "stock_count",
        "captured_at": (timezone.now() - timedelta(minutes=5)).isoformat(),
        **action,
    }
    body["record"] = str(body.get("record") or uuid.uuid4())
    response = device.push([body])
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    return result


def create(device: DeviceClient, data: dict[str, Any], **action: Any) -> dict[str, Any]:
    return push(device, op="create", data=data, **action)


def pulled(device: DeviceClient) -> dict[str, Any]:
    response = device.pull()
    assert response.status_code == 200, response.content
    return dict(response.json())


def record_types(device: DeviceClient) -> dict[str, dict[str, Any]]:
    response = device.get("/api/v1/record-types")
    assert response.status_code == 200, response.content
    return {t["key"]: t for t in response.json()}


# --- versions ---------------------------------------------------------------------------------


def test_editing_the_schema_in_the_admin_adds_a_version_and_keeps_the_old_one(admin: Client, alice) -> None:
    old = schema_v1()
    new = with_changes(add={"bin": SHORT})

    saved(change_schema(admin, new))

    stock = stock_type()
    assert stock.schema_version == 2
    assert stock.schema == new
    versions = {v.version: v for v in stock.versions.all()}
    assert versions[1].schema == old
    assert versions[2].schema == new
    assert versions[2].created_by == User.objects.get(username="admin")
    served = record_types(alice)["stock_count"]
    assert (served["version"], served["schema"]) == (2, new)
    event = AuditEvent.objects.filter(verb="record_type.version_added").order_by("-seq").first()
    assert event is not None and event.changes["schema_version"] == [1, 2]


def test_a_save_that_does_not_change_the_schema_adds_no_version(admin: Client) -> None:
    saved(change_schema(admin, schema_v1(), name="Stock take"))

    stock = stock_type()
    assert (stock.name, stock.schema_version, stock.versions.count()) == ("Stock take", 1, 1)


def test_a_version_is_immutable(admin: Client) -> None:
    version = RecordTypeVersion.objects.get(record_type=stock_type(), version=1)
    version.upgrade = {"drop": ["note"]}

    with pytest.raises(ValueError, match="immutable"):
        version.save()


def test_a_record_type_added_in_the_admin_starts_at_version_one(admin: Client) -> None:
    schema = {"type": "object", "properties": {"reading": {"type": "integer"}}}
    form = {"key": "meter", "name": "Meter", "schema": json.dumps(schema), "conflict_policy": "lww"}
    saved(admin.post("/admin/records/recordtype/add/", {**form, "field_policies": "{}", "upgrade": ""}))

    meter = RecordType.objects.get(key="meter")
    assert meter.schema_version == 1
    assert list(meter.versions.values_list("version", "schema")) == [(1, schema)]


# --- an old device's push is brought forward ---------------------------------------------------


def test_an_old_devices_create_gets_the_default_of_a_required_field_added_since(admin: Client, alice) -> None:
    saved(change_schema(admin, with_changes(add={"bin": SHORT}, require=("bin",)), {"defaults": {"bin": "unsorted"}}))

    result = create(alice, stock(), schema_version=1)

    assert result["status"] == "applied", result
    assert result["data"] == stock(bin="unsorted")
    version = RecordVersion.objects.get(record_id=result["record"])
    assert (version.schema_version, version.data["bin"]) == (2, "unsorted")


def test_a_push_without_a_schema_version_is_taken_as_captured_with_the_current_one(admin: Client, alice) -> None:
    saved(change_schema(admin, with_changes(add={"bin": SHORT}, require=("bin",)), {"defaults": {"bin": "unsorted"}}))

    result = create(alice, stock())

    assert result["status"] == "rejected"
    assert result["error"]["code"] == "schema_violation"
    assert result["error"]["fields"] == {"data.bin": ["This field is required."]}


def test_a_renamed_field_is_renamed_in_an_old_devices_create_and_update(admin: Client, alice) -> None:
    created = create(alice, stock(note="top shelf"))
    saved(change_schema(admin, with_changes(add={"remark": SHORT}, remove=("note",)), {"renames": {"note": "remark"}}))

    fresh = create(alice, stock(note="bottom shelf"), schema_version=1)
    edited = push(
        alice, op="update", record=created["record"], base_version=1, data={"note": "middle"}, schema_version=1
    )

    assert fresh["status"] == "applied", fresh
    assert fresh["data"] == stock(remark="bottom shelf")
    assert edited["status"] == "applied", edited
    assert edited["data"] == stock(remark="middle")
    record = Record.objects.get(pk=created["record"])
    assert (record.data, record.schema_version, record.version) == (stock(remark="middle"), 2, 2)


def test_a_dropped_field_is_not_applied_but_kept_on_the_version_row(admin: Client, alice) -> None:
    captured = "2026-11-25T09:58:00+00:00"
    saved(change_schema(admin, with_changes(remove=("counted_at",)), {"drop": ["counted_at"]}))

    result = create(alice, stock(counted_at=captured), schema_version=1)

    assert result["status"] == "applied", result
    assert result["data"] == stock()
    version = RecordVersion.objects.get(record_id=result["record"])
    assert version.dropped == {"counted_at": captured}
    event = AuditEvent.objects.get(object_id=result["record"], verb="record.created")
    assert event.changes["(dropped)"] == [{"counted_at": captured}, None]


def test_an_old_update_of_nothing_but_a_dropped_field_is_journalled_not_lost(admin: Client, alice) -> None:
    created = create(alice, stock())
    saved(change_schema(admin, with_changes(remove=("counted_at",)), {"drop": ["counted_at"]}))

    result = push(
        alice,
        op="update",
        record=created["record"],
        base_version=1,
        data={"counted_at": "2026-11-25T10:00:00+00:00"},
        schema_version=1,
    )

    assert (result["status"], result["version"]) == ("applied", 1)
    event = AuditEvent.objects.get(object_id=created["record"], verb="record.unchanged")
    assert event.changes == {"(dropped)": [{"counted_at": "2026-11-25T10:00:00+00:00"}, None]}


def test_an_action_that_does_not_match_its_own_version_is_rejected(admin: Client, alice) -> None:
    saved(change_schema(admin, with_changes(add={"bin": SHORT})))

    result = create(alice, stock(bin="B7"), schema_version=1)

    assert result["status"] == "rejected"
    assert result["error"]["code"] == "schema_violation"
    assert "version 1" in result["error"]["message"]
    assert result["error"]["fields"] == {"data.bin": ["Unknown field."]}


@pytest.mark.parametrize("version", [0, 3])
def test_a_schema_version_the_type_never_had_is_refused(admin: Client, alice, version: int) -> None:
    saved(change_schema(admin, with_changes(add={"bin": SHORT})))

    response = alice.push(
        [
            {
                "id": str(uuid.uuid4()),
                "op": "create",
                "type": "stock_count",
                "record": str(uuid.uuid4()),
                "data": stock(),
                "captured_at": timezone.now().isoformat(),
                "schema_version": version,
            }
        ]
    )

    if version == 0:
        assert response.status_code == 400
        assert "actions.0.schema_version" in response.json()["error"]["fields"]
    else:
        [result] = response.json()["results"]
        assert result["error"]["code"] == "unknown_schema_version"
        assert result["error"]["fields"] == {"schema_version": ["No such version."]}
    assert not Record.objects.exists()


def test_rules_are_applied_version_after_version(admin: Client, alice) -> None:
    saved(change_schema(admin, with_changes(add={"remark": SHORT}, remove=("note",)), {"renames": {"note": "remark"}}))
    v3 = copy.deepcopy(stock_type().schema)
    del v3["properties"]["remark"]
    v3["properties"]["comment"] = SHORT
    v3["properties"]["bin"] = SHORT
    v3["required"] = [*v3["required"], "bin"]
    saved(change_schema(admin, v3, {"renames": {"remark": "comment"}, "defaults": {"bin": "unsorted"}}))

    result = create(alice, stock(note="from v1"), schema_version=1)

    assert result["data"] == stock(comment="from v1", bin="unsorted")


# --- what no rule can bring forward waits for review --------------------------------------------


def test_a_create_no_rule_can_bring_forward_waits_for_review_and_an_officer_completes_it(admin: Client, alice) -> None:
    # No stock count exists yet, so the admin accepts a new required field without a default.
    saved(change_schema(admin, with_changes(add={"bin": SHORT}, require=("bin",))))

    result = create(alice, stock(note="crate 4"), schema_version=1)

    assert result["status"] == "pending_review", result
    assert not Record.objects.exists()
    review = Review.objects.get(pk=result["review"])
    assert review.reason == "schema_upgrade"
    assert review.detail["captured_version"] == 1
    assert review.detail["current_version"] == 2
    assert review.detail["errors"] == {"data.bin": ["This field is required."]}

    olivia = logged_in("olivia")
    page = olivia.get(f"/admin/approvals/review/{review.pk}/change/")
    html = page.content.decode()
    assert 'id="schema-upgrade"' in html
    assert 'data-field="bin"' in html
    assert [row["how"] for row in page.context["rows"] if row["name"] == "bin"] == ["needs_value"]
    refusal = olivia.post(f"/admin/approvals/review/{review.pk}/change/", {"seen_version": ""}, follow=True)
    assert "Enter a value for the required fields: bin" in refusal.content.decode()

    decided = olivia.post(
        f"/admin/approvals/review/{review.pk}/change/",
        {"seen_version": "", "choice__bin": "value", "value__bin": '"B7"'},
    )

    assert decided.status_code == 302
    record = Record.objects.get(pk=result["record"])
    assert record.data == stock(note="crate 4", bin="B7")
    answer = alice.get(f"/api/v1/sync/actions/{result['id']}").json()
    assert (answer["status"], answer["data"]) == ("applied", stock(note="crate 4", bin="B7"))


def test_an_update_whose_value_no_longer_fits_waits_for_review(admin: Client, alice) -> None:
    created = create(alice, stock(note="short"))
    narrower = with_changes()
    narrower["properties"]["note"] = {"type": "string", "maxLength": 10}
    saved(change_schema(admin, narrower))

    result = push(
        alice,
        op="update",
        record=created["record"],
        base_version=1,
        data={"note": "a note much longer than ten"},
        schema_version=1,
    )

    assert result["status"] == "pending_review", result
    assert (result["version"], result["data"]) == (1, stock(note="short"))
    review = Review.objects.get(pk=result["review"])
    assert review.reason == "schema_upgrade"
    assert list(review.detail["errors"]) == ["data.note"]
    assert Record.objects.get(pk=created["record"]).version == 1


def test_a_review_opened_before_a_rename_is_decided_in_the_new_version(admin: Client, device_for) -> None:
    permit = RecordType.objects.create(
        key="permit",
        name="Permit",
        conflict_policy="review_all",
        schema={
            "type": "object",
            "properties": {"title": SHORT, "site": SHORT},
            "required": ["title"],
            "additionalProperties": False,
        },
    )
    alice = device_for("alice")
    result = push(alice, op="create", type="permit", data={"title": "Hot work", "site": "Pit 2"})
    assert result["status"] == "pending_review"
    form = {
        "key": "permit",
        "name": "Permit",
        "schema": json.dumps(
            {
                "type": "object",
                "properties": {"title": SHORT, "location": SHORT},
                "required": ["title"],
                "additionalProperties": False,
            }
        ),
        "upgrade": json.dumps({"renames": {"site": "location"}}),
        "conflict_policy": "review_all",
        "field_policies": "{}",
    }
    saved(admin.post(f"/admin/records/recordtype/{permit.pk}/change/", form))

    decided = logged_in("olivia").post(f"/admin/approvals/review/{result['review']}/change/", {"seen_version": ""})

    assert decided.status_code == 302
    assert Record.objects.get(pk=result["record"]).data == {"title": "Hot work", "location": "Pit 2"}
    assert Review.objects.get(pk=result["review"]).proposed_data == {"title": "Hot work", "site": "Pit 2"}


# --- the admin refuses what would break existing data -------------------------------------------


def test_the_admin_refuses_a_required_field_without_a_default_while_records_lack_it(admin: Client, alice) -> None:
    existing = create(alice, stock())

    message = refused(change_schema(admin, with_changes(add={"bin": SHORT}, require=("bin",))))

    assert "1 existing record(s)" in message
    assert "Give a default for bin" in message
    assert f"record {existing['record']}: data.bin: This field is required." in message
    unchanged = stock_type()
    assert (unchanged.schema_version, unchanged.versions.count()) == (1, 1)
    assert "bin" not in unchanged.schema["properties"]


def test_with_a_default_the_change_is_saved_and_existing_records_are_served_with_it(admin: Client, alice) -> None:
    existing = create(alice, stock())

    saved(change_schema(admin, with_changes(add={"bin": SHORT}, require=("bin",)), {"defaults": {"bin": "unsorted"}}))

    [change] = pulled(alice)["changes"]
    assert change["data"] == stock(bin="unsorted")
    # Upgraded when read; stored in the new version by its next write.
    assert Record.objects.get(pk=existing["record"]).schema_version == 1
    edited = push(alice, op="update", record=existing["record"], base_version=1, data={"counted": 41})
    assert edited["data"] == stock(bin="unsorted", counted=41)
    record = Record.objects.get(pk=existing["record"])
    assert (record.schema_version, record.data) == (2, stock(bin="unsorted", counted=41))


def test_the_admin_refuses_removing_a_field_records_still_hold_unless_it_is_dropped(admin: Client, alice) -> None:
    create(alice, stock(note="keep me"))

    message = refused(change_schema(admin, with_changes(remove=("note",))))
    assert "data.note: Unknown field." in message

    saved(change_schema(admin, with_changes(remove=("note",)), {"drop": ["note"]}))
    [change] = pulled(alice)["changes"]
    assert change["data"] == stock()


def test_the_admin_refuses_a_change_that_would_strand_an_action_waiting_for_review(admin: Client, device_for) -> None:
    permit = RecordType.objects.create(
        key="permit",
        name="Permit",
        conflict_policy="review_all",
        schema={"type": "object", "properties": {"title": SHORT}, "required": ["title"]},
    )
    result = push(device_for("alice"), op="create", type="permit", data={"title": "Hot work"})
    form = {
        "key": "permit",
        "name": "Permit",
        "schema": json.dumps(
            {"type": "object", "properties": {"title": SHORT, "site": SHORT}, "required": ["title", "site"]}
        ),
        "upgrade": "",
        "conflict_policy": "review_all",
        "field_policies": "{}",
    }

    message = refused(admin.post(f"/admin/records/recordtype/{permit.pk}/change/", form))

    assert f"review {result['review']}: data.site: This field is required." in message
    assert RecordType.objects.get(pk=permit.pk).schema_version == 1


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ({"renames": {"colour": "remark"}}, "'colour' is not a field of the previous version"),
        ({"drop": ["sku"]}, "'sku' is still a field of the new schema"),
        ({"defaults": {"bin": 7}}, "bin: 7 is not of type 'string'"),
        ({"defaults": {"nowhere": 1}}, "'nowhere' is not a field of the new schema"),
        ({"move": {}}, "Unknown rule 'move'"),
    ],
    ids=["rename-unknown", "drop-kept", "default-invalid", "default-unknown", "unknown-rule"],
)
def test_upgrade_rules_that_do_not_fit_the_schemas_are_refused(
    admin: Client, rules: dict[str, Any], problem: str
) -> None:
    message = refused(change_schema(admin, with_changes(add={"bin": SHORT, "remark": SHORT}), rules), "upgrade")

    assert problem in message
    assert stock_type().schema_version == 1


def test_a_schema_edit_of_a_version_someone_else_replaced_meanwhile_is_refused(admin: Client) -> None:
    saved(change_schema(admin, with_changes(add={"bin": SHORT}), based_on="1"))

    message = refused(change_schema(admin, with_changes(add={"shelf": SHORT}), based_on="1"))

    assert "changed by someone else since you opened this page (now version 2)" in message
    assert "shelf" not in stock_type().schema["properties"]
    assert stock_type().schema_version == 2


def test_the_change_page_carries_the_version_it_was_opened_on(admin: Client) -> None:
    page = admin.get(f"/admin/records/recordtype/{stock_type().pk}/change/")

    assert page.context["adminform"].form["based_on"].value() == 1
    assert 'name="based_on"' in page.content.decode()
    assert 'name="upgrade"' not in admin.get("/admin/records/recordtype/add/").content.decode()


def test_upgrade_rules_without_a_schema_change_are_refused(admin: Client) -> None:
    assert "the schema is unchanged" in refused(change_schema(admin, schema_v1(), {"drop": ["note"]}), "upgrade")


# --- devices and the pull signal -----------------------------------------------------------------


def test_a_pull_tells_a_device_behind_to_refresh_its_record_types(admin: Client, device_for) -> None:
    alice, bob = device_for("alice"), device_for("bob")
    record_types(alice)
    assert pulled(bob)["record_types_changed"] is True  # never fetched them
    assert pulled(alice)["record_types_changed"] is False

    saved(change_schema(admin, with_changes(add={"bin": SHORT})))

    page = pulled(alice)
    assert page["record_types_changed"] is True
    assert set(page) == {"changes", "cursor", "has_more", "record_types_changed"}
    assert record_types(alice)["stock_count"]["version"] == 2
    assert pulled(alice)["record_types_changed"] is False


def test_the_record_type_page_shows_which_devices_last_synced_with_which_version(admin: Client, device_for) -> None:
    alice, bob = device_for("alice"), device_for("bob")
    record_types(alice)
    saved(change_schema(admin, with_changes(add={"bin": SHORT})))
    record_types(bob)
    create(alice, stock(), schema_version=1)

    page = admin.get(f"/admin/records/recordtype/{stock_type().pk}/change/")

    html = page.content.decode()
    assert 'id="devices-by-version"' in html
    assert "v2: 1, v1: 1 (1 behind v2)" in html
    rows = {row.split("</td>")[0].split(">")[-1]: row for row in html.split('<tr class="')[1:] if "phone" in row}
    assert rows["alice&#x27;s phone"].startswith("behind")
    assert "<td>v1</td><td>v1</td>" in rows["alice&#x27;s phone"]
    assert rows["bob&#x27;s phone"].startswith("current")
    assert 'id="schema-versions"' in html


def test_a_manager_sees_the_versions_and_devices_read_only(admin: Client, device_for) -> None:
    record_types(device_for("alice"))
    saved(change_schema(admin, with_changes(add={"bin": SHORT})))

    page = logged_in("mark").get(f"/admin/records/recordtype/{stock_type().pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="schema-versions"' in html and 'id="devices-by-version"' in html
    assert 'name="upgrade"' not in html
