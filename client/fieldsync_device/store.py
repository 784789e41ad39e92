"""The device's durable state: one SQLite file (standard library sqlite3).

- `records`: the server's state of every record the device knows (`server_*`: version, data,
  tombstone) and what the user sees (`local_*`: the server's state with the still-queued own
  actions laid over it, rebuilt whenever either side changes).
- `actions`: the outbox and its history. An action is `queued` until its result is stored, then
  `review` (waiting for an officer) or `done`; its result is written in the same transaction
  that takes it out of the queue. `body` is the exact JSON sent, fixed before the first send.
- `attachments`: files captured on the device, with their tus upload progress and the server's verdict.
- `meta`: registration, token, pull cursor, cached teams and record types.

Every change is one transaction (`BEGIN IMMEDIATE`), WAL with `synchronous=FULL`: a process
killed at any instruction leaves either the state before or the state after."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    team TEXT,
    server_version INTEGER,
    server_deleted INTEGER NOT NULL DEFAULT 0,
    server_data TEXT,
    local_data TEXT,
    local_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    op TEXT NOT NULL,
    type TEXT NOT NULL,
    record TEXT NOT NULL,
    team TEXT,
    data TEXT NOT NULL,
    captured_at TEXT NOT NULL,
    seen_version INTEGER,
    after_action TEXT,
    schema_version INTEGER,
    body TEXT,
    state TEXT NOT NULL DEFAULT 'queued',
    status TEXT,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    resolved_at TEXT
);
CREATE INDEX IF NOT EXISTS actions_state ON actions (state, seq);
CREATE INDEX IF NOT EXISTS actions_record ON actions (record, seq);
CREATE TABLE IF NOT EXISTS attachments (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'local',
    upload_offset INTEGER NOT NULL DEFAULT 0,
    resumes INTEGER NOT NULL DEFAULT 0,
    server TEXT,
    error TEXT,
    created_at TEXT NOT NULL
);
"""

# An action's life: queued -> done, or queued -> review -> done.
QUEUED, REVIEW, DONE = "queued", "review", "done"
# An attachment's life: local -> uploading -> uploaded -> verified | rejected (server verdicts), or
# failed (the server refused the upload itself). Settled: a push may now name it.
ATTACHMENT_SETTLED = {"verified", "rejected", "failed"}


def dumps(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _loads(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


@dataclass(frozen=True)
class RecordRow:
    id: str
    type: str
    team: str | None
    server_version: int | None
    server_deleted: bool
    server_data: dict[str, Any] | None
    local_data: dict[str, Any] | None
    local_deleted: bool


@dataclass(frozen=True)
class ActionRow:
    seq: int
    id: str
    op: str
    type: str
    record: str
    team: str | None
    data: dict[str, Any]
    captured_at: str
    seen_version: int | None
    after_action: str | None
    schema_version: int | None
    body: str | None
    state: str
    status: str | None
    result: dict[str, Any] | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class AttachmentRow:
    id: str
    path: str
    filename: str
    content_type: str
    size: int
    sha256: str
    state: str
    upload_offset: int
    resumes: int
    server: dict[str, Any] | None
    error: str | None


def _record(row: sqlite3.Row) -> RecordRow:
    return RecordRow(
        id=row["id"],
        type=row["type"],
        team=row["team"],
        server_version=row["server_version"],
        server_deleted=bool(row["server_deleted"]),
        server_data=_loads(row["server_data"]),
        local_data=_loads(row["local_data"]),
        local_deleted=bool(row["local_deleted"]),
    )


def _action(row: sqlite3.Row) -> ActionRow:
    return ActionRow(
        seq=row["seq"],
        id=row["id"],
        op=row["op"],
        type=row["type"],
        record=row["record"],
        team=row["team"],
        data=json.loads(row["data"]),
        captured_at=row["captured_at"],
        seen_version=row["seen_version"],
        after_action=row["after_action"],
        schema_version=row["schema_version"],
        body=row["body"],
        state=row["state"],
        status=row["status"],
        result=_loads(row["result"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
    )


def _attachment(row: sqlite3.Row) -> AttachmentRow:
    return AttachmentRow(
        id=row["id"],
        path=row["path"],
        filename=row["filename"],
        content_type=row["content_type"],
        size=row["size"],
        sha256=row["sha256"],
        state=row["state"],
        upload_offset=row["upload_offset"],
        resumes=row["resumes"],
        server=_loads(row["server"]),
        error=row["error"],
    )


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Autocommit mode: transactions are explicit (`transaction()`), never implicit.
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns, so "stored locally" survives power loss too.
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        # A store made before a column existed gets it (CREATE TABLE IF NOT EXISTS does not add it).
        columns = {row["name"] for row in self.db.execute("PRAGMA table_info(actions)")}
        if "schema_version" not in columns:
            self.db.execute("ALTER TABLE actions ADD COLUMN schema_version INTEGER")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock at BEGIN: a concurrent `capture` waits instead of failing
        # to upgrade a read lock halfway through.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- meta ---------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def meta_json(self, key: str) -> Any:
        return _loads(self.meta(key))

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- records ------------------------------------------------------------------------------

    def record(self, record_id: str) -> RecordRow | None:
        row = self.db.execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else _record(row)

    def records(self) -> list[RecordRow]:
        return [_record(row) for row in self.db.execute("SELECT * FROM records ORDER BY id")]

    def insert_local_record(self, *, record_id: str, type_key: str, team: str | None) -> None:
        self.db.execute("INSERT INTO records (id, type, team) VALUES (?, ?, ?)", (record_id, type_key, team))

    def adopt(
        self,
        *,
        record_id: str,
        type_key: str,
        team: str | None,
        version: int,
        deleted: bool,
        data: dict[str, Any] | None,
        replace_equal: bool = False,
    ) -> bool:
        """Take the server's state of a record, unless the device already has a newer version
        (an old replayed result, or a pull page older than a push result). Returns whether it
        changed anything. An equal version is the same state: only a missing team is filled in,
        unless `replace_equal` (the pull feed, which is the server's latest word on the record)."""
        current = self.record(record_id)
        newer = current is None or current.server_version is None or version > current.server_version
        if current is not None and not newer and replace_equal and version == current.server_version:
            newer = True
        if current is None:
            self.db.execute(
                "INSERT INTO records (id, type, team, server_version, server_deleted, server_data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (record_id, type_key, team, version, int(deleted), None if deleted else dumps(data)),
            )
        elif not newer:
            if team and not current.team:
                self.db.execute("UPDATE records SET team = ? WHERE id = ?", (team, record_id))
            return False
        else:
            self.db.execute(
                "UPDATE records SET type = ?, team = COALESCE(?, team), server_version = ?, server_deleted = ?,"
                " server_data = ? WHERE id = ?",
                (type_key, team, version, int(deleted), None if deleted else dumps(data), record_id),
            )
        self.rebuild(record_id)
        return True

    def rebuild(self, record_id: str) -> None:
        """What the user sees: the server's state with the queued own actions laid over it, in
        order. A record the server never confirmed and no queued action creates is forgotten."""
        current = self.record(record_id)
        if current is None:
            return
        exists = current.server_version is not None
        deleted = current.server_deleted
        data = dict(current.server_data) if current.server_data is not None and not deleted else None
        team = current.team
        for action in self.actions_for_record(record_id, state=QUEUED):
            if action.op == "create":
                exists, deleted, data = True, False, dict(action.data)
                team = team or action.team
            elif action.op == "update" and data is not None and not deleted:
                data.update(action.data)
            elif action.op == "delete":
                deleted, data = True, None
        if not exists:
            self.db.execute("DELETE FROM records WHERE id = ?", (record_id,))
            return
        self.db.execute(
            "UPDATE records SET team = ?, local_data = ?, local_deleted = ? WHERE id = ?",
            (team, None if deleted or data is None else dumps(data), int(deleted), record_id),
        )

    def forget_records_outside(self, teams: set[str]) -> int:
        """Drop records of teams the user has left (the server sends no removals for them),
        keeping any that a queued action still needs."""
        rows = self.db.execute(
            "SELECT id FROM records WHERE team IS NOT NULL AND team NOT IN (SELECT value FROM json_each(?))"
            " AND id NOT IN (SELECT record FROM actions WHERE state = ?)",
            (json.dumps(sorted(teams)), QUEUED),
        ).fetchall()
        for row in rows:
            self.db.execute("DELETE FROM records WHERE id = ?", (row["id"],))
        return len(rows)

    # --- actions ------------------------------------------------------------------------------

    def insert_action(
        self,
        *,
        action_id: str,
        op: str,
        type_key: str,
        record_id: str,
        team: str | None,
        data: dict[str, Any],
        captured_at: str,
        seen_version: int | None,
        after_action: str | None,
        schema_version: int | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO actions (id, op, type, record, team, data, captured_at, seen_version, after_action,"
            " schema_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                action_id,
                op,
                type_key,
                record_id,
                team,
                dumps(data),
                captured_at,
                seen_version,
                after_action,
                schema_version,
            ),
        )

    def action(self, action_id: str) -> ActionRow | None:
        row = self.db.execute("SELECT * FROM actions WHERE id = ?", (action_id,)).fetchone()
        return None if row is None else _action(row)

    def actions(self, *, state: str | None = None) -> list[ActionRow]:
        if state is None:
            rows = self.db.execute("SELECT * FROM actions ORDER BY seq")
        else:
            rows = self.db.execute("SELECT * FROM actions WHERE state = ? ORDER BY seq", (state,))
        return [_action(row) for row in rows]

    def actions_for_record(self, record_id: str, *, state: str) -> list[ActionRow]:
        rows = self.db.execute("SELECT * FROM actions WHERE record = ? AND state = ? ORDER BY seq", (record_id, state))
        return [_action(row) for row in rows]

    def last_queued_action_for(self, record_id: str) -> str | None:
        row = self.db.execute(
            "SELECT id FROM actions WHERE record = ? AND state = ? ORDER BY seq DESC LIMIT 1", (record_id, QUEUED)
        ).fetchone()
        return None if row is None else str(row["id"])

    def freeze(self, action_id: str, body: str) -> None:
        # `body IS NULL`: once written, the bytes of an action never change.
        self.db.execute("UPDATE actions SET body = ? WHERE id = ? AND body IS NULL", (body, action_id))

    def store_result(self, action_id: str, *, state: str, status: str, result: dict[str, Any], now: str) -> None:
        self.db.execute(
            "UPDATE actions SET state = ?, status = ?, result = ?, last_error = NULL,"
            " resolved_at = CASE WHEN ? = 'done' THEN ? ELSE resolved_at END WHERE id = ?",
            (state, status, dumps(result), state, now, action_id),
        )

    def note_attempt(self, action_id: str, error: str) -> None:
        self.db.execute("UPDATE actions SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error, action_id))

    def count_actions(self, state: str) -> int:
        row = self.db.execute("SELECT COUNT(*) AS n FROM actions WHERE state = ?", (state,)).fetchone()
        return int(row["n"])

    # --- attachments --------------------------------------------------------------------------

    def insert_attachment(
        self, *, attachment_id: str, path: str, filename: str, content_type: str, size: int, sha256: str, now: str
    ) -> None:
        self.db.execute(
            "INSERT INTO attachments (id, path, filename, content_type, size, sha256, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (attachment_id, path, filename, content_type, size, sha256, now),
        )

    def attachment(self, attachment_id: str) -> AttachmentRow | None:
        row = self.db.execute("SELECT * FROM attachments WHERE id = ?", (attachment_id,)).fetchone()
        return None if row is None else _attachment(row)

    def attachments(self, *states: str) -> list[AttachmentRow]:
        if not states:
            rows = self.db.execute("SELECT * FROM attachments ORDER BY created_at, id")
        else:
            marks = ",".join("?" * len(states))
            rows = self.db.execute(
                f"SELECT * FROM attachments WHERE state IN ({marks}) ORDER BY created_at, id",  # noqa: S608
                states,
            )
        return [_attachment(row) for row in rows]

    def attachment_states(self) -> dict[str, str]:
        return {row["id"]: row["state"] for row in self.db.execute("SELECT id, state FROM attachments")}

    def update_attachment(
        self,
        attachment_id: str,
        *,
        state: str | None = None,
        upload_offset: int | None = None,
        server: dict[str, Any] | None = None,
        error: str | None = None,
        resumed: bool = False,
    ) -> None:
        self.db.execute(
            "UPDATE attachments SET state = COALESCE(?, state), upload_offset = COALESCE(?, upload_offset),"
            " server = COALESCE(?, server), error = COALESCE(?, error), resumes = resumes + ? WHERE id = ?",
            (state, upload_offset, None if server is None else dumps(server), error, int(resumed), attachment_id),
        )
