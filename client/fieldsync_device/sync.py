"""Sync: upload the files -> push the queue in order -> pick up review decisions -> pull to the
cursor, and the retry loop (exponential backoff with full jitter) around it.

Every step is safe to interrupt anywhere and to repeat:
- uploads are tus: the offset is asked from the server (HEAD) after any interruption;
- an action's bytes are stored before its first send and resent unchanged; its result is stored
  in the same local transaction that takes it out of the queue, so a crash in between means a
  resend, which the server answers from its ledger (`replayed: true`);
- the pull cursor is stored in the same transaction as the page it ends."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldsync_device.api import ServerApi
from fieldsync_device.backoff import Backoff
from fieldsync_device.device import Device, iso
from fieldsync_device.errors import ApiError, DeviceError, Transient
from fieldsync_device.store import ATTACHMENT_SETTLED, DONE, QUEUED, REVIEW, ActionRow, AttachmentRow, dumps

PUSH_MAX_ACTIONS = 100  # the server takes 500; smaller batches lose less work to a dropped connection
PUSH_MAX_BYTES = 1024 * 1024  # the server takes 5 MB
PULL_LIMIT = 500
TUS_CHUNK = 256 * 1024


@dataclass
class CycleReport:
    uploaded: int = 0
    pushed: int = 0
    decided: int = 0
    pulled: int = 0
    queued: int = 0
    in_review: int = 0
    unsettled_attachments: int = 0

    @property
    def drained(self) -> bool:
        return self.queued == 0 and self.in_review == 0 and self.unsettled_attachments == 0

    @property
    def progressed(self) -> bool:
        return bool(self.uploaded or self.pushed or self.decided or self.pulled)


@dataclass
class SyncOutcome:
    drained: bool
    cycles: int
    report: CycleReport | None
    errors: list[str] = field(default_factory=list)


@contextmanager
def exclusive(home: Path) -> Iterator[None]:
    """One sync at a time per device: two would push the same queue concurrently. The OS drops
    the lock when the process dies, so a killed sync never blocks the next one."""
    fd = os.open(home / ".sync.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeviceError("Another sync of this device is running.") from None
        yield
    finally:
        os.close(fd)


def attachment_refs(value: Any, known: dict[str, str]) -> set[str]:
    """Ids of the device's own attachments that `value` references ({"id": <uuid>, ...} anywhere)."""
    found: set[str] = set()
    if isinstance(value, dict):
        ref = value.get("id")
        if isinstance(ref, str) and ref in known:
            found.add(ref)
        for item in value.values():
            found |= attachment_refs(item, known)
    elif isinstance(value, list):
        for item in value:
            found |= attachment_refs(item, known)
    return found


class Syncer:
    def __init__(
        self,
        device: Device,
        *,
        chunk_size: int = TUS_CHUNK,
        push_max_actions: int = PUSH_MAX_ACTIONS,
        push_max_bytes: int = PUSH_MAX_BYTES,
        pull_limit: int = PULL_LIMIT,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.device = device
        self.store = device.store
        self.chunk_size = chunk_size
        self.push_max_actions = push_max_actions
        self.push_max_bytes = push_max_bytes
        self.pull_limit = pull_limit
        self.log = log or (lambda message: None)

    # --- the loop -----------------------------------------------------------------------------

    def run(
        self,
        *,
        until_drained: bool = False,
        timeout: float | None = None,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> SyncOutcome:
        """Sync cycles until one completes (or, with `until_drained`, until nothing is left to
        upload, push or wait for), retrying transient failures with backoff, up to `timeout`
        seconds. An `ApiError` (the server refused a request as such) stops it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = Backoff(base=base_delay, cap=max_delay)
        outcome = SyncOutcome(drained=False, cycles=0, report=None)
        with exclusive(self.device.home):
            while True:
                retry_after = None
                try:
                    report = self.cycle()
                    outcome.cycles += 1
                    outcome.report = report
                    outcome.drained = report.drained
                    if report.drained or not until_drained:
                        return outcome
                    if report.progressed:
                        backoff.reset()
                    self.log(
                        f"waiting: {report.queued} queued, {report.in_review} in review, "
                        f"{report.unsettled_attachments} files not verified yet"
                    )
                except Transient as exc:
                    outcome.errors.append(str(exc))
                    retry_after = exc.retry_after
                    self.log(f"transient: {exc}")
                    with self.store.transaction():
                        self.store.set_meta("last_error", str(exc))
                except ApiError as exc:
                    with self.store.transaction():
                        self.store.set_meta("last_error", str(exc))
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    return outcome
                delay = backoff.next_delay(at_least=retry_after)
                if deadline is not None:
                    delay = min(delay, max(0.0, deadline - time.monotonic()))
                sleep(delay)

    def cycle(self) -> CycleReport:
        api = self.device.api()
        report = CycleReport()
        self.refresh_teams(api)
        report.uploaded = self.upload_attachments(api)
        self.check_attachments(api)
        report.pushed = self.push(api)
        report.decided = self.poll_reviews(api)
        report.pulled = self.pull(api)
        report.queued = self.store.count_actions(QUEUED)
        report.in_review = self.store.count_actions(REVIEW)
        report.unsettled_attachments = sum(
            1 for state in self.store.attachment_states().values() if state not in ATTACHMENT_SETTLED
        )
        with self.store.transaction():
            self.store.set_meta("last_sync_at", iso(self.device.now()))
            self.store.set_meta("last_error", None)
        return report

    def refresh_teams(self, api: ServerApi) -> None:
        teams = sorted(team["slug"] for team in api.me().get("teams", []))
        with self.store.transaction():
            self.store.set_meta("teams", dumps(teams))
            self.store.forget_records_outside(set(teams))

    # --- attachments --------------------------------------------------------------------------

    def upload_attachments(self, api: ServerApi) -> int:
        uploaded = 0
        for attachment in self.store.attachments("local", "uploading"):
            if self._upload(api, attachment):
                uploaded += 1
        return uploaded

    def _set(self, attachment_id: str, **changes: Any) -> None:
        with self.store.transaction():
            self.store.update_attachment(attachment_id, **changes)

    def _upload(self, api: ServerApi, attachment: AttachmentRow) -> bool:
        offset: int | None = None
        if attachment.state == "uploading":
            # Resume: the server's offset is the truth (a chunk may have been cut short, and
            # the bytes that arrived are kept).
            offset = api.tus_offset(attachment.id)
            if offset is not None and 0 < offset < attachment.size:
                self._set(attachment.id, upload_offset=offset, resumed=True)
                self.log(f"resuming {attachment.filename} at {offset} of {attachment.size} bytes")
        if offset is None:
            try:
                # Idempotent per id: a lost 201 or an upload the server forgot both end up here.
                offset = api.tus_create(
                    attachment_id=attachment.id,
                    length=attachment.size,
                    filename=attachment.filename,
                    content_type=attachment.content_type,
                    sha256=attachment.sha256,
                )
            except ApiError as exc:
                self._set(attachment.id, state="failed", error=f"{exc.code}: {exc.message}")
                return False
            self._set(attachment.id, state="uploading", upload_offset=offset)
        path = self.device.blob_path(attachment.path)
        with path.open("rb") as source:
            while offset < attachment.size:
                length = min(self.chunk_size, attachment.size - offset)
                source.seek(offset)
                try:
                    offset = api.tus_patch(attachment.id, offset=offset, stream=source, length=length)
                except ApiError as exc:
                    if exc.status == 409:
                        # offset_mismatch (an earlier PATCH landed after all), a lost lease, or
                        # the upload completed by a PATCH whose answer was lost: ask again.
                        server_offset = api.tus_offset(attachment.id)
                        if server_offset is None:
                            self._set(attachment.id, state="local", upload_offset=0)
                            return False
                        offset = server_offset
                        continue
                    if exc.status in (404, 410):
                        self._set(attachment.id, state="local", upload_offset=0)
                        return False
                    # 422: the whole file did not match its sha256; anything else: refused.
                    self._set(attachment.id, state="failed", error=f"{exc.code}: {exc.message}")
                    return False
                self._set(attachment.id, upload_offset=offset)
        self._set(attachment.id, state="uploaded", upload_offset=attachment.size)
        self.log(f"uploaded {attachment.filename} ({attachment.size} bytes)")
        return True

    def check_attachments(self, api: ServerApi) -> None:
        """Ask for the verdict of each uploaded file: a record naming it is pushed only once the
        server has verified (or rejected) it, so no record ever takes up a file that fails."""
        for attachment in self.store.attachments("uploaded"):
            server = api.attachment(attachment.id)
            if server is None:
                self._set(attachment.id, state="local", upload_offset=0)
            elif server.get("state") in ("verified", "rejected"):
                error = "rejected by the server's verification" if server["state"] == "rejected" else None
                self._set(attachment.id, state=str(server["state"]), server=server, error=error)

    # --- push ---------------------------------------------------------------------------------

    def push(self, api: ServerApi) -> int:
        pushed = 0
        while batch := self._next_batch():
            sent_at = iso(self.device.now())
            # The stored bytes of each action, verbatim: a retry is byte-for-byte the first send.
            payload = '{"actions":[' + ",".join(body for _, body in batch) + '],"sent_at":' + json.dumps(sent_at) + "}"
            results = api.push(payload.encode())
            if len(results) != len(batch):
                raise Transient(f"push: {len(results)} results for {len(batch)} actions")
            with self.store.transaction():
                answered = sum(
                    self._store_result(action, result) for (action, _), result in zip(batch, results, strict=True)
                )
            pushed += answered
            self.log(f"pushed {len(batch)} actions")
            if not answered:
                # Every one was `retry_later`: back off instead of resending at once.
                raise Transient("push: the server asked to retry every action later")
        return pushed

    def _next_batch(self) -> list[tuple[ActionRow, str]]:
        """The next actions in outbox order, stopping at the first that must wait: for a file that
        is not verified yet, or for the result of an earlier action on the same record (its
        base_version is that result's version)."""
        states = self.store.attachment_states()
        batch: list[tuple[ActionRow, str]] = []
        size = 0
        with self.store.transaction():
            for action in self.store.actions(state=QUEUED):
                if any(states[ref] not in ATTACHMENT_SETTLED for ref in attachment_refs(action.data, states)):
                    break
                if action.after_action is not None:
                    before = self.store.action(action.after_action)
                    if before is not None and before.state == QUEUED:
                        break
                body = action.body or self._freeze(action)
                if batch and (len(batch) >= self.push_max_actions or size + len(body) > self.push_max_bytes):
                    break
                batch.append((action, body))
                size += len(body) + 1
        return batch

    def _freeze(self, action: ActionRow) -> str:
        """Write the action's bytes, once, before they are first sent."""
        body: dict[str, Any] = {
            "id": action.id,
            "op": action.op,
            "type": action.type,
            "record": action.record,
            "captured_at": action.captured_at,
        }
        if action.schema_version is not None:
            body["schema_version"] = action.schema_version
        if action.op == "create":
            body["data"] = action.data
            if action.team:
                body["team"] = action.team
        else:
            body["base_version"] = self._base_version(action)
            if action.op == "update":
                body["data"] = action.data
        text = dumps(body)
        self.store.freeze(action.id, text)
        return text

    def _base_version(self, action: ActionRow) -> int:
        """The server version the user's edit was made on: the one the device had when the user
        edited, or, after an earlier own edit of the record that applied, the version that edit
        produced (the user saw their own edit). After an own edit that did not apply (rejected,
        in review), the user's view still rested on the version they had."""
        base = action.seen_version
        if action.after_action is not None:
            before = self.store.action(action.after_action)
            version = (before.result or {}).get("version") if before is not None else None
            if before is not None and before.status in ("applied", "merged") and isinstance(version, int):
                base = version
            elif base is None and before is not None and before.body:
                earlier = json.loads(before.body).get("base_version")
                base = earlier if isinstance(earlier, int) else None
        return base if base is not None and base >= 1 else 1

    def _store_result(self, action: ActionRow, result: dict[str, Any]) -> bool:
        """Store one result; False when the action stays queued (`retry_later`)."""
        if result.get("id") != action.id:
            raise Transient(f"push: result {result.get('id')} answers action {action.id}")
        status = str(result.get("status"))
        error = result.get("error") or {}
        if status == "rejected" and error.get("code") == "retry_later":
            # Nothing was stored on the server: the same action goes again.
            self.store.note_attempt(action.id, "retry_later")
            return False
        state = REVIEW if status == "pending_review" else DONE
        self.store.store_result(action.id, state=state, status=status, result=result, now=iso(self.device.now()))
        self._adopt_result(action, result)
        self.store.rebuild(action.record)
        return True

    def _adopt_result(self, action: ActionRow, result: dict[str, Any]) -> None:
        """Every result with a version carries the server's state of the record: take it."""
        version = result.get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            data = result.get("data")
            self.store.adopt(
                record_id=action.record,
                type_key=action.type,
                team=action.team,
                version=version,
                deleted=data is None,
                data=data if isinstance(data, dict) else None,
            )

    # --- review decisions ---------------------------------------------------------------------

    def poll_reviews(self, api: ServerApi) -> int:
        decided = 0
        for action in self.store.actions(state=REVIEW):
            result = api.action(action.id)
            if result is None:
                # The ledger forgot it (kept >= 90 days); no decision will ever come from here.
                with self.store.transaction():
                    self.store.store_result(
                        action.id, state=DONE, status="unknown", result=action.result or {}, now=iso(self.device.now())
                    )
                continue
            if "decision" not in result:
                continue
            with self.store.transaction():
                self.store.store_result(
                    action.id, state=DONE, status=str(result["status"]), result=result, now=iso(self.device.now())
                )
                self._adopt_result(action, result)
                self.store.rebuild(action.record)
            decided += 1
            self.log(f"review of {action.id}: {result['decision'].get('state')}")
        return decided

    # --- pull ---------------------------------------------------------------------------------

    def pull(self, api: ServerApi) -> int:
        pulled = 0
        while True:
            page = api.pull(cursor=self.store.meta("cursor"), limit=self.pull_limit)
            changes = page["changes"]
            with self.store.transaction():
                for change in changes:
                    self.store.adopt(
                        record_id=str(change["record"]),
                        type_key=str(change["type"]),
                        team=change.get("team"),
                        version=int(change["version"]),
                        deleted=bool(change["deleted"]),
                        data=change.get("data"),
                        replace_equal=True,
                    )
                # The cursor moves with the page it ends: a crash before this commit re-pulls the
                # page, and re-applying it changes nothing (versions).
                self.store.set_meta("cursor", str(page["cursor"]))
            pulled += len(changes)
            if page.get("record_types_changed"):
                # A form changed on the server: capture with the new one from now on.
                self.device.refresh_record_types(api)
            if not page.get("has_more"):
                return pulled
