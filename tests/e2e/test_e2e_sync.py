"""End to end: ten devices running the reference client (client/, its real CLI in subprocesses)
capture offline, then sync through a fault-injecting proxy in front of two gunicorn app servers,
a Celery worker on Redis and MariaDB, while the network drops responses the server has already
committed, resets uploads halfway, crawls, an app server is killed -9 in the middle of a push
batch, the Celery worker is killed -9 in the middle of a verification, and a device's own sync
process is killed -9. Afterwards: no duplicate records, no record naming a missing or rejected
file, one final outcome per captured action in the ledger and in the journal, every device equal
to the server for its teams, and a verifying audit chain.

Runs in the MariaDB half of `make test` (it needs MariaDB and Redis). E2E_SEED=<n> replays a run's
fault decisions; E2E_KEEP=1 keeps the database and the logs (the directory is printed)."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fieldsync_device.device import Device
from fieldsync_device.store import ActionRow
from PIL import Image

from tests.e2e.proxy import FaultProxy, Faults
from tests.e2e.stack import BASE_DIR, Stack, free_ports, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

PASSWORD = "fieldsync-demo"
# The client's CLI from this checkout (`fieldsync-device`, as `python -m`), not from wherever a
# shared venv's editable install points.
CLIENT = [sys.executable, "-m", "fieldsync_device"]
CLIENT_ENV = {**os.environ, "PYTHONPATH": str(BASE_DIR / "client")}
USERS = ["alice"] * 4 + ["bob"] * 3 + ["carol"] * 3
DRAIN_SECONDS = 200
RECORD_VERBS = {
    "record.created",
    "record.updated",
    "record.merged",
    "record.deleted",
    "record.unchanged",
    "record.restored",
}


def noisy_png(size: int, seed: int) -> bytes:
    """A photo-like PNG that compresses badly (about 3 bytes a pixel): size in pixels per side."""
    image = Image.effect_noise((size, size), 60 + seed % 20).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


PDF_WITH_SCRIPT = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >>\n"
    b"endobj\n2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class SimDevice:
    """One phone: a home directory for the client, driven through its CLI or its library."""

    index: int
    username: str
    home: Path
    files: Path

    @property
    def name(self) -> str:
        return f"{self.username}-{self.index}"

    def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLIENT, "--home", str(self.home), "--timeout-http", "15", *args],
            env=CLIENT_ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def sync_process(self, log: Path, *, seconds: float) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [
                    *CLIENT,
                    "--home",
                    str(self.home),
                    "--timeout-http",
                    "15",
                    "-v",
                    "sync",
                    "--until-drained",
                    "--timeout",
                    str(seconds),
                    "--base-delay",
                    "0.2",
                    "--max-delay",
                    "2",
                ],
                env=CLIENT_ENV,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def open(self) -> Device:
        return Device(self.home)

    def file(self, name: str, content: bytes) -> Path:
        path = self.files / name
        path.write_bytes(content)
        return path


def sync_all(devices: list[SimDevice], *args: str, timeout: float = 120) -> None:
    """`fieldsync-device sync` on every device at once; each must succeed."""
    with_results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(device: SimDevice) -> None:
        with_results[device.name] = device.cli("sync", *args, timeout=timeout)

    threads = [threading.Thread(target=run, args=(d,)) for d in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = {name: r.stdout + r.stderr for name, r in with_results.items() if r.returncode != 0}
    assert not failed, f"sync failed: {failed}"


# --- the deployment -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith("mysql") or not redis_url:
        pytest.fail("the e2e suite needs DATABASE_URL (MariaDB) and REDIS_URL; scripts/test-services.sh sets them")
    keep = bool(os.environ.get("E2E_KEEP"))
    if keep:  # outside pytest's temp dirs, which other runs rotate away
        tmp = Path(__file__).resolve().parents[2] / "var" / "e2e" / f"run-{int(time.time())}"
        tmp.mkdir(parents=True)
    else:
        tmp = tmp_path_factory.mktemp("e2e")
    deployment = Stack(tmp, database_url=database_url, redis_url=redis_url)
    deployment.app_ports = free_ports(3)[1:]
    deployment.create_database()
    try:
        deployment.start_app(0)
        deployment.start_app(1)
        # Reads from storage take 1.5 s on this first worker, so it can be killed mid-verification.
        deployment.start_worker(storage_delay=1.5)
        deployment.start_beat()
        yield deployment
    finally:
        deployment.stop()
        if keep:
            print(f"\nE2E_KEEP: database {deployment.db_name}, logs in {tmp}", file=sys.stderr)
        else:
            deployment.drop_database()


@pytest.fixture(scope="module")
def proxy(stack: Stack) -> Iterator[FaultProxy]:
    port = free_ports(1)[0]
    seed = int(os.environ.get("E2E_SEED") or random.randrange(1_000_000))
    print(f"\nE2E_SEED={seed}", file=sys.stderr)
    fault_proxy = FaultProxy(port=port, backends=stack.app_ports, seed=seed)
    fault_proxy.start()
    yield fault_proxy
    fault_proxy.stop()


# --- the conductor: process faults while the devices sync ---------------------------------------


class Conductor:
    """Kills an app server -9 while it is applying a big push batch (and starts it again), kills the
    Celery worker -9 while it is verifying a file (and starts a fresh one), and kills one device's
    own sync process -9 (and starts it again)."""

    def __init__(self, stack: Stack, proxy: FaultProxy, victim: SimDevice, processes: dict[str, Any], logs: Path):
        self.stack = stack
        self.proxy = proxy
        self.victim = victim
        self.processes = processes
        self.logs = logs
        self.done = threading.Event()
        self.push_seen = threading.Event()
        self.push_body = b""
        self.push_backend = 0
        self.app_kills = 0
        self.before_commit: tuple[int, int] | None = None  # (app server, batch size) of a kill before commit
        self.kills: list[tuple[int, int, int]] = []  # (app server, committed before the kill, batch size)
        self.worker_killed_during: str | None = None  # the attachment being verified
        self.worker_killed_task = ""  # the id of the task (the message) verifying it
        self.device_killed = False
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._guard(self.kill_app_mid_batch), name="kill-app"),
            threading.Thread(target=self._guard(self.kill_worker_mid_verification), name="kill-worker"),
            threading.Thread(target=self._guard(self.kill_a_device), name="kill-device"),
        ]

    def _guard(self, target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                self.errors.append(exc)

        return run

    def watch(self, backend: int, kind: str, body: bytes) -> None:
        # A big push (the stock take) reached an app server: it is applying the batch now.
        if kind == "push" and not self.push_seen.is_set() and len(json.loads(body)["actions"]) >= 20:
            self.push_body = body
            self.push_backend = backend
            self.push_seen.set()

    def start(self) -> None:
        self.proxy.watchers.append(self.watch)
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.done.set()
        self.push_seen.set()
        for thread in self.threads:
            thread.join(timeout=60)
        self.proxy.watchers.remove(self.watch)
        assert not self.errors, f"the conductor failed: {self.errors!r}"

    def kill_app_mid_batch(self) -> None:
        # Kill -9 the app server a big batch reached, a few milliseconds into its request, and
        # count the batch's ledger rows that request wrote (their receive time is before the
        # kill). A push applies its new actions in one transaction: every kill must find all of
        # them or none. Again (up to five batches) until a kill lands before the commit; the
        # device's retry must then apply the batch once (the end state is checked by the test).
        rng = random.Random(7)
        for _ in range(5):
            self.push_seen.wait()
            if self.done.is_set():
                return
            body, backend = self.push_body, self.push_backend
            self.push_seen.clear()
            ids = [action["id"] for action in json.loads(body)["actions"]]
            marks = ",".join(["%s"] * len(ids))
            committed = f"SELECT COUNT(*) FROM sync_ledgerentry WHERE action_id IN ({marks})"
            time.sleep(rng.uniform(0.0, 0.03))
            killed_at = datetime.now(UTC).replace(tzinfo=None)
            self.stack.kill_app(backend)
            self.app_kills += 1
            [(before,)] = self.stack.query(f"{committed} AND received_at < %s", *ids, killed_at)
            self.kills.append((backend, before, len(ids)))
            time.sleep(1.0)
            self.stack.start_app(backend)
            if before == 0:
                self.before_commit = (backend, len(ids))
                return

    def kill_worker_mid_verification(self) -> None:
        while not self.done.is_set():
            claimed = self.stack.query(
                "SELECT id, verify_claim FROM attachments_attachment WHERE state = 'uploaded' AND verify_attempts >= 1"
            )
            if claimed:
                self.stack.kill_worker()
                self.worker_killed_during = str(claimed[0][0])
                self.worker_killed_task = str(claimed[0][1])
                self.stack.start_worker(storage_delay=0)
                return
            time.sleep(0.05)

    def kill_a_device(self) -> None:
        # Mid-sync: once its first upload or push has gone through, long before it drains.
        process = self.processes[self.victim.name]
        log = self.logs / f"{self.victim.name}.log"
        wait_until(
            lambda: (
                process.poll() is not None
                or self.done.is_set()
                or any(word in log.read_text(errors="replace") for word in ("] uploaded", "] pushed"))
            ),
            seconds=DRAIN_SECONDS,
            interval=0.05,
            what="the victim device to make progress",
        )
        if process.poll() is None and not self.done.is_set():
            os.killpg(process.pid, 9)
            process.wait()
            self.device_killed = True
            self.processes[self.victim.name] = self.victim.sync_process(
                self.logs / f"{self.victim.name}.log", seconds=DRAIN_SECONDS - 10
            )


# --- the test -----------------------------------------------------------------------------------


def test_ten_devices_capture_offline_and_converge_through_network_and_process_faults(
    stack: Stack, proxy: FaultProxy, tmp_path: Path
) -> None:
    started = time.monotonic()
    server = f"http://127.0.0.1:{proxy.port}"
    devices = []
    for index, username in enumerate(USERS):
        home = tmp_path / f"device-{index}"
        files = tmp_path / f"files-{index}"
        files.mkdir()
        devices.append(SimDevice(index=index, username=username, home=home, files=files))

    # --- registration and a shared starting point (no faults) ----------------------------------
    for device in devices:
        result = device.cli(
            "register", "--server", server, "--username", device.username, "--password", PASSWORD,
            "--name", device.name, "--platform", "e2e",
            # Some phones' clocks are off; the server corrects capture times by the measured offset.
            "--clock-skew", str([0, -90, 45, 0, 600, 0, -30, 0, 120, 0][device.index]),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    north_seed, south_seed = devices[0], devices[7]
    with north_seed.open() as phone:
        photo_a = phone.attach(north_seed.file("van.png", noisy_png(120, 1)))
        s1 = phone.capture_create(
            type_key="stock_count", data={"location": "A1", "sku": "BOLT-8", "counted": 10, "unit": "each"}
        ).record_id
        s2 = phone.capture_create(
            type_key="stock_count", data={"location": "A2", "sku": "NUT-8", "counted": 20, "unit": "box"}
        ).record_id
        j1 = phone.capture_create(
            type_key="job_card", data={"title": "Replace pump", "site": "Depot 4", "status": "open", "hours": 0}
        ).record_id
        inspection = {
            "vehicle": "VAN-12",
            "inspector": "Alice",
            "odometer_km": 1000,
            "checklist": [{"item": "tyres", "ok": True}],
            "passed": True,
        }
        i1 = phone.capture_create(type_key="inspection", data={**inspection, "photos": [photo_a]}).record_id
        i2 = phone.capture_create(type_key="inspection", data={**inspection, "vehicle": "VAN-14"}).record_id
    with south_seed.open() as phone:
        s3 = phone.capture_create(
            type_key="stock_count", data={"location": "S1", "sku": "PIPE-2", "counted": 5, "unit": "m"}
        ).record_id
        j2 = phone.capture_create(
            type_key="job_card", data={"title": "Fix gate", "site": "Yard", "status": "open", "hours": 0}
        ).record_id
    sync_all([north_seed, south_seed], "--until-drained", "--timeout", "90")
    sync_all(devices)
    # The north seed moves both inspections on: every other phone's edit of them is now stale,
    # so a stale change of the `passed` verdict waits for an officer.
    with north_seed.open() as phone:
        phone.capture_update(record_id=i1, data={"odometer_km": 1010})
        phone.capture_update(record_id=i2, data={"odometer_km": 2020})
    sync_all([north_seed], "--until-drained", "--timeout", "60")

    # --- offline: every phone captures ----------------------------------------------------------
    proxy.offline = True
    for device in devices:
        n = device.index
        is_north = device.username != "carol"
        with device.open() as phone:
            if n == 9:
                # A stock take: one big first batch, which an app server is killed in the middle of.
                for shelf in range(30):
                    phone.capture_create(
                        type_key="stock_count",
                        data={"location": f"Shelf {shelf}", "sku": f"ST-{shelf}", "counted": shelf, "unit": "each"},
                    )
            # Concurrent edits of the same records: last write wins, field merges.
            phone.capture_update(record_id=s1 if is_north else s3, data={"counted": 100 + n})
            merge_edit = [{"status": "in_progress"}, {"hours": n}, {"assigned_to": f"worker {n}"}][n % 3]
            phone.capture_update(record_id=j1 if is_north else j2, data=merge_edit)
            if is_north and n != 0:
                phone.capture_update(record_id=i1 if n % 2 else i2, data={"passed": False})
            if n == 2:
                phone.capture_delete(record_id=s2)
            if n == 4:
                phone.capture_update(record_id=s2, data={"counted": 99})
            if n == 3:  # refused by the schema: a final rejection
                phone.capture_create(
                    type_key="stock_count", data={"location": "B1", "sku": "X", "counted": -5, "unit": "each"}
                )
            # A record of its own, edited twice more before it was ever sent (a chain).
            own = phone.capture_create(
                type_key="stock_count", data={"location": f"L{n}", "sku": f"SKU-{n}", "counted": n, "unit": "each"}
            ).record_id
            phone.capture_update(record_id=own, data={"counted": n + 100})
            phone.capture_update(record_id=own, data={"note": "recounted"})
            if n == 5:
                phone.capture_delete(record_id=own)
            # An incident with a photo; two phones' photos are large (several tus chunks).
            big = n in (1, 8)
            photo = phone.attach(device.file(f"incident-{n}.png", noisy_png(420 if big else 90, 10 + n)))
            incident = {
                "title": f"Incident {n}",
                "severity": "low",
                "occurred_at": now(),
                "description": "captured offline",
                "photos": [photo],
            }
            phone.capture_create(type_key="incident", data=incident)
            if n in (1, 5):
                # Two phones add their own photo to the same inspection at once.
                record = phone.export_records()[i1]["data"]
                extra = phone.attach(device.file(f"i1-{n}.png", noisy_png(80, 30 + n)))
                phone.capture_update(record_id=i1, data={"photos": [*record["photos"], extra]})
            if n == 6:
                # Another phone's file, taken up in a new record (same team).
                shared = phone.export_records()[i1]["data"]["photos"][0]
                phone.capture_create(type_key="incident", data={**incident, "title": "Same van", "photos": [shared]})
                # A "photo" that is not one: verification rejects it, so its record is refused.
                fake = phone.attach(device.file("fake.png", b"this is not a png " * 100), content_type="image/png")
                phone.capture_create(type_key="incident", data={**incident, "title": "Fake", "photos": [fake]})
            if n == 8:
                pdf = phone.attach(device.file("report.pdf", PDF_WITH_SCRIPT), content_type="application/pdf")
                phone.capture_create(type_key="incident", data={**incident, "title": "Script", "documents": [pdf]})
    # Capture through the CLI works offline too, and a sync without signal keeps the queue.
    offline = devices[9]
    captured = offline.cli("capture", "update", "--record", s3, "--data", '{"note": "cli, offline"}')
    assert captured.returncode == 0, captured.stderr
    pending_before = len(json.loads(offline.cli("status", "--json").stdout)["pending"])
    attempt = offline.cli("sync", "--timeout", "2", "--base-delay", "0.1", "--max-delay", "0.5")
    assert attempt.returncode == 2, attempt.stdout + attempt.stderr
    assert len(json.loads(offline.cli("status", "--json").stdout)["pending"]) == pending_before
    assert proxy.counters["offline_reset"] >= 1

    captured_ids: dict[str, set[str]] = {}
    for device in devices:
        with device.open() as phone:
            captured_ids[phone.device_id] = {a.id for a in phone.store.actions()}
    offline_at = time.monotonic()

    # --- back online, through the faults ----------------------------------------------------------
    proxy.offline = False
    proxy.faults = Faults(drop_response=0.25, reset_upload=0.3, slow=0.15)
    stop_officer = tmp_path / "stop-officer"
    officer = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.officer", str(stop_officer)],
        cwd=Path(__file__).resolve().parent.parent.parent,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=(stack.tmp / "officer.log").open("ab"),
    )
    logs = stack.tmp
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for device in devices:
        processes[device.name] = device.sync_process(logs / f"{device.name}.log", seconds=DRAIN_SECONDS)
    conductor = Conductor(stack, proxy, devices[1], processes, logs)
    conductor.start()
    try:
        wait_until(
            lambda: all(p.poll() is not None for p in processes.values()) and not conductor.threads[2].is_alive(),
            seconds=DRAIN_SECONDS + 20,
            interval=0.5,
            what="every device's outbox to drain",
        )
    finally:
        conductor.stop()
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, 9)
        stop_officer.touch()
        decided = json.loads(officer.communicate(timeout=30)[0] or "{}")
    drained_at = time.monotonic()
    failed = {
        name: (logs / f"{name}.log").read_text(errors="replace")[-3000:]
        for name, process in processes.items()
        if process.returncode != 0
    }
    assert not failed, f"devices that did not drain: {failed}\nworker:\n{stack.worker.tail() if stack.worker else ''}"
    assert conductor.device_killed, "the victim device finished before it could be killed mid-sync"

    # --- a last pull everywhere, without faults ---------------------------------------------------
    proxy.faults = Faults()
    sync_all(devices, "--timeout", "60")

    # --- what the server holds --------------------------------------------------------------------
    state = stack.django("server_state")
    records = {r["id"]: r for r in state["records"]}
    ledger = {(e["device"], e["action"]): e for e in state["ledger"]}
    reviews = {r["action"]: r for r in state["reviews"]}
    attachments = {a["id"]: a for a in state["attachments"]}
    events_by_action: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in state["events"]:
        if event["action"]:
            events_by_action[event["action"]].append(event)

    local_actions: dict[tuple[str, str], ActionRow] = {}
    local_records: dict[str, dict[str, Any]] = {}
    resumes = 0
    for device in devices:
        with device.open() as phone:
            for action in phone.store.actions():
                local_actions[(phone.device_id, action.id)] = action
            local_records[phone.device_id] = phone.export_records()
            resumes += sum(a.resumes for a in phone.store.attachments())
            assert not phone.status()["pending"] and not phone.status()["pending_review"], device.name
            assert {a.id for a in phone.store.actions()} >= captured_ids[phone.device_id]

    # Every captured action has exactly one final outcome in the ledger, and the device holds it.
    assert set(ledger) == set(local_actions), "ledger rows and captured actions differ"
    final_status = {}
    for key, action in local_actions.items():
        entry = ledger[key]
        assert entry["status"] in ("applied", "merged", "pending_review", "rejected"), entry
        assert action.state == "done", (action, entry)
        if entry["status"] == "pending_review":
            review = reviews[action.id]
            assert review["state"] in ("approved", "resolved", "rejected"), review
            expected = "rejected" if review["state"] == "rejected" else "applied"
            assert action.status == expected, (action, review)
            assert (action.result or {}).get("decision", {}).get("state") == review["state"]
        else:
            assert action.status == entry["status"], (action, entry)
        final_status[key] = action.status

    # ... and in the journal: one write for an applied action, none for a rejected one; a review
    # opened and decided once, with one write when approved. No journal entry names another action.
    for (device_id, action_id), entry in ledger.items():
        events = events_by_action.pop(action_id, [])
        assert all(e["device"] in (device_id, None) for e in events), events
        device_writes = [e for e in events if e["source"] == "device" and e["verb"] in RECORD_VERBS]
        approval_writes = [e for e in events if e["source"] == "approval" and e["verb"] in RECORD_VERBS]
        opened = [e for e in events if e["verb"] == "review.opened"]
        closed = [e for e in events if e["verb"] == "review.decided"]
        if entry["status"] in ("applied", "merged"):
            assert (len(device_writes), approval_writes, opened) == (1, [], []), events
        elif entry["status"] == "rejected":
            assert events == [], events
        else:
            approved = reviews[action_id]["state"] in ("approved", "resolved")
            assert (device_writes, len(opened), len(closed)) == ([], 1, 1), events
            assert len(approval_writes) == (1 if approved else 0), events
    assert not events_by_action, f"journal events of actions nobody captured: {dict(events_by_action)}"

    # No duplicate records: each record made by exactly one create, each action written at most
    # once, versions 1..n without gaps.
    created = Counter(v["record"] for v in state["versions"] if v["op"] == "create")
    assert set(created) == set(records) and set(created.values()) == {1}
    written = Counter(v["action"] for v in state["versions"])
    assert max(written.values()) == 1, [a for a, n in written.items() if n > 1]
    versions_of: dict[str, list[int]] = defaultdict(list)
    for version in state["versions"]:
        versions_of[version["record"]].append(version["version"])
    for record_id, record in records.items():
        assert sorted(versions_of[record_id]) == list(range(1, record["version"] + 1)), record_id
    creates = {a.record for a in local_actions.values() if a.op == "create" and a.status == "applied"}
    assert creates == set(records)

    # No record names a missing, unverified or rejected file; the record holds the server's metadata.
    referenced = set()
    for record in records.values():
        if record["deleted"]:
            continue
        for ref in attachment_refs(state["schemas"][record["type"]], record["data"]):
            attachment = attachments.get(ref["id"])
            assert attachment is not None, (record, ref)
            assert attachment["state"] == "verified", (record, attachment)
            assert (ref["sha256"], ref["size"]) == (attachment["sha256"], attachment["size"])
            referenced.add(ref["id"])
    for link in state["links"]:
        assert attachments[link["attachment"]]["state"] != "rejected", link
    # Every file uploaded once and decided once, whatever the retries, resets and the killed worker.
    verdicts = Counter(
        e["object_id"] for e in state["events"] if e["verb"] in ("attachment.verified", "attachment.rejected")
    )
    uploads = Counter(e["object_id"] for e in state["events"] if e["verb"] == "attachment.uploaded")
    assert set(verdicts) == set(uploads) == set(attachments) and set(verdicts.values()) == set(uploads.values()) == {1}
    rejected_files = {a["id"]: a["reason"] for a in attachments.values() if a["state"] == "rejected"}
    assert sorted(rejected_files.values()) == ["pdf_active_content", "type_not_allowed"], rejected_files
    refused = Counter(
        (a.result or {}).get("error", {}).get("code") for a in local_actions.values() if a.status == "rejected"
    )
    assert refused["attachment_rejected"] == 2 and refused["schema_violation"] == 1, refused

    # Every device holds exactly the server's records of its user's teams.
    for device in devices:
        with device.open() as phone:
            teams = set(state["teams"][device.username])
            expected = {
                r["id"]: {k: r[k] for k in ("type", "team", "version", "deleted", "data")}
                for r in records.values()
                if r["team"] in teams
            }
            assert local_records[phone.device_id] == expected, device.name

    # The journal's hash chain verifies.
    assert "audit chain ok" in stack.manage("audit_verify")

    # The faults did happen, and the client recovered from each.
    counters = proxy.counters
    assert counters["drop_push"] >= 1 and counters["drop_upload_patch"] + counters["drop_upload_create"] >= 1
    assert counters["reset_upload"] >= 1 and counters["slow"] >= 1
    assert counters["upstream_lost_push"] >= 1, f"no push was in flight when app server 0 died: {counters}"
    assert conductor.before_commit is not None, f"no kill landed before its batch committed: {conductor.kills}"
    half_applied = [(backend, before, size) for backend, before, size in conductor.kills if 0 < before < size]
    assert not half_applied, f"a killed push left part of its batch applied: {half_applied}"
    assert sum(e["replays"] for e in state["ledger"]) >= 1, "no retried push was answered from the ledger"
    assert resumes >= 1, "no upload resumed from a partial offset"
    assert conductor.worker_killed_during is not None
    killed = attachments[conductor.worker_killed_during]
    assert killed["state"] in ("verified", "rejected") and killed["attempts"] >= 2, killed
    # The same message came back (acks_late: it was never acknowledged) to the new worker.
    task = f"verify_attachment[{conductor.worker_killed_task}]"
    worker_log = (stack.tmp / "worker.log").read_text(errors="replace")
    assert worker_log.count(f"{task} received") >= 2 and f"{task} succeeded" in worker_log, task
    statuses = Counter(final_status.values())
    assert statuses["applied"] and statuses["merged"] and statuses["rejected"], statuses
    review_states = Counter(r["state"] for r in state["reviews"])
    assert review_states["rejected"] >= 1 and review_states["approved"] + review_states["resolved"] >= 1, decided

    print(
        f"\ne2e: {len(local_actions)} actions ({dict(statuses)}), {len(records)} records, "
        f"{len(attachments)} files, reviews {dict(review_states)}; faults {dict(counters)}; "
        f"app kills {conductor.kills} (server, rows committed, batch size), resumes {resumes}; "
        f"setup+offline {offline_at - started:.0f}s, drain {drained_at - offline_at:.0f}s, "
        f"total {time.monotonic() - started:.0f}s",
        file=sys.stderr,
    )


def attachment_refs(schema: Any, value: Any) -> list[dict[str, Any]]:
    """Every value the schema marks `"format": "attachment"` (properties and items)."""
    if not isinstance(schema, dict):
        return []
    if schema.get("format") == "attachment":
        return [value] if isinstance(value, dict) else []
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                found.extend(attachment_refs(sub, value[name]))
    elif isinstance(value, list):
        for item in value:
            found.extend(attachment_refs(schema.get("items"), item))
    return found
