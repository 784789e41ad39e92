"""Conflict policies (lww, merge, review, review_all, per-field overrides) and the review
decision, through the push API and the approvals service."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from approvals.models import Review
from approvals.services import DecisionError, decide_review
from audit.models import AuditEvent
from records.models import Record, RecordType, RecordVersion

T0 = "2026-11-20T08:00:00+00:00"
T1 = "2026-11-20T09:00:00+00:00"
T2 = "2026-11-20T10:00:00+00:00"
SENT = "2026-11-20T12:00:00+00:00"

JOB = {"title": "Fix pump", "site": "Mine 3", "status": "open", "description": "Leaking seal"}
INSPECTION = {"vehicle": "TRK-7", "inspector": "alice", "checklist": [{"item": "brakes", "ok": True}], "passed": True}


def action(
    op: str, record: str, type_: str, data: dict[str, Any] | None = None, base: int | None = None, at: str = T0
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": str(uuid.uuid4()), "op": op, "type": type_, "record": record, "captured_at": at}
    if data is not None:
        body["data"] = data
    if base is not None:
        body["base_version"] = base
    return body


def push_one(client: Any, act: dict[str, Any]) -> dict[str, Any]:
    response = client.push([act], sent_at=SENT)
    assert response.status_code == 200, response.content
    return response.json()["results"][0]


@pytest.fixture
def record_of(device_for: Any) -> Any:
    """Create a record through alice's device and return (record id, alice client)."""

    def make(type_: str, data: dict[str, Any]) -> tuple[str, Any]:
        alice = device_for("alice")
        record = str(uuid.uuid4())
        assert push_one(alice, action("create", record, type_, data))["status"] == "applied"
        return record, alice

    return make


@pytest.fixture
def oscar(demo: None) -> User:
    """A second compliance officer, for four eyes."""
    user = User.objects.create_user("oscar", password="fieldsync-demo", is_staff=True)
    user.groups.add(Group.objects.get(name="Compliance officers"))
    return user


def set_policy(key: str, policy: str, fields: dict[str, str] | None = None) -> None:
    RecordType.objects.filter(key=key).update(conflict_policy=policy, field_policies=fields or {})


# --- merge -----------------------------------------------------------------------------------


def test_merge_combines_fields_changed_on_one_side_each(record_of: Any, device_for: Any) -> None:
    record, alice = record_of("job_card", JOB)
    bob = device_for("bob")
    assert (
        push_one(alice, action("update", record, "job_card", {"status": "in_progress"}, base=1, at=T1))["version"] == 2
    )
    result = push_one(bob, action("update", record, "job_card", {"description": "Seal replaced"}, base=1, at=T0))

    assert result["status"] == "merged"
    assert result["version"] == 3
    assert result["data"]["status"] == "in_progress"
    assert result["data"]["description"] == "Seal replaced"
    assert AuditEvent.objects.filter(verb="record.merged", object_id=record).count() == 1


def test_merge_falls_back_to_last_write_wins_for_a_field_changed_on_both_sides(record_of: Any, device_for: Any) -> None:
    record, alice = record_of("job_card", JOB)
    bob = device_for("bob")
    push_one(alice, action("update", record, "job_card", {"status": "done", "hours": 2}, base=1, at=T2))
    # bob's edit is older on `status` (loses) but his `description` is his alone (merges).
    result = push_one(
        bob, action("update", record, "job_card", {"status": "in_progress", "description": "x"}, base=1, at=T1)
    )

    assert result["status"] == "merged"
    assert result["data"]["status"] == "done"
    assert result["data"]["description"] == "x"
    assert result["data"]["hours"] == 2


def test_merge_where_every_field_loses_is_conflict_lost_and_changes_nothing(record_of: Any, device_for: Any) -> None:
    record, alice = record_of("job_card", JOB)
    bob = device_for("bob")
    push_one(alice, action("update", record, "job_card", {"status": "done"}, base=1, at=T2))
    result = push_one(bob, action("update", record, "job_card", {"status": "in_progress"}, base=1, at=T1))

    assert result["status"] == "rejected"
    assert result["error"]["code"] == "conflict_lost"
    assert result["version"] == 2 and result["data"]["status"] == "done"
    assert Record.objects.get(pk=record).version == 2


# --- review ----------------------------------------------------------------------------------


def test_a_field_with_the_review_override_opens_a_review_when_both_sides_changed_it(
    record_of: Any, device_for: Any
) -> None:
    record, alice = record_of("inspection", INSPECTION)
    bob = device_for("bob")
    push_one(alice, action("update", record, "inspection", {"passed": False}, base=1, at=T1))
    result = push_one(bob, action("update", record, "inspection", {"passed": True, "odometer_km": 1200}, base=1, at=T2))

    assert result["status"] == "pending_review"
    assert result["version"] == 2  # the record stays as it is until an officer decides
    review = Review.objects.get(pk=result["review"])
    assert review.state == "pending" and review.reason == "conflict"
    assert review.classification["odometer_km"] == "device_only"
    assert Record.objects.get(pk=record).data["passed"] is False


def test_the_review_policy_lets_non_conflicting_edits_through(record_of: Any) -> None:
    record, alice = record_of(
        "incident", {"title": "Slip", "severity": "low", "occurred_at": T0, "description": "Wet floor"}
    )
    set_policy("incident", "review")
    result = push_one(alice, action("update", record, "incident", {"severity": "medium"}, base=1, at=T1))
    assert result["status"] == "applied" and result["version"] == 2


def test_the_review_policy_holds_a_conflicting_edit_until_an_officer_approves_it(
    record_of: Any, device_for: Any, user: Any
) -> None:
    record, alice = record_of(
        "incident", {"title": "Slip", "severity": "low", "occurred_at": T0, "description": "Wet floor"}
    )
    set_policy("incident", "review")
    bob = device_for("bob")
    push_one(alice, action("update", record, "incident", {"severity": "high"}, base=1, at=T1))
    bob_action = action("update", record, "incident", {"severity": "medium", "injuries": True}, base=1, at=T2)
    result = push_one(bob, bob_action)
    assert result["status"] == "pending_review"
    assert Record.objects.get(pk=record).version == 2

    review = decide_review(
        review_id=uuid.UUID(result["review"]),
        officer=user("olivia"),
        decision="approve",
        seen_version=2,
        choices={"severity": "server"},
        note="kept the higher severity",
    )

    assert review.state == "resolved"
    record_now = Record.objects.get(pk=record)
    assert record_now.version == 3
    assert record_now.data["severity"] == "high" and record_now.data["injuries"] is True
    assert RecordVersion.objects.get(record_id=record, version=3).source == "approval"
    shown = bob.get(f"/api/v1/sync/actions/{bob_action['id']}").json()
    assert shown["status"] == "applied"
    assert shown["decision"]["state"] == "resolved"
    assert shown["decision"]["decided_by"] == "olivia"
    assert shown["decision"]["note"] == "kept the higher severity"
    pulled = {c["record"]: c for c in bob.pull().json()["changes"]}
    assert pulled[record]["version"] == 3 and pulled[record]["data"]["injuries"] is True


def test_review_all_holds_every_device_create_until_approved(device_for: Any, user: Any) -> None:
    set_policy("stock_count", "review_all")
    alice = device_for("alice")
    record = str(uuid.uuid4())
    create = action("create", record, "stock_count", {"location": "A1", "sku": "S", "counted": 3, "unit": "each"})
    result = push_one(alice, create)

    assert result["status"] == "pending_review" and result["version"] is None
    assert not Record.objects.filter(pk=record).exists()
    assert alice.get(f"/api/v1/sync/actions/{create['id']}").json()["status"] == "pending_review"

    decide_review(review_id=uuid.UUID(result["review"]), officer=user("olivia"), decision="approve", seen_version=None)
    assert Record.objects.get(pk=record).version == 1
    assert alice.get(f"/api/v1/sync/actions/{create['id']}").json()["decision"]["state"] == "approved"
    assert [c["record"] for c in alice.pull().json()["changes"]] == [record]


def test_review_all_rejects_invalid_proposals_at_once_instead_of_queueing_them(device_for: Any) -> None:
    set_policy("stock_count", "review_all")
    result = push_one(device_for("alice"), action("create", str(uuid.uuid4()), "stock_count", {"location": "A1"}))
    assert result["status"] == "rejected" and result["error"]["code"] == "schema_violation"
    assert not Review.objects.exists()


def test_a_rejection_needs_a_note_and_leaves_the_record_unchanged(device_for: Any, user: Any) -> None:
    set_policy("stock_count", "review_all")
    alice = device_for("alice")
    create = action(
        "create", str(uuid.uuid4()), "stock_count", {"location": "A1", "sku": "S", "counted": 3, "unit": "each"}
    )
    review_id = uuid.UUID(push_one(alice, create)["review"])
    with pytest.raises(DecisionError) as refused:
        decide_review(review_id=review_id, officer=user("olivia"), decision="reject", seen_version=None)
    assert refused.value.code == "note_required"

    decide_review(review_id=review_id, officer=user("olivia"), decision="reject", seen_version=None, note="count again")
    assert not Record.objects.exists()
    shown = alice.get(f"/api/v1/sync/actions/{create['id']}").json()
    assert shown["status"] == "rejected"
    assert shown["error"]["code"] == "review_rejected" and shown["error"]["message"] == "count again"


def test_nobody_decides_a_review_of_their_own_edit(device_for: Any, user: Any, oscar: User) -> None:
    set_policy("stock_count", "review_all")
    olivia_device = device_for("olivia")
    create = action(
        "create", str(uuid.uuid4()), "stock_count", {"location": "A1", "sku": "S", "counted": 3, "unit": "each"}
    )
    create["team"] = "north"
    review_id = uuid.UUID(push_one(olivia_device, create)["review"])

    with pytest.raises(DecisionError) as refused:
        decide_review(review_id=review_id, officer=user("olivia"), decision="approve", seen_version=None)
    assert refused.value.code == "own_edit"
    assert decide_review(review_id=review_id, officer=oscar, decision="approve", seen_version=None).state == "approved"


def test_only_officers_decide(device_for: Any, user: Any) -> None:
    set_policy("stock_count", "review_all")
    create = action(
        "create", str(uuid.uuid4()), "stock_count", {"location": "A1", "sku": "S", "counted": 3, "unit": "each"}
    )
    review_id = uuid.UUID(push_one(device_for("alice"), create)["review"])
    for outsider in ("mark", "bob"):
        with pytest.raises(DecisionError) as refused:
            decide_review(review_id=review_id, officer=user(outsider), decision="approve", seen_version=None)
        assert refused.value.code == "permission_denied"
    assert Review.objects.get(pk=review_id).state == "pending"


def test_a_decision_binds_to_the_version_it_was_made_on(record_of: Any, device_for: Any, user: Any) -> None:
    record, alice = record_of(
        "incident", {"title": "Slip", "severity": "low", "occurred_at": T0, "description": "Wet floor"}
    )
    set_policy("incident", "review")
    push_one(alice, action("update", record, "incident", {"severity": "high"}, base=1, at=T1))
    result = push_one(device_for("bob"), action("update", record, "incident", {"severity": "medium"}, base=1, at=T2))
    # The record moves on after the review opened.
    push_one(alice, action("update", record, "incident", {"description": "Wet floor near dock"}, base=2, at=T2))

    with pytest.raises(DecisionError) as refused:
        decide_review(
            review_id=uuid.UUID(result["review"]),
            officer=user("olivia"),
            decision="approve",
            seen_version=2,
            choices={"severity": "device"},
        )
    assert refused.value.code == "stale_review"
    assert Record.objects.get(pk=record).version == 3

    decide_review(
        review_id=uuid.UUID(result["review"]),
        officer=user("olivia"),
        decision="approve",
        seen_version=3,
        choices={"severity": "device"},
    )
    data = Record.objects.get(pk=record).data
    assert data["severity"] == "medium" and data["description"] == "Wet floor near dock"


def test_a_field_changed_on_both_sides_needs_an_explicit_choice(record_of: Any, device_for: Any, user: Any) -> None:
    record, alice = record_of(
        "incident", {"title": "Slip", "severity": "low", "occurred_at": T0, "description": "Wet floor"}
    )
    set_policy("incident", "review")
    push_one(alice, action("update", record, "incident", {"severity": "high"}, base=1, at=T1))
    result = push_one(device_for("bob"), action("update", record, "incident", {"severity": "medium"}, base=1, at=T2))
    with pytest.raises(DecisionError) as refused:
        decide_review(review_id=uuid.UUID(result["review"]), officer=user("olivia"), decision="approve", seen_version=2)
    assert refused.value.code == "choice_required"

    review = decide_review(
        review_id=uuid.UUID(result["review"]),
        officer=user("olivia"),
        decision="approve",
        seen_version=2,
        choices={"severity": {"value": "critical"}},
    )
    assert review.state == "resolved"
    assert Record.objects.get(pk=record).data["severity"] == "critical"


# --- delete meets update -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["lww", "merge"])
def test_under_lww_and_merge_a_later_delete_beats_an_earlier_edit(policy: str, record_of: Any, device_for: Any) -> None:
    set_policy("job_card", policy)
    record, alice = record_of("job_card", JOB)
    push_one(alice, action("update", record, "job_card", {"status": "done"}, base=1, at=T1))
    result = push_one(device_for("bob"), action("delete", record, "job_card", base=1, at=T2))
    assert result["status"] == "applied"
    assert Record.objects.get(pk=record).deleted is True


@pytest.mark.parametrize("policy", ["lww", "merge"])
def test_under_lww_and_merge_an_earlier_delete_loses_to_a_later_edit(
    policy: str, record_of: Any, device_for: Any
) -> None:
    set_policy("job_card", policy)
    record, alice = record_of("job_card", JOB)
    push_one(alice, action("update", record, "job_card", {"status": "done"}, base=1, at=T2))
    result = push_one(device_for("bob"), action("delete", record, "job_card", base=1, at=T1))
    assert result["status"] == "rejected" and result["error"]["code"] == "conflict_lost"
    assert Record.objects.get(pk=record).deleted is False


@pytest.mark.parametrize("policy", ["lww", "merge"])
def test_under_lww_and_merge_a_tombstone_is_final(policy: str, record_of: Any, device_for: Any) -> None:
    set_policy("job_card", policy)
    record, alice = record_of("job_card", JOB)
    push_one(alice, action("delete", record, "job_card", base=1, at=T1))
    result = push_one(device_for("bob"), action("update", record, "job_card", {"status": "done"}, base=1, at=T2))
    assert result["status"] == "rejected" and result["error"]["code"] == "record_deleted"


def test_under_review_a_stale_delete_waits_for_an_officer(record_of: Any, device_for: Any, user: Any) -> None:
    record, alice = record_of("job_card", JOB)
    set_policy("job_card", "review")
    push_one(alice, action("update", record, "job_card", {"status": "done"}, base=1, at=T1))
    result = push_one(device_for("bob"), action("delete", record, "job_card", base=1, at=T2))
    assert result["status"] == "pending_review"
    assert Record.objects.get(pk=record).deleted is False

    decide_review(review_id=uuid.UUID(result["review"]), officer=user("olivia"), decision="approve", seen_version=2)
    assert Record.objects.get(pk=record).deleted is True


def test_under_review_an_edit_of_a_deleted_record_can_be_restored_by_an_officer(
    record_of: Any, device_for: Any, user: Any
) -> None:
    record, alice = record_of("job_card", JOB)
    set_policy("job_card", "review")
    push_one(alice, action("delete", record, "job_card", base=1, at=T1))
    result = push_one(device_for("bob"), action("update", record, "job_card", {"status": "done"}, base=1, at=T2))
    assert result["status"] == "pending_review"
    assert Review.objects.get(pk=result["review"]).reason == "deleted"

    decide_review(review_id=uuid.UUID(result["review"]), officer=user("olivia"), decision="approve", seen_version=2)
    restored = Record.objects.get(pk=record)
    assert restored.deleted is False and restored.data["status"] == "done" and restored.version == 3
    assert AuditEvent.objects.filter(verb="record.restored", object_id=record).count() == 1


def test_review_all_holds_deletes_too(record_of: Any, user: Any) -> None:
    record, alice = record_of("job_card", JOB)
    set_policy("job_card", "review_all")
    result = push_one(alice, action("delete", record, "job_card", base=1, at=T1))
    assert result["status"] == "pending_review"
    assert Record.objects.get(pk=record).deleted is False

    delete_id = Review.objects.get(pk=result["review"]).action_id
    decide_review(review_id=uuid.UUID(result["review"]), officer=user("olivia"), decision="approve", seen_version=1)
    shown = alice.get(f"/api/v1/sync/actions/{delete_id}").json()
    assert (shown["status"], shown["version"], shown["data"]) == ("applied", 2, None)
    assert Record.objects.get(pk=record).deleted is True


def test_every_decision_is_journalled_and_the_chain_verifies(device_for: Any, user: Any) -> None:
    from django.core.management import call_command

    set_policy("stock_count", "review_all")
    create = action(
        "create", str(uuid.uuid4()), "stock_count", {"location": "A1", "sku": "S", "counted": 3, "unit": "each"}
    )
    review_id = uuid.UUID(push_one(device_for("alice"), create)["review"])
    decide_review(review_id=review_id, officer=user("olivia"), decision="approve", seen_version=None)

    verbs = list(AuditEvent.objects.order_by("seq").values_list("verb", "source"))
    assert ("review.opened", "device") in verbs
    assert ("record.created", "approval") in verbs
    assert ("review.decided", "approval") in verbs
    call_command("audit_verify")


def test_in_a_merge_type_a_field_only_the_device_changed_merges_whatever_its_override(
    record_of: Any, device_for: Any
) -> None:
    set_policy("job_card", "merge", {"description": "lww"})
    record, alice = record_of("job_card", JOB)
    push_one(alice, action("update", record, "job_card", {"status": "done"}, base=1, at=T2))
    # bob's edit is older, but nobody else touched `description`: it must not be lost.
    result = push_one(
        device_for("bob"), action("update", record, "job_card", {"description": "New seal"}, base=1, at=T1)
    )
    assert result["status"] == "merged"
    assert result["data"]["description"] == "New seal" and result["data"]["status"] == "done"


def test_a_review_type_lets_a_stale_edit_of_only_overridden_fields_through(record_of: Any, device_for: Any) -> None:
    record, alice = record_of(
        "incident", {"title": "Slip", "severity": "low", "occurred_at": T0, "description": "Wet floor"}
    )
    set_policy("incident", "review", {"description": "merge"})
    push_one(alice, action("update", record, "incident", {"severity": "high"}, base=1, at=T1))
    bob = device_for("bob")
    result = push_one(bob, action("update", record, "incident", {"description": "Wet floor, no sign"}, base=1, at=T2))
    assert result["status"] == "merged" and result["version"] == 3

    waits = push_one(bob, action("update", record, "incident", {"severity": "low"}, base=2, at=T2))
    assert waits["status"] == "pending_review"
