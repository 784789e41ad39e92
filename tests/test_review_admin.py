"""The officers' review queue and decide page in the admin, through the Django test client."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from approvals.models import Review, ReviewState
from audit.models import AuditEvent
from records.models import Record, RecordType, RecordVersion, Team
from tests.conftest import logged_in
from tests.reviewing import INSPECTION, create, inspection_conflict, review_all_type, second_officer, update

QUEUE = "/admin/approvals/review/"


def page(review: Review) -> str:
    return f"/admin/approvals/review/{review.pk}/change/"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def listed(response: Any) -> list[uuid.UUID]:
    assert response.status_code == 200, response.content[:500]
    return [review.pk for review in response.context["cl"].result_list]


def age(review: Review, days: int) -> None:
    Review.objects.filter(pk=review.pk).update(created_at=timezone.now() - timedelta(days=days))


def choices_for(review: Review, **chosen: str) -> dict[str, str]:
    """The form as the officer submits it: every radio at its default unless chosen otherwise."""
    form = {"seen_version": str(Record.objects.get(pk=review.record_id).version)}
    for name, how in review.classification.items():
        default = {"device_only": "device", "both_changed": None}.get(how, "server")
        if default:
            form[f"choice__{name}"] = default
    form.update({f"choice__{name}": value for name, value in chosen.items()})
    return form


# --- the queue --------------------------------------------------------------------------------


def test_the_queue_lists_pending_reviews_oldest_first(device_for) -> None:
    middle, newest, oldest = (inspection_conflict(device_for).review for _ in range(3))
    age(oldest, 3)
    age(middle, 2)
    age(newest, 1)

    response = logged_in("olivia").get(QUEUE, {"state__exact": "pending"})

    assert listed(response) == [oldest.pk, middle.pk, newest.pk]


def test_the_queue_filters_by_state_type_team_and_age(device_for) -> None:
    north = inspection_conflict(device_for).review
    review_all_type("permit")
    carol_create = create(device_for("carol"), "permit", {"title": "Hot work, bay 3"}, team="south")
    south = Review.objects.get(record_id=carol_create)
    decided = inspection_conflict(device_for).review
    Review.objects.filter(pk=decided.pk).update(state=ReviewState.REJECTED)
    age(north, 10)
    olivia = logged_in("olivia")

    assert set(listed(olivia.get(QUEUE, {"state__exact": "pending"}))) == {north.pk, south.pk}
    assert listed(olivia.get(QUEUE, {"state__exact": "rejected"})) == [decided.pk]
    permit = RecordType.objects.get(key="permit")
    assert listed(olivia.get(QUEUE, {"record_type__id__exact": permit.pk})) == [south.pk]
    south_team = Team.objects.get(slug="south")
    assert listed(olivia.get(QUEUE, {"team__id__exact": south_team.pk})) == [south.pk]
    assert listed(olivia.get(QUEUE, {"age": "7"})) == [north.pk]
    assert listed(olivia.get(QUEUE, {"age": "30"})) == []


def test_the_admin_index_shows_the_pending_count(device_for) -> None:
    inspection_conflict(device_for)
    decided = inspection_conflict(device_for).review
    inspection_conflict(device_for)
    Review.objects.filter(pk=decided.pk).update(state=ReviewState.APPROVED)

    response = logged_in("olivia").get("/admin/")

    assert response.status_code == 200
    found = re.search(rb'id="pending-reviews-count">\s*(\d+)\s*<', response.content)
    assert found is not None, response.content.decode()
    assert found.group(1) == b"2"


# --- the decide page --------------------------------------------------------------------------


def test_an_officer_sees_base_server_device_and_result_side_by_side(device_for) -> None:
    conflict = inspection_conflict(device_for)

    response = logged_in("olivia").get(page(conflict.review))

    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r"<th>Base</th>\s*<th>Server now</th>\s*<th>Device proposal</th>\s*<th>Result</th>", html)
    assert '<tr class="both_changed" data-field="odometer_km">' in html
    assert '<tr class="device_only" data-field="passed">' in html
    assert '<tr class="server_only" data-field="inspector">' in html
    assert html.count('class="both_changed"') == 1
    assert 'name="_approve"' in html
    assert 'name="choice__odometer_km" value="value"' in html


def test_approving_with_a_choice_per_field_resolves_through_the_service(device_for) -> None:
    conflict = inspection_conflict(device_for)
    form = choices_for(conflict.review, odometer_km="value", passed="device")

    response = logged_in("olivia").post(
        page(conflict.review),
        {**form, "value__odometer_km": "1225", "note": "Odometer read off the photo.", "_approve": "Approve"},
    )

    assert response.status_code == 302
    assert response["Location"] == QUEUE
    review = Review.objects.get(pk=conflict.review.pk)
    assert review.state == ReviewState.RESOLVED
    assert review.decided_by == User.objects.get(username="olivia")
    assert review.note == "Odometer read off the photo."
    assert review.result_version == 3
    record = Record.objects.get(pk=conflict.record)
    assert record.version == 3
    assert record.data == {**INSPECTION, "odometer_km": 1225, "inspector": "Alice A.", "passed": False}
    version = RecordVersion.objects.get(record=record, version=3)
    assert (version.source, version.actor.username) == ("approval", "olivia")
    decided = AuditEvent.objects.get(verb="review.decided", object_id=str(review.pk))
    assert (decided.source, decided.actor_username) == ("approval", "olivia")
    assert decided.changes["state"] == ["pending", "resolved"]
    updated = AuditEvent.objects.get(object_id=str(record.pk), source="approval")
    assert updated.verb == "record.updated"
    assert updated.changes == {"odometer_km": [1200, 1225], "passed": [True, False]}


def test_taking_the_device_side_of_every_field_approves(device_for) -> None:
    conflict = inspection_conflict(device_for)

    logged_in("olivia").post(
        page(conflict.review), {**choices_for(conflict.review, odometer_km="device"), "_approve": "Approve"}
    )

    review = Review.objects.get(pk=conflict.review.pk)
    assert review.state == ReviewState.APPROVED
    assert Record.objects.get(pk=conflict.record).data == {
        **INSPECTION,
        "odometer_km": 1250,
        "inspector": "Alice A.",
        "passed": False,
    }


def test_approving_without_choosing_a_both_changed_field_is_refused(device_for) -> None:
    conflict = inspection_conflict(device_for)

    response = logged_in("olivia").post(page(conflict.review), {**choices_for(conflict.review), "_approve": "Approve"})

    assert response.status_code == 302
    assert response["Location"] == page(conflict.review)
    assert any("odometer_km" in message for message in messages_of(response))
    assert Review.objects.get(pk=conflict.review.pk).state == ReviewState.PENDING
    assert Record.objects.get(pk=conflict.record).version == 2


def test_it_refuses_to_reject_without_a_note_and_changes_nothing(device_for) -> None:
    conflict = inspection_conflict(device_for)
    events = AuditEvent.objects.count()
    olivia = logged_in("olivia")

    response = olivia.post(page(conflict.review), {**choices_for(conflict.review), "note": "  ", "_reject": "Reject"})

    assert response.status_code == 302
    assert response["Location"] == page(conflict.review)
    assert messages_of(response) == ["Say why the edit is rejected."]
    review = Review.objects.get(pk=conflict.review.pk)
    assert (review.state, review.decided_by, review.note) == (ReviewState.PENDING, None, "")
    assert Record.objects.get(pk=conflict.record).version == 2
    assert AuditEvent.objects.count() == events

    olivia.post(page(conflict.review), {"seen_version": "2", "note": "Verdict needs a re-inspection.", "_reject": "1"})

    review.refresh_from_db()
    assert (review.state, review.note) == (ReviewState.REJECTED, "Verdict needs a re-inspection.")
    assert Record.objects.get(pk=conflict.record).version == 2
    seen = conflict.bob.get(f"/api/v1/sync/actions/{conflict.action_id}").json()
    assert seen["status"] == "rejected"
    assert seen["error"]["code"] == "review_rejected"
    assert seen["decision"]["note"] == "Verdict needs a re-inspection."


# --- who may do what --------------------------------------------------------------------------


def test_a_manager_sees_the_queue_and_the_review_read_only(device_for) -> None:
    conflict = inspection_conflict(device_for)
    mark = logged_in("mark")

    queue = mark.get(QUEUE)
    assert listed(queue) == [conflict.review.pk]
    assert b"bulk_approve" not in queue.content
    review_page = mark.get(page(conflict.review))
    assert review_page.status_code == 200
    html = review_page.content.decode()
    assert '<tr class="both_changed" data-field="odometer_km">' in html
    assert "<form" not in html.split('id="content-main"')[1]
    assert 'type="radio"' not in html
    assert 'name="_approve"' not in html

    mark.post(page(conflict.review), {**choices_for(conflict.review, odometer_km="device"), "_approve": "Approve"})
    mark.post(QUEUE, {"action": "bulk_approve", "_selected_action": [str(conflict.review.pk)], "index": "0"})

    assert Review.objects.get(pk=conflict.review.pk).state == ReviewState.PENDING
    assert Record.objects.get(pk=conflict.record).version == 2


def test_a_field_worker_cannot_reach_the_admin(device_for) -> None:
    conflict = inspection_conflict(device_for)
    alice = logged_in("alice")

    for url in ("/admin/", QUEUE, page(conflict.review)):
        response = alice.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url
    alice.post(page(conflict.review), {**choices_for(conflict.review, odometer_km="device"), "_approve": "Approve"})
    assert Review.objects.get(pk=conflict.review.pk).state == ReviewState.PENDING


def test_four_eyes_an_officer_cannot_decide_a_review_of_her_own_edit(device_for) -> None:
    review_all_type("permit")
    record = create(device_for("olivia"), "permit", {"title": "Confined space entry", "hours": 2})
    review = Review.objects.get(record_id=record)
    assert review.submitted_by.username == "olivia"
    olivia = logged_in("olivia")

    html = olivia.get(page(review)).content.decode()
    assert "This is your own edit" in html
    assert 'name="_approve"' not in html
    assert "<form" not in html.split('id="content-main"')[1]
    olivia.post(page(review), {"seen_version": "", "_approve": "Approve"})
    assert Review.objects.get(pk=review.pk).state == ReviewState.PENDING
    assert not Record.objects.filter(pk=record).exists()

    oscar = Client()
    oscar.force_login(second_officer())
    assert 'name="_approve"' in oscar.get(page(review)).content.decode()
    oscar.post(page(review), {"seen_version": "", "_approve": "Approve"})
    review.refresh_from_db()
    assert (review.state, review.decided_by.username) == (ReviewState.APPROVED, "oscar")
    created = Record.objects.get(pk=record)
    assert created.data == {"title": "Confined space entry", "hours": 2}
    assert created.versions.get().source == "approval"


# --- stale reviews and bulk approve -----------------------------------------------------------


def test_a_stale_review_shows_the_new_server_state_and_refuses_the_old_one(device_for) -> None:
    conflict = inspection_conflict(device_for)
    olivia = logged_in("olivia")
    looked_at = choices_for(conflict.review, odometer_km="server")  # seen_version 2
    assert update(device_for("alice"), conflict.record, 2, {"inspector": "Alice B."})["version"] == 3

    html = olivia.get(page(conflict.review)).content.decode()
    assert 'id="stale-warning"' in html
    inspector = re.search(r'<tr class="server_only" data-field="inspector">.*?</tr>', html, re.S)
    assert inspector is not None
    assert '<td class="server"><pre>Alice B.</pre></td>' in inspector.group(0)
    assert 'name="seen_version" value="3"' in html

    response = olivia.post(page(conflict.review), {**looked_at, "_approve": "Approve"})
    assert response["Location"] == page(conflict.review)
    assert any("changed since you looked" in message for message in messages_of(response))
    assert Review.objects.get(pk=conflict.review.pk).state == ReviewState.PENDING
    assert Record.objects.get(pk=conflict.record).version == 3

    olivia.post(page(conflict.review), {**choices_for(conflict.review, odometer_km="server"), "_approve": "Approve"})
    review = Review.objects.get(pk=conflict.review.pk)
    assert (review.state, review.decided_on_version, review.result_version) == (ReviewState.RESOLVED, 3, 4)
    assert Record.objects.get(pk=conflict.record).data == {
        **INSPECTION,
        "odometer_km": 1200,
        "inspector": "Alice B.",
        "passed": False,
    }


def test_bulk_approve_approves_only_reviews_without_both_changed_fields_and_skips_stale_ones(device_for) -> None:
    clean = inspection_conflict(device_for, both_changed=False)
    contested = inspection_conflict(device_for)
    stale = inspection_conflict(device_for, both_changed=False)
    assert update(device_for("alice"), stale.record, 2, {"inspector": "Alice B."})["version"] == 3
    selected = [str(c.review.pk) for c in (clean, contested, stale)]

    response = logged_in("olivia").post(QUEUE, {"action": "bulk_approve", "_selected_action": selected, "index": "0"})

    assert response.status_code == 302
    states = {c.review.pk: Review.objects.get(pk=c.review.pk).state for c in (clean, contested, stale)}
    assert states == {
        clean.review.pk: ReviewState.APPROVED,
        contested.review.pk: ReviewState.PENDING,
        stale.review.pk: ReviewState.PENDING,
    }
    assert Record.objects.get(pk=clean.record).data["passed"] is False
    assert Record.objects.get(pk=clean.record).version == 3
    assert Record.objects.get(pk=contested.record).version == 2
    assert Record.objects.get(pk=stale.record).version == 3
    messages = messages_of(response)
    assert "Approved 1 review(s)." in messages
    skipped = next(m for m in messages if m.startswith("Skipped"))
    assert f"{contested.record}: fields changed on both sides" in skipped
    assert f"{stale.record}: The record changed since you looked at it" in skipped
