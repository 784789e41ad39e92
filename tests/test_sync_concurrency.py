"""Push and pull under real concurrency, on MariaDB: threads with their own connections, real
row locks, transactions that commit in an order of their own choosing.

These only run in the MariaDB half of `make test` (SQLite serialises writers, which would hide
every race these tests look for)."""

from __future__ import annotations

import io
import random
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEvent
from records.models import Record, RecordVersion
from records.services import Actor, Change, apply_change
from sync.models import LedgerEntry
from tests.conftest import DeviceClient

pytestmark = [pytest.mark.mariadb, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

JOIN_TIMEOUT = 30  # seconds; a thread still alive after this is a hang, and fails the test


def stock(**fields: Any) -> dict[str, Any]:
    return {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each", **fields}


def create_action(record: str | None = None, **data: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "op": "create",
        "type": "stock_count",
        "record": record or str(uuid.uuid4()),
        "team": "north",
        "data": stock(**data),
        "captured_at": (timezone.now() - timedelta(minutes=5)).isoformat(),
    }


def same_device(device: DeviceClient) -> DeviceClient:
    """Another HTTP client for the same device (one client per thread)."""
    client = DeviceClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {device.token}")
    client.device_id = device.device_id
    client.token = device.token
    return client


def run_threads(targets: list[Callable[[], None]], barrier: threading.Barrier | None = None) -> None:
    """Run each target in its own thread with its own connection; re-raise the first error."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)
                if barrier is not None:
                    barrier.abort()  # the others stop at their next wait instead of timing out
            finally:
                connection.close()

        return run

    threads = [threading.Thread(target=wrap(target), daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]


def pull_state(device: DeviceClient, limit: int = 1000) -> dict[str, tuple[int, bool, Any]]:
    state: dict[str, tuple[int, bool, Any]] = {}
    cursor = None
    while True:
        response = device.pull(cursor, limit)
        assert response.status_code == 200, response.content
        body = response.json()
        for change in body["changes"]:
            state[change["record"]] = (change["version"], change["deleted"], change["data"])
        cursor = body["cursor"]
        if not body["has_more"]:
            return state


def test_two_identical_pushes_at_the_same_moment_apply_once(device_for: Any) -> None:
    alice = device_for("alice")
    rounds = 8
    batches = [[create_action(), create_action()] for _ in range(rounds)]
    got: dict[int, list[list[dict[str, Any]]]] = {n: [] for n in range(rounds)}
    barrier = threading.Barrier(2, timeout=JOIN_TIMEOUT)

    def sender() -> Callable[[], None]:
        client = same_device(alice)

        def send() -> None:
            for n, batch in enumerate(batches):
                barrier.wait()
                response = client.push(batch)
                assert response.status_code == 200, response.content
                got[n].append(response.json()["results"])

        return send

    run_threads([sender(), sender()], barrier)

    for n, batch in enumerate(batches):
        first, second = got[n]
        for index, action in enumerate(batch):
            pair = [first[index], second[index]]
            assert sorted(r["replayed"] for r in pair) == [False, True]
            assert {r["status"] for r in pair} == {"applied"}
            assert pair[0] == {**pair[1], "replayed": pair[0]["replayed"]}
            assert Record.objects.filter(pk=action["record"]).count() == 1
            assert RecordVersion.objects.filter(action_id=action["id"]).count() == 1
            assert LedgerEntry.objects.filter(device_id=alice.device_id, action_id=action["id"]).count() == 1
            assert AuditEvent.objects.filter(action_id=action["id"]).count() == 1
    assert Record.objects.count() == 2 * rounds


def test_five_devices_pushing_overlapping_batches_leave_no_duplicates_and_agree_on_the_final_state(
    device_for: Any,
) -> None:
    devices = [device_for(name) for name in ("alice", "alice", "bob", "bob", "olivia")]
    pool = [str(uuid.uuid4()) for _ in range(6)]  # every device writes these same records
    rounds = 50
    barrier = threading.Barrier(len(devices), timeout=JOIN_TIMEOUT)
    # (device index, action id) -> the first (not replayed) result; every action sent, with its device.
    first_results: dict[tuple[int, str], dict[str, Any]] = {}
    sent: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def worker(index: int) -> Callable[[], None]:
        client = same_device(devices[index])
        rng = random.Random(index)
        known: dict[str, int] = {}  # record -> the version this device last saw
        previous: list[dict[str, Any]] = []

        def batch() -> list[dict[str, Any]]:
            actions = []
            for record in rng.sample(pool, 3):
                at = (timezone.now() - timedelta(seconds=rng.randint(0, 120))).isoformat()
                if record not in known:
                    actions.append(create_action(record, counted=rng.randint(0, 999)))
                    continue
                action = {
                    "id": str(uuid.uuid4()),
                    "type": "stock_count",
                    "record": record,
                    "base_version": known[record],
                    "captured_at": at,
                }
                if record == pool[0] and rng.random() < 0.02:
                    actions.append({**action, "op": "delete"})
                else:
                    actions.append({**action, "op": "update", "data": {"counted": rng.randint(0, 999)}})
            return actions

        def run() -> None:
            nonlocal previous
            for _ in range(rounds):
                barrier.wait()
                retry = bool(previous) and rng.random() < 0.25
                actions = previous if retry else batch()
                response = client.push(actions)
                assert response.status_code == 200, response.content
                results = response.json()["results"]
                assert [r["id"] for r in results] == [a["id"] for a in actions]
                with lock:
                    for action, result in zip(actions, results, strict=True):
                        key = (index, action["id"])
                        if retry:
                            # A retried batch was answered before: every result is the stored one.
                            assert result == {**first_results[key], "replayed": True}
                        else:
                            assert result["replayed"] is False
                            first_results[key] = result
                            sent.append((index, action))
                for result in results:
                    if result["version"] is not None:
                        known[result["record"]] = result["version"]
                previous = actions

        return run

    run_threads([worker(index) for index in range(len(devices))], barrier)

    # No duplicates: one ledger row per (device, action), versions 1..n without holes per record.
    assert LedgerEntry.objects.count() == len(sent) == len(first_results)
    records = list(Record.objects.all())
    assert {str(r.pk) for r in records} <= set(pool)
    for record in records:
        versions = list(
            RecordVersion.objects.filter(record=record).order_by("version").values_list("version", flat=True)
        )
        assert versions == list(range(1, record.version + 1))
    action_ids = list(RecordVersion.objects.values_list("action_id", flat=True))
    assert len(action_ids) == len(set(action_ids))
    # Each first result is backed by exactly what it claims: an applied action has one journal
    # entry and (unless it changed nothing) one version; a rejected one has neither.
    statuses = {"applied": 0, "rejected": 0}
    codes: set[str] = set()
    for (index, action_id), result in first_results.items():
        events = AuditEvent.objects.filter(action_id=action_id, device_id=devices[index].device_id)
        versions = RecordVersion.objects.filter(action_id=action_id, device_id=devices[index].device_id)
        statuses[result["status"]] = statuses.get(result["status"], 0) + 1
        if result["status"] == "rejected":
            codes.add(result["error"]["code"])
            assert not events.exists() and not versions.exists(), result
        else:
            [event] = events
            assert versions.count() == (0 if event.verb == "record.unchanged" else 1)
    # The run really overlapped: lost creates and lost last-write-wins races both happened.
    assert "record_exists" in codes
    assert statuses["applied"] > len(pool)

    # Every device then pulls the same final state, and it is the database's.
    truth = {str(r.pk): (r.version, r.deleted, None if r.deleted else r.data) for r in records}
    for device in devices:
        assert pull_state(device, limit=4) == truth
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "audit chain ok" in out.getvalue()


def test_a_change_that_commits_late_is_never_skipped_by_a_pull_in_between(device_for: Any) -> None:
    """A transaction that started first commits last while another device pulls in between.

    Why this fails without the commit-ordering lock: if a change's number were handed out at
    write time without being held until commit (an AUTO_INCREMENT id, a timestamp, a counter
    row updated in its own short transaction), A would take number n while holding its
    transaction open, B would take n+1 and commit at once, and the reader's pull in between
    would return B and move its cursor to n+1. When A finally committed with n, every later
    pull (`change_seq > n+1`) would skip it: the final assertion would fail. Here the number
    is the audit chain seq, handed out under the chain head's row lock that A holds until it
    commits, so B waits behind A and the reader sees neither until both are in order."""
    alice, bob, reader = device_for("alice"), device_for("bob"), device_for("bob")
    response = alice.push([create_action()])
    assert response.status_code == 200
    before = reader.pull().json()
    assert len(before["changes"]) == 1

    a_record, b_action = uuid.uuid4(), create_action()
    a_holds_its_lock, release_a = threading.Event(), threading.Event()
    outcomes: dict[str, Any] = {}

    def slow_writer() -> None:
        actor = Actor.for_device(user=User.objects.get(username="alice"), device_id=alice.device_id)
        change = Change(
            op="create",
            record_id=a_record,
            type_key="stock_count",
            data=stock(counted=1),
            captured_at=timezone.now(),
            team_slug="north",
            action_id=uuid.uuid4(),
        )
        with transaction.atomic():
            outcomes["a"] = apply_change(actor=actor, change=change)
            a_holds_its_lock.set()
            assert release_a.wait(timeout=JOIN_TIMEOUT)

    def fast_writer() -> None:
        outcomes["b"] = bob.push([b_action])

    a = threading.Thread(target=_closing(slow_writer), daemon=True)
    b = threading.Thread(target=_closing(fast_writer), daemon=True)
    a.start()
    try:
        assert a_holds_its_lock.wait(timeout=JOIN_TIMEOUT)
        b.start()
        b.join(timeout=2)  # with the lock, B is still waiting behind A here
        between = reader.pull(before["cursor"]).json()
    finally:
        release_a.set()
        a.join(timeout=JOIN_TIMEOUT)
        b.join(timeout=JOIN_TIMEOUT)
    assert not a.is_alive() and not b.is_alive(), "a writer hung"
    assert outcomes["a"].status == "applied"
    assert outcomes["b"].status_code == 200
    assert outcomes["b"].json()["results"][0]["status"] == "applied"

    assert str(a_record) not in {c["record"] for c in between["changes"]}  # A had not committed
    after = reader.pull(between["cursor"]).json()

    seen_after = {c["record"] for c in after["changes"]}
    assert str(a_record) in seen_after, "the change that committed late was skipped"
    assert b_action["record"] in seen_after | {c["record"] for c in between["changes"]}
    assert Record.objects.get(pk=a_record).change_seq < Record.objects.get(pk=b_action["record"]).change_seq


def _closing(target: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            target()
        finally:
            connection.close()

    return run
