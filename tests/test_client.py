"""The reference device client (client/, fieldsync_device) against a live server: offline capture,
sync, and the crash points that make a device unsafe if it gets them wrong (a result lost after
the server committed, a pull interrupted between pages, an upload cut mid-file), review
decisions, and the CLI. The same client runs under network and process faults in tests/e2e/."""

from __future__ import annotations

import io
import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from fieldsync_device import cli
from fieldsync_device.api import ServerApi
from fieldsync_device.backoff import Backoff
from fieldsync_device.device import Device
from fieldsync_device.errors import Transient
from fieldsync_device.sync import Syncer
from PIL import Image

from approvals.models import Review
from approvals.services import decide_review
from attachments.models import Attachment
from records.models import Record
from sync.models import LedgerEntry
from tests.attachments_support import media

__all__ = ["media"]

pytestmark = pytest.mark.django_db(transaction=True)

STOCK = {"location": "A1", "sku": "BOLT-8", "counted": 40, "unit": "each"}


class Crash(Exception):
    """The device's process dying at this exact point."""


@pytest.fixture
def phone(live_server: Any, demo: None, media: Path, tmp_path: Path) -> Any:
    def make(username: str = "alice", name: str = "phone") -> Device:
        device = Device(tmp_path / f"{username}-{name}")
        device.register(server=live_server.url, username=username, password="fieldsync-demo", name=name)
        return device

    return make


def png(size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((size, size), 70).convert("RGB").save(out, "PNG")
    return out.getvalue()


def sync(device: Device, **options: Any) -> Any:
    return Syncer(device, **options).run(until_drained=True, timeout=30, base_delay=0.01, max_delay=0.05)


def server_records(username: str) -> dict[str, dict[str, Any]]:
    teams = set(User.objects.get(username=username).teams.values_list("pk", flat=True))
    return {
        str(r.id): {
            "type": r.type.key,
            "team": r.team.slug,
            "version": r.version,
            "deleted": r.deleted,
            "data": None if r.deleted else r.data,
        }
        for r in Record.objects.select_related("type", "team").filter(team__in=teams)
    }


def test_a_device_captures_offline_then_uploads_pushes_and_pulls_everything_once(phone, tmp_path) -> None:
    alice = phone()
    count = alice.capture_create(type_key="stock_count", data=STOCK)
    alice.capture_update(record_id=count.record_id, data={"counted": 38})
    alice.capture_update(record_id=count.record_id, data={"note": "two boxes damaged"})
    photo_file = tmp_path / "slip.png"
    photo_file.write_bytes(png())
    photo = alice.attach(photo_file)
    incident = alice.capture_create(
        type_key="incident",
        data={
            "title": "Slip",
            "severity": "low",
            "occurred_at": "2026-11-25T09:00:00+00:00",
            "description": "Wet floor",
            "photos": [photo],
        },
    )
    status = alice.status()
    assert len(status["pending"]) == 4 and status["attachments"]["pending"][0]["state"] == "local"
    assert alice.export_records()[count.record_id]["data"] == {**STOCK, "counted": 38, "note": "two boxes damaged"}

    outcome = sync(alice)

    assert outcome.drained
    record = Record.objects.get(pk=count.record_id)
    # Each edit was based on the version the one before produced: no self-conflict.
    assert record.version == 3 and record.data == {**STOCK, "counted": 38, "note": "two boxes damaged"}
    assert sorted(LedgerEntry.objects.values_list("status", flat=True)) == ["applied"] * 4
    assert Record.objects.get(pk=incident.record_id).data["photos"][0]["state"] == "verified"
    bodies = [json.loads(a.body or "") for a in alice.store.actions()]
    assert [b.get("base_version") for b in bodies] == [None, 1, 2, None]
    assert alice.export_records() == server_records("alice")
    assert alice.status()["pending"] == [] and alice.status()["failed"] == []


def test_capture_needs_no_server_and_a_sync_without_one_keeps_the_queue(phone) -> None:
    alice = phone()
    with alice.store.transaction():
        alice.store.set_meta("server", "http://127.0.0.1:9")  # nothing listens there
    captured = alice.capture_create(type_key="stock_count", data=STOCK)

    outcome = Syncer(alice).run(until_drained=True, timeout=0.5, base_delay=0.01, max_delay=0.05)

    assert not outcome.drained and outcome.errors
    assert [a["action"] for a in alice.status()["pending"]] == [captured.action_id]
    assert alice.status()["last_error"]
    assert not Record.objects.exists()


def test_a_result_lost_after_the_server_committed_is_asked_again_with_the_same_bytes(phone, monkeypatch) -> None:
    alice = phone()
    captured = alice.capture_create(type_key="stock_count", data=STOCK)

    def die(self: Syncer, action: Any, result: dict[str, Any]) -> bool:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(Syncer, "_store_result", die)
        with pytest.raises(Crash):
            sync(alice)
    sent = alice.store.action(captured.action_id)
    assert sent is not None and sent.state == "queued" and sent.body is not None
    assert LedgerEntry.objects.get().status == "applied"  # the server did commit

    pushed: list[bytes] = []
    real_push = ServerApi.push

    def spy(self: ServerApi, body: bytes) -> list[dict[str, Any]]:
        pushed.append(body)
        return real_push(self, body)

    monkeypatch.setattr(ServerApi, "push", spy)
    assert sync(alice).drained

    resent = alice.store.action(captured.action_id)
    assert resent is not None and resent.body == sent.body and resent.body.encode() in pushed[0]
    assert resent.state == "done" and resent.result is not None and resent.result["replayed"] is True
    assert Record.objects.count() == 1 and LedgerEntry.objects.get().replays == 1


def test_a_pull_interrupted_between_pages_resumes_from_the_stored_cursor(phone, monkeypatch) -> None:
    alice, bob = phone("alice"), phone("bob")
    for shelf in range(7):
        alice.capture_create(type_key="stock_count", data={**STOCK, "location": f"Shelf {shelf}"})
    assert sync(alice).drained
    calls: list[str | None] = []
    real_pull = ServerApi.pull

    def flaky(self: ServerApi, *, cursor: str | None, limit: int) -> dict[str, Any]:
        calls.append(cursor)
        if len(calls) == 3:
            raise Transient("signal lost")
        return real_pull(self, cursor=cursor, limit=limit)

    monkeypatch.setattr(ServerApi, "pull", flaky)
    assert sync(bob, pull_limit=3).drained

    # Page 3 failed once and was asked again with the cursor page 2 ended at, not from the start.
    assert calls[0] is None and calls[3] == calls[2] and calls[2] is not None
    assert bob.export_records() == server_records("bob")


def test_an_upload_cut_off_resumes_from_the_servers_offset(phone, monkeypatch, tmp_path) -> None:
    alice = phone()
    data = png(300)
    assert len(data) > 3 * 64 * 1024
    photo_file = tmp_path / "van.png"
    photo_file.write_bytes(data)
    photo = alice.attach(photo_file)
    real_patch = ServerApi.tus_patch
    patches: list[int] = []

    def cut(self: ServerApi, attachment_id: str, *, offset: int, stream: Any, length: int) -> int:
        patches.append(offset)
        if len(patches) == 3:
            raise Transient("connection reset")
        return real_patch(self, attachment_id, offset=offset, stream=stream, length=length)

    monkeypatch.setattr(ServerApi, "tus_patch", cut)
    assert sync(alice, chunk_size=64 * 1024).drained

    assert patches[:4] == [0, 64 * 1024, 128 * 1024, 128 * 1024]  # the third chunk again, not the file
    local = alice.store.attachment(photo["id"])
    assert local is not None and local.state == "verified" and local.resumes == 1
    attachment = Attachment.objects.get(pk=photo["id"])
    assert attachment.state == "verified" and attachment.computed_sha256 == local.sha256


def test_a_file_that_fails_verification_fails_its_record_and_nothing_else(phone, tmp_path) -> None:
    alice = phone()
    fake_file = tmp_path / "fake.png"
    fake_file.write_bytes(b"not an image at all " * 50)
    fake = alice.attach(fake_file)
    refused = alice.capture_create(
        type_key="incident",
        data={"title": "Fake", "severity": "low", "occurred_at": "2026-11-25T09:00:00Z", "description": "x"}
        | {"photos": [fake]},
    )
    later = alice.capture_create(type_key="stock_count", data=STOCK)

    assert sync(alice).drained

    failed = alice.status()["failed"]
    assert [(f["action"], f["error"]) for f in failed] == [(refused.action_id, "attachment_rejected")]
    assert alice.status()["attachments"]["rejected"][0]["id"] == fake["id"]
    assert refused.record_id not in alice.export_records()
    assert list(Record.objects.values_list("id", flat=True)) == [uuid.UUID(later.record_id)]


def test_a_stale_verdict_waits_for_review_and_the_device_picks_up_the_decision(phone, user) -> None:
    alice, bob = phone("alice"), phone("bob")
    inspection = alice.capture_create(
        type_key="inspection",
        data={"vehicle": "VAN-12", "inspector": "Alice", "checklist": [{"item": "tyres", "ok": True}], "passed": True},
    )
    assert sync(alice).drained
    assert sync(bob).drained
    alice.capture_update(record_id=inspection.record_id, data={"inspector": "Alice A."})
    assert sync(alice).drained
    edit = bob.capture_update(record_id=inspection.record_id, data={"passed": False})  # bob is on v1 now

    outcome = Syncer(bob).run(until_drained=True, timeout=0.3, base_delay=0.01, max_delay=0.05)

    assert not outcome.drained
    [waiting] = bob.status()["pending_review"]
    assert waiting["action"] == edit.action_id and waiting["review"]
    review = Review.objects.get(action_id=edit.action_id)
    decide_review(review_id=review.id, officer=user("olivia"), decision="approve", seen_version=2)

    assert sync(bob).drained
    decided = bob.store.action(edit.action_id)
    assert decided is not None and decided.status == "applied"
    assert decided.result is not None and decided.result["decision"]["state"] == "approved"
    assert bob.export_records()[inspection.record_id]["data"]["passed"] is False
    assert bob.export_records() == server_records("bob")


def test_backoff_is_exponential_with_full_jitter_and_honours_retry_after() -> None:
    backoff = Backoff(base=0.5, cap=8, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    assert backoff.next_delay(at_least=5) >= 5
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_the_cli_registers_captures_attaches_syncs_and_shows_status(live_server, demo, media, tmp_path, capsys):
    home = ["--home", str(tmp_path / "cli-phone")]
    register = ["register", "--server", live_server.url, "--username", "carol", "--password", "fieldsync-demo"]
    assert cli.main([*home, *register, "--name", "Carol's phone"]) == 0
    photo_file = tmp_path / "gate.png"
    photo_file.write_bytes(png())
    capsys.readouterr()
    assert cli.main([*home, "attach", str(photo_file)]) == 0
    photo = json.loads(capsys.readouterr().out)
    data = {"title": "Gate", "severity": "high", "occurred_at": "2026-11-25T09:00:00Z", "description": "Broken"}
    create = ["capture", "create", "--type", "incident", "--data", json.dumps(data | {"photos": [photo]})]
    assert cli.main([*home, *create]) == 0
    record = json.loads(capsys.readouterr().out)["record"]
    assert cli.main([*home, "capture", "update", "--record", record, "--data", '{"severity": "critical"}']) == 0
    assert cli.main([*home, "capture", "update", "--record", str(uuid.uuid4()), "--data", "{}"]) == 1
    capsys.readouterr()
    assert cli.main([*home, "status"]) == 0
    assert "pending: 2" in capsys.readouterr().out

    assert cli.main([*home, "sync", "--until-drained", "--timeout", "30"]) == 0

    assert json.loads(capsys.readouterr().out)["drained"] is True
    assert Record.objects.get(pk=record).data["severity"] == "critical"
    assert cli.main([*home, "status", "--json", "--records"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["pending"] == [] and status["record_states"][record]["version"] == 2


def test_a_capture_made_on_an_old_form_is_brought_forward_and_the_device_refreshes_its_forms(phone, user) -> None:
    import copy

    from records import schemas
    from records.models import RecordType

    alice = phone()
    assert alice.record_types()["stock_count"]["version"] == 1
    captured = alice.capture_create(type_key="stock_count", data=STOCK)  # offline, on form version 1

    # Meanwhile an officer adds a required field, with a default for captures on the old form.
    stock = RecordType.objects.get(key="stock_count")
    schema = copy.deepcopy(stock.schema)
    schema["properties"]["bin"] = {"type": "string", "minLength": 1, "maxLength": 20}
    schema["required"] = [*schema["required"], "bin"]
    schemas.change_schema(record_type=stock, schema=schema, rules={"defaults": {"bin": "UNKNOWN"}}, by=user("admin"))

    assert sync(alice).drained
    sent = json.loads(alice.store.action(captured.action_id).body)
    assert sent["schema_version"] == 1
    assert Record.objects.get(pk=captured.record_id).data["bin"] == "UNKNOWN"
    # The pull said the forms changed, and the device now captures with version 2.
    assert alice.record_types()["stock_count"]["version"] == 2
    assert alice.schema_version("stock_count") == 2
