"""A device: registration, offline capture, attaching files, and what the user is shown.

Capture never touches the network. Each capture is one local transaction that queues the action
(with the ids it will keep for ever) and updates what the user sees."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fieldsync_device.api import ServerApi
from fieldsync_device.errors import DeviceError
from fieldsync_device.store import ATTACHMENT_SETTLED, DONE, QUEUED, REVIEW, Store, dumps
from fieldsync_device.transport import Transport

DB_NAME = "device.sqlite3"
BLOBS = "blobs"


@dataclass(frozen=True)
class Captured:
    action_id: str
    record_id: str


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


class Device:
    def __init__(self, home: Path, *, clock: Callable[[], datetime] | None = None, timeout: float = 30.0) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        (home / BLOBS).mkdir(exist_ok=True)
        self.store = Store(home / DB_NAME)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.timeout = timeout

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- identity -----------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        return self.store.meta("token") is not None

    def _require(self, key: str) -> str:
        value = self.store.meta(key)
        if value is None:
            raise DeviceError("This device is not registered yet: run `fieldsync-device register` first.")
        return value

    @property
    def device_id(self) -> str:
        return self._require("device_id")

    @property
    def username(self) -> str:
        return self._require("username")

    def api(self) -> ServerApi:
        return ServerApi(Transport(self._require("server"), timeout=self.timeout, token=self._require("token")))

    def now(self) -> datetime:
        """The device's clock: the system clock plus a simulated skew (tests of clock correction)."""
        skew = float(self.store.meta("clock_skew_seconds") or 0)
        return self._clock() + timedelta(seconds=skew)

    def register(
        self,
        *,
        server: str,
        username: str,
        password: str,
        name: str,
        platform: str = "python",
        clock_skew_seconds: float = 0,
    ) -> str:
        """Register with the server and keep the token (shown once). A device registers once: a
        new registration is a new device whose action ids start afresh, so an old queue would
        lose its idempotency (docs/sync-protocol.md, Registering)."""
        if self.registered:
            raise DeviceError(f"Already registered as device {self.device_id}; use another --home for a new device.")
        anonymous = ServerApi(Transport(server, timeout=self.timeout))
        answer = anonymous.register(username=username, password=password, name=name, platform=platform)
        with self.store.transaction():
            self.store.set_meta("server", server)
            self.store.set_meta("username", username)
            self.store.set_meta("device_id", str(answer["device_id"]))
            self.store.set_meta("token", str(answer["token"]))
            self.store.set_meta("clock_skew_seconds", str(clock_skew_seconds))
        self.refresh_profile()
        return str(answer["device_id"])

    def refresh_profile(self) -> None:
        """The user's teams and the record types, cached for offline capture."""
        api = self.api()
        me = api.me()
        with self.store.transaction():
            self.store.set_meta("teams", dumps(sorted(team["slug"] for team in me.get("teams", []))))
        self.refresh_record_types(api)

    def teams(self) -> list[str]:
        teams = self.store.meta_json("teams")
        return list(teams) if isinstance(teams, list) else []

    def record_types(self) -> dict[str, Any]:
        types = self.store.meta_json("record_types")
        return dict(types) if isinstance(types, dict) else {}

    def schema_version(self, type_key: str) -> int | None:
        """The version of the form the user captured with (the cached record type's), so the
        server can bring an action from an older form forward; None when it is not known."""
        version = self.record_types().get(type_key, {}).get("version")
        return version if isinstance(version, int) else None

    def refresh_record_types(self, api: ServerApi) -> None:
        types = api.record_types()
        with self.store.transaction():
            self.store.set_meta("record_types", dumps({t["key"]: t for t in types}))

    # --- capture (offline) --------------------------------------------------------------------

    def capture_create(
        self, *, type_key: str, data: dict[str, Any], team: str | None = None, record_id: str | None = None
    ) -> Captured:
        self._require("token")
        types = self.record_types()
        if types and type_key not in types:
            raise DeviceError(f"Unknown record type {type_key!r}; known: {', '.join(sorted(types))}.")
        if not isinstance(data, dict) or not data:
            raise DeviceError("A create carries every field of the record (a non-empty JSON object).")
        teams = self.teams()
        if team is None and len(teams) == 1:
            team = teams[0]
        if team is None:
            raise DeviceError(f"Say which team (--team): you are in {', '.join(teams) or 'no team'}.")
        if teams and team not in teams:
            raise DeviceError(f"You are not in team {team!r}; your teams: {', '.join(teams)}.")
        record_id = str(uuid.UUID(record_id)) if record_id else str(uuid.uuid4())
        action_id = str(uuid.uuid4())
        with self.store.transaction():
            if self.store.record(record_id) is not None:
                raise DeviceError(f"Record {record_id} already exists on this device.")
            self.store.insert_local_record(record_id=record_id, type_key=type_key, team=team)
            self.store.insert_action(
                action_id=action_id,
                op="create",
                type_key=type_key,
                record_id=record_id,
                team=team,
                data=data,
                captured_at=iso(self.now()),
                seen_version=None,
                after_action=None,
                schema_version=self.schema_version(type_key),
            )
            self.store.rebuild(record_id)
        return Captured(action_id=action_id, record_id=record_id)

    def capture_update(self, *, record_id: str, data: dict[str, Any]) -> Captured:
        if not isinstance(data, dict) or not data:
            raise DeviceError("An update carries the changed fields (a non-empty JSON object).")
        return self._capture_change("update", record_id, data)

    def capture_delete(self, *, record_id: str) -> Captured:
        return self._capture_change("delete", record_id, {})

    def _capture_change(self, op: str, record_id: str, data: dict[str, Any]) -> Captured:
        self._require("token")
        action_id = str(uuid.uuid4())
        with self.store.transaction():
            record = self.store.record(record_id)
            if record is None:
                raise DeviceError(f"No record {record_id} on this device.")
            if record.local_deleted:
                raise DeviceError(f"Record {record_id} is deleted.")
            # The user edited what they saw: the server's version they had, plus their own queued
            # edits. Which base_version that means is settled when the action is first sent.
            self.store.insert_action(
                action_id=action_id,
                op=op,
                type_key=record.type,
                record_id=record_id,
                team=None,
                data=data,
                captured_at=iso(self.now()),
                seen_version=record.server_version,
                after_action=self.store.last_queued_action_for(record_id),
                schema_version=self.schema_version(record.type),
            )
            self.store.rebuild(record_id)
        return Captured(action_id=action_id, record_id=record_id)

    def attach(self, path: Path, *, content_type: str | None = None, filename: str | None = None) -> dict[str, str]:
        """Copy a file into the device (the original may move or vanish) and give it its id.
        Returns the reference to put in a record field: {"id": <attachment uuid>}."""
        self._require("token")
        content_type = content_type or mimetypes.guess_type(path.name)[0] or ""
        if not content_type:
            raise DeviceError(f"Cannot tell the type of {path.name}; pass --content-type.")
        attachment_id = str(uuid.uuid4())
        target = self.home / BLOBS / attachment_id
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as source, tempfile.NamedTemporaryFile(dir=self.home / BLOBS, delete=False) as tmp:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
                tmp.write(chunk)
                size += len(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, target)
        with self.store.transaction():
            self.store.insert_attachment(
                attachment_id=attachment_id,
                path=str(target.relative_to(self.home)),
                filename=filename or path.name,
                content_type=content_type,
                size=size,
                sha256=digest.hexdigest(),
                now=iso(self.now()),
            )
        return {"id": attachment_id}

    def blob_path(self, relative: str) -> Path:
        return self.home / relative

    # --- what the user is shown ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        store = self.store

        def describe(action_id: str) -> dict[str, Any]:
            action = store.action(action_id)
            assert action is not None
            error = (action.result or {}).get("error") or {}
            return {
                "action": action.id,
                "op": action.op,
                "type": action.type,
                "record": action.record,
                "captured_at": action.captured_at,
                "status": action.status,
                "error": error.get("code"),
                "message": error.get("message") or action.last_error,
                "review": (action.result or {}).get("review"),
                "attempts": action.attempts,
            }

        actions = store.actions()
        attachments = store.attachments()
        return {
            "device": store.meta("device_id"),
            "user": store.meta("username"),
            "server": store.meta("server"),
            "teams": self.teams(),
            "last_sync": store.meta("last_sync_at"),
            "last_error": store.meta("last_error"),
            "has_cursor": store.meta("cursor") is not None,
            "records": sum(1 for r in store.records() if not r.local_deleted),
            "pending": [describe(a.id) for a in actions if a.state == QUEUED],
            "pending_review": [describe(a.id) for a in actions if a.state == REVIEW],
            "failed": [describe(a.id) for a in actions if a.state == DONE and a.status == "rejected"],
            "done": sum(1 for a in actions if a.state == DONE),
            "attachments": {
                "pending": [
                    {"id": a.id, "filename": a.filename, "state": a.state, "uploaded": a.upload_offset, "size": a.size}
                    for a in attachments
                    if a.state not in ATTACHMENT_SETTLED
                ],
                "rejected": [
                    {"id": a.id, "filename": a.filename, "state": a.state, "reason": a.error}
                    for a in attachments
                    if a.state in ("rejected", "failed")
                ],
            },
        }

    def export_records(self) -> dict[str, dict[str, Any]]:
        """The records as the device holds them: {id: {type, team, version, deleted, data}}."""
        return {
            r.id: {
                "type": r.type,
                "team": r.team,
                "version": r.server_version,
                "deleted": r.local_deleted,
                "data": r.local_data,
            }
            for r in self.store.records()
        }
