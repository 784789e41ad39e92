"""Plain SQL for the bench: the database itself, the seed rows, the million-row growth, and the raw
limit that push is measured against. Everything here goes through a bare MySQLdb connection, not
the ORM, so it costs what the database costs and no more."""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import MySQLdb

HOST = "127.0.0.1"
PORT = 3306
USER = "root"
BATCH = 5000  # rows per executemany: one multi-row INSERT of a few MB

# Bench rows span a year ending now, so the date hierarchy and "age" filters see a real range.
YEAR = timedelta(days=365)


def connect(database: str | None = None) -> Any:
    conn = MySQLdb.connect(host=HOST, port=PORT, user=USER, charset="utf8mb4", **({"db": database} if database else {}))
    conn.autocommit(False)
    cursor = conn.cursor()
    # The app's sessions run READ COMMITTED (config/settings.py); the baseline does the same.
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    cursor.close()
    return conn


def create_database(name: str) -> None:
    conn = connect()
    cursor = conn.cursor()
    cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()


def drop_database(name: str) -> None:
    conn = connect()
    conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def server_version() -> str:
    conn = connect()
    cursor = conn.cursor()
    cursor.execute("SELECT VERSION(), @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit")
    version, pool, flush = cursor.fetchone()
    conn.close()
    return f"{version} (innodb_buffer_pool_size {int(pool) // 2**20} MiB, innodb_flush_log_at_trx_commit={flush})"


def naive(value: datetime) -> datetime:
    """Django stores UTC without a zone on MySQL."""
    return value.astimezone(UTC).replace(tzinfo=None)


def chunks(rows: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


@dataclass(frozen=True)
class World:
    """The ids the seed rows and the raw baseline need, read once after seed_demo."""

    users: dict[str, int]
    teams: dict[str, int]
    types: dict[str, int]
    devices: dict[str, uuid.UUID]  # username -> device id


def clocking(rng: random.Random, when: datetime) -> dict[str, Any]:
    """A clock-in as a device sends it (record type `clocking`, records/demo.py)."""
    return {
        "worker": f"worker-{rng.randrange(400):03d}",
        "event": rng.choice(["in", "out"]),
        "at": when.isoformat(timespec="seconds"),
        "site": f"site-{rng.randrange(60):02d}",
        "location": {"lat": round(rng.uniform(50, 55), 5), "lng": round(rng.uniform(-3, 2), 5)},
        "note": "",
    }


def create_action(rng: random.Random, when: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "op": "create",
        "type": "clocking",
        "record": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "data": clocking(rng, when),
        "captured_at": when.isoformat(),
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


RECORD_SQL = (
    "INSERT INTO records_record (id, type_id, team_id, data, version, deleted, created_by_id, created_by_device,"
    " updated_by_id, updated_by_device, captured_at, last_action_id, created_at, updated_at, change_seq)"
    " VALUES (%s, %s, %s, %s, 1, 0, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
VERSION_SQL = (
    "INSERT INTO records_recordversion (record_id, version, data, deleted, op, source, actor_id, device_id,"
    " action_id, captured_at, created_at) VALUES (%s, 1, %s, 0, 'create', 'device', %s, %s, %s, %s, %s)"
)
LEDGER_SQL = (
    "INSERT INTO sync_ledgerentry (device_id, action_id, fingerprint, op, type_key, record_id, status, error_code,"
    " result, captured_at, clock_offset_ms, received_at, replays)"
    " VALUES (%s, %s, %s, 'create', %s, %s, 'applied', '', %s, %s, 0, %s, 0)"
)
EVENT_SQL = (
    "INSERT INTO audit_auditevent (seq, occurred_at, recorded_at, actor_username, actor_id, device_id, source, verb,"
    " object_type, object_id, record_type, team, action_id, request_id, changes, prev_hash, hash)"
    " VALUES (%s, %s, %s, %s, %s, %s, 'device', 'record.created', 'record', %s, %s, %s, %s, %s, %s, %s, %s)"
)


@dataclass(frozen=True)
class Prepared:
    """One create action's four rows, less what the chain hands out at write time (seq, hashes)."""

    record: tuple[Any, ...]
    version: tuple[Any, ...]
    ledger: tuple[Any, ...]
    event: tuple[Any, ...]  # without seq, prev_hash, hash
    changes: str


def prepare(world: World, username: str, team: str, action: dict[str, Any], when: datetime) -> Prepared:
    """The rows push writes for a create action, as plain tuples."""
    user, device, at = world.users[username], str(world.devices[username]), naive(when)
    data = _canonical(action["data"])
    result = _canonical(
        {
            "id": action["id"],
            "status": "applied",
            "record": action["record"],
            "version": 1,
            "data": action["data"],
            "review": None,
            "error": None,
            "replayed": False,
        }
    )
    changes = _canonical({name: [None, value] for name, value in action["data"].items()})
    fingerprint = hashlib.sha256(_canonical(action).encode()).hexdigest()
    return Prepared(
        record=(
            action["record"],
            world.types["clocking"],
            world.teams[team],
            data,
            user,
            device,
            user,
            device,
            at,
            action["id"],
            at,
            at,
        ),
        version=(action["record"], data, user, device, action["id"], at, at),
        ledger=(device, action["id"], fingerprint, "clocking", action["record"], result, at, at),
        event=(at, at, username, user, device, action["record"], "clocking", team, action["id"], ""),
        changes=changes,
    )


def write_actions(conn: Any, prepared: Sequence[Prepared], *, per_commit: int) -> list[float]:
    """Insert the rows of `prepared` (record, version, ledger entry, audit event each), committing
    every `per_commit` actions, and return the seconds each commit unit took. Each unit takes the
    chain head's row lock, hands out the seqs and hashes under it and moves the head, as the app
    does; the rows go in with one executemany per table."""
    cursor = conn.cursor()
    times = []
    for unit in chunks(prepared, per_commit):
        started = time.perf_counter()
        cursor.execute("SELECT seq, hash FROM audit_chainhead WHERE id = 1 FOR UPDATE")
        seq, prev = cursor.fetchone()
        events = []
        for item in unit:
            seq += 1
            digest = hashlib.sha256(f"{seq}{item.changes}{prev}".encode()).hexdigest()
            events.append((seq, *item.event, item.changes, prev, digest))
            prev = digest
        records = [(*item.record, events[i][0]) for i, item in enumerate(unit)]
        cursor.executemany(RECORD_SQL, records)
        cursor.executemany(VERSION_SQL, [item.version for item in unit])
        cursor.executemany(LEDGER_SQL, [item.ledger for item in unit])
        cursor.executemany(EVENT_SQL, events)
        cursor.execute("UPDATE audit_chainhead SET seq = %s, hash = %s WHERE id = 1", (seq, prev))
        conn.commit()
        times.append(time.perf_counter() - started)
    cursor.close()
    return times


# --- seed --------------------------------------------------------------------------------------

FIELD_WORKERS = {"alice": "north", "bob": "north", "carol": "south"}


def seed_records(conn: Any, world: World, count: int, rng: random.Random) -> None:
    """`count` clock-ins by the three field workers' devices, each with its version, ledger entry
    and audit event, as if pushed over the past year (oldest first)."""
    start = datetime.now(UTC) - YEAR
    step = YEAR / max(count * 100, 1)  # the growth below fills the rest of the year
    prepared = []
    for i in range(count):
        username = rng.choice(list(FIELD_WORKERS))
        when = start + i * step
        prepared.append(prepare(world, username, FIELD_WORKERS[username], create_action(rng, when), when))
    write_actions(conn, prepared, per_commit=BATCH)


REVIEW_SQL = (
    "INSERT INTO approvals_review (id, state, reason, record_type_id, team_id, record_id, op, action_id, device_id,"
    " submitted_by_id, captured_at, base_version, base_data, server_version, server_data, proposed_data,"
    " classification, decided_by_id, decided_at, decided_on_version, note, resolution, result_version, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, 'update', %s, %s, %s, %s, 1, %s, 2, %s, %s, %s, %s, %s, %s, '', NULL, %s, %s)"
)
REVIEW_SPAN = timedelta(days=3)  # the seed's span; each doubling moves its copies one span further back


def seed_reviews(conn: Any, world: World, count: int, rng: random.Random) -> None:
    """`count` reviews of inspections (the type whose verdict waits for an officer): 1% still
    pending, the rest decided by olivia. Created over the last REVIEW_SPAN."""
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        username = rng.choice(list(FIELD_WORKERS))
        created = now - REVIEW_SPAN + i * (REVIEW_SPAN / count)
        pending = rng.random() < 0.01
        verdict = rng.random() < 0.5
        rows.append(
            (
                str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "pending" if pending else rng.choice(["approved", "rejected"]),
                rng.choice(["conflict", "conflict", "review_all", "deleted"]),
                world.types["inspection"],
                world.teams[FIELD_WORKERS[username]],
                str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                str(world.devices[username]),
                world.users[username],
                naive(created),
                _canonical({"passed": not verdict, "odometer_km": 1000 + i % 5000}),
                _canonical({"passed": not verdict, "odometer_km": 1010 + i % 5000}),
                _canonical({"passed": verdict}),
                _canonical({"passed": "both_changed", "odometer_km": "server_only"}),
                None if pending else world.users["olivia"],
                None if pending else naive(created + timedelta(hours=2)),
                None if pending else 2,
                None if pending else 3,
                naive(created),
            )
        )
    cursor = conn.cursor()
    for chunk in chunks(rows):
        cursor.executemany(REVIEW_SQL, chunk)
        conn.commit()
    cursor.close()


# --- growth to a million rows ------------------------------------------------------------------

GROW_CHUNK = 100_000  # rows per INSERT ... SELECT, to keep each transaction's undo log small


def scalar(conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
    cursor = conn.cursor()
    cursor.execute(sql, params)
    row = cursor.fetchone()
    cursor.close()
    return row[0] if row else None


def _double(conn: Any, *, table: str, key: str, where: str, copy: str, target: int, offset: str) -> None:
    """Double the rows of `table` matching `where` with `copy` (an INSERT ... SELECT that takes
    `%(offset)s`, `%(low)s` and `%(high)s`) until there are `target`, GROW_CHUNK rows a statement,
    the source split by ranges of `key` (unique among the matching rows)."""
    cursor = conn.cursor()
    while (have := int(scalar(conn, f"SELECT COUNT(*) FROM {table} WHERE {where}"))) < target:
        wanted = min(have, target - have)
        base = scalar(conn, offset)
        cursor.execute(f"SELECT {key} FROM {table} WHERE {where} ORDER BY {key} LIMIT %s", (wanted,))
        keys = [row[0] for row in cursor.fetchall()]
        for start in range(0, len(keys), GROW_CHUNK):
            part = keys[start : start + GROW_CHUNK]
            cursor.execute(copy, {"offset": base, "low": part[0], "high": part[-1]})
            conn.commit()
    cursor.close()


def grow_journal(conn: Any, target: int) -> None:
    """Double the audit journal until it holds `target` events. Copies get seqs after the newest
    event, recorded_at spread over the past year in seq order, new object and action ids, and
    unique stand-in hashes that grow with seq (random ones would make the unique hash index take
    random inserts, the slowest part of the load): the bench reads the trail, it does not verify
    the chain."""
    step_us = int(YEAR / timedelta(microseconds=1) / target)
    start = naive(datetime.now(UTC) - YEAR)
    _double(
        conn,
        table="audit_auditevent",
        key="seq",
        where="1",
        target=target,
        offset="SELECT MAX(seq) FROM audit_auditevent",
        copy=(
            "INSERT INTO audit_auditevent (seq, occurred_at, recorded_at, actor_username, actor_id, device_id,"
            " source, verb, object_type, object_id, record_type, team, action_id, request_id, changes, prev_hash,"
            " hash)"
            f" SELECT seq + %(offset)s, TIMESTAMPADD(MICROSECOND, (seq + %(offset)s) * {step_us}, '{start}'),"
            f" TIMESTAMPADD(MICROSECOND, (seq + %(offset)s) * {step_us}, '{start}'), actor_username, actor_id,"
            " device_id, source, verb, object_type, IF(object_type = 'record', UUID(), object_id), record_type,"
            " team, IF(action_id IS NULL, NULL, UUID()), request_id, changes,"
            " CONCAT('b', LPAD(HEX(seq + %(offset)s - 1), 63, '0')), CONCAT('b', LPAD(HEX(seq + %(offset)s), 63, '0'))"
            " FROM audit_auditevent WHERE seq BETWEEN %(low)s AND %(high)s"
        ),
    )


def grow_records(conn: Any, target: int) -> None:
    """Double the records of the change feed until there are `target`. Copies get new ids
    (MariaDB's UUID(), time-ordered: see docs/benchmarks.md) and change_seqs after the newest."""
    _double(
        conn,
        table="records_record",
        key="change_seq",
        where="change_seq > 0",
        target=target,
        offset="SELECT MAX(change_seq) FROM records_record",
        copy=(
            "INSERT INTO records_record (id, type_id, team_id, data, version, deleted, created_by_id,"
            " created_by_device, updated_by_id, updated_by_device, captured_at, last_action_id, created_at,"
            " updated_at, change_seq)"
            " SELECT UUID(), type_id, team_id, data, version, deleted, created_by_id, created_by_device,"
            " updated_by_id, updated_by_device, captured_at, UUID(), created_at, updated_at,"
            " change_seq + %(offset)s FROM records_record WHERE change_seq BETWEEN %(low)s AND %(high)s"
        ),
    )


def grow_reviews(conn: Any, target: int) -> None:
    """Double the reviews until there are `target`, each copy created one span of the current
    table earlier (so the queue spans over a year at a million, 1% still pending)."""
    _double(
        conn,
        table="approvals_review",
        key="created_at",
        where="1",
        target=target,
        offset="SELECT TIMESTAMPDIFF(MICROSECOND, MIN(created_at), MAX(created_at)) + 1000000 FROM approvals_review",
        copy=(
            "INSERT INTO approvals_review (id, state, reason, record_type_id, team_id, record_id, op, action_id,"
            " device_id, submitted_by_id, captured_at, base_version, base_data, server_version, server_data,"
            " proposed_data, classification, decided_by_id, decided_at, decided_on_version, note, resolution,"
            " result_version, created_at)"
            " SELECT UUID(), state, reason, record_type_id, team_id, UUID(), op, UUID(), device_id, submitted_by_id,"
            " TIMESTAMPADD(MICROSECOND, -%(offset)s, captured_at), base_version, base_data, server_version,"
            " server_data, proposed_data, classification, decided_by_id,"
            " TIMESTAMPADD(MICROSECOND, -%(offset)s, decided_at), decided_on_version, note, resolution,"
            " result_version, TIMESTAMPADD(MICROSECOND, -%(offset)s, created_at)"
            " FROM approvals_review WHERE created_at BETWEEN %(low)s AND %(high)s"
        ),
    )


def move_chain_head(conn: Any) -> None:
    """After the growth: the head after every seq in use, so the app's next event follows them."""
    top = max(
        int(scalar(conn, "SELECT MAX(seq) FROM audit_auditevent")),
        int(scalar(conn, "SELECT MAX(change_seq) FROM records_record")),
    )
    cursor = conn.cursor()
    cursor.execute(
        "UPDATE audit_chainhead SET seq = %s, hash = SHA2(CONCAT('bench-head-', %s), 256) WHERE id = 1", (top, top)
    )
    conn.commit()
    cursor.close()


def analyze(conn: Any, tables: Sequence[str]) -> None:
    cursor = conn.cursor()
    for table in tables:
        cursor.execute(f"ANALYZE TABLE {table}")
        cursor.fetchall()
    cursor.close()
