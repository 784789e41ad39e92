"""The journal is append-only (ORM guards everywhere, triggers on MariaDB), `audit_verify` names
the first broken link of a tampered chain, and retention purges through the one sanctioned path
without breaking verification."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command, execute_from_command_line
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

import audit.services
from audit.maintenance import TRIGGERS, maintenance
from audit.models import AppendOnlyError, AuditEvent, ChainHead
from audit.services import BrokenLink, purge_events, record_event, verify_chain

TABLE = AuditEvent._meta.db_table


def events(n: int, verb: str = "test.happened") -> list[AuditEvent]:
    made = []
    for i in range(n):
        with transaction.atomic():
            made.append(
                record_event(
                    verb=verb, source="system", object_type="test", object_id=str(i), changes={"n": [i, i + 1]}
                )
            )
    return made


def raw(sql: str, params: list[Any] | None = None) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.rowcount


def tamper(sql: str, params: list[Any] | None = None) -> int:
    """Change the journal behind the application's back (the triggers allow it only like this)."""
    with maintenance():
        return raw(sql, params)


def verify() -> str:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def broken() -> BrokenLink:
    *_, last = verify_chain()
    assert isinstance(last, BrokenLink), "the chain verified"
    return last


# --- the ORM guards -------------------------------------------------------------------------


def test_the_orm_refuses_to_update_or_delete_events(db) -> None:
    [event] = events(1)
    event.verb = "test.rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(verb="test.rewritten")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).verb == "test.happened"


# --- audit_verify ---------------------------------------------------------------------------


def test_audit_verify_passes_an_intact_chain_and_prints_its_head(db) -> None:
    made = events(3)
    assert f"3 events verified; head #3 {made[-1].hash}" in verify()


def test_audit_verify_names_the_altered_event(db) -> None:
    events(5)
    assert tamper(f"UPDATE {TABLE} SET object_id = %s WHERE seq = 3", ["someone-else"]) == 1

    with pytest.raises(CommandError, match=r"broken at event #3: its content does not match its hash"):
        verify()


def test_audit_verify_exits_non_zero_with_the_seq_in_its_message(db, capsys) -> None:
    events(4)
    tamper(f"UPDATE {TABLE} SET changes = %s WHERE seq = 2", ['{"n": [0, 100]}'])

    with pytest.raises(SystemExit) as exit_:
        execute_from_command_line(["manage.py", "audit_verify"])

    assert exit_.value.code == 1
    assert "audit chain broken at event #2" in capsys.readouterr().err


def test_audit_verify_names_a_deleted_event(db) -> None:
    events(4)
    tamper(f"DELETE FROM {TABLE} WHERE seq = 2")
    assert broken() == BrokenLink(2, "event #2 is missing (next is #3)")


def test_audit_verify_catches_a_rehashed_row_by_the_next_link(db) -> None:
    made = events(3)
    forged = AuditEvent.objects.get(seq=2)
    forged.verb = "test.forged"
    forged_hash = audit.services.event_hash(forged)
    tamper(f"UPDATE {TABLE} SET verb = %s, hash = %s WHERE seq = 2", ["test.forged", forged_hash])
    assert made[1].hash != forged_hash
    assert broken() == BrokenLink(3, "prev_hash does not match the previous event's hash")


def test_audit_verify_catches_dropped_events_at_the_end_by_the_chain_head(db) -> None:
    events(3)
    tamper(f"DELETE FROM {TABLE} WHERE seq = 3")
    assert broken().reason == "the chain head says #3 but the journal ends at #2"


# --- MariaDB triggers -----------------------------------------------------------------------


@pytest.mark.mariadb
def test_the_triggers_are_installed(db) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT trigger_name, event_manipulation FROM information_schema.triggers "
            "WHERE event_object_schema = DATABASE() AND event_object_table = %s",
            [TABLE],
        )
        assert dict(cursor.fetchall()) == TRIGGERS


@pytest.mark.mariadb
@pytest.mark.parametrize(
    "sql",
    [f"UPDATE {TABLE} SET verb = 'test.rewritten' WHERE seq = 1", f"DELETE FROM {TABLE} WHERE seq = 1"],
    ids=["update", "delete"],
)
def test_mariadb_refuses_a_raw_update_or_delete(db, sql: str) -> None:
    events(2)
    with pytest.raises(DatabaseError, match="append-only"):
        raw(sql)
    assert AuditEvent.objects.get(seq=1).verb == "test.happened"
    assert verify().startswith("audit chain ok: 2 events")


@pytest.mark.mariadb
def test_the_maintenance_variable_lasts_only_for_its_block(db) -> None:
    events(2)
    with maintenance():
        raw(f"UPDATE {TABLE} SET request_id = 'x' WHERE seq = 1")
    with pytest.raises(DatabaseError, match="append-only"):
        raw(f"UPDATE {TABLE} SET request_id = 'y' WHERE seq = 1")


@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True)
def test_flush_empties_the_journal_past_the_triggers_and_leaves_them_armed() -> None:
    events(2)
    # As the test runner calls it between transactional tests (DELETE FROM, not TRUNCATE).
    call_command("flush", interactive=False, verbosity=0, reset_sequences=False)
    assert not AuditEvent.objects.exists()
    events(1)
    with pytest.raises(DatabaseError, match="append-only"):
        raw(f"DELETE FROM {TABLE}")


@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True)
def test_manage_py_audit_verify_fails_with_the_seq_against_a_tampered_database() -> None:
    events(3)
    tamper(f"UPDATE {TABLE} SET team = 'south' WHERE seq = 2")
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"mysql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}",
    }

    done = subprocess.run(
        [sys.executable, "manage.py", "audit_verify"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1, done
    assert "audit chain broken at event #2" in done.stderr


# --- retention --------------------------------------------------------------------------------


def test_a_purge_leaves_a_verifiable_chain_that_starts_at_its_anchor(db) -> None:
    events(5)
    cutoff = timezone.now()
    events(2, verb="test.recent")

    assert purge_events(before=cutoff) == 5

    assert list(AuditEvent.objects.order_by("seq").values_list("verb", flat=True)) == [
        "test.recent",
        "test.recent",
        "audit.purged",
    ]
    purge = AuditEvent.objects.get(verb="audit.purged")
    assert purge.source == "system"
    assert purge.changes["through_seq"] == [0, 5]
    assert verify().startswith("audit chain ok: 3 events verified")
    events(1)
    assert verify().startswith("audit chain ok: 4 events verified")


def test_a_second_purge_moves_the_anchor(db) -> None:
    events(3)
    purge_events(before=timezone.now())
    events(2)
    assert purge_events(before=timezone.now()) == 3  # the first purge event and the two after it
    assert [e.verb for e in AuditEvent.objects.order_by("seq")] == ["audit.purged"]
    assert verify().startswith("audit chain ok: 1 events verified")


def test_an_interrupted_purge_verifies_and_the_next_run_finishes_it(db, monkeypatch) -> None:
    events(6)
    cutoff = timezone.now()
    calls = 0
    real = audit.services.maintenance

    def crash_after_one_batch(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(audit.services, "maintenance", crash_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        purge_events(before=cutoff, batch_size=2)
    assert AuditEvent.objects.order_by("seq").first().seq == 3
    assert verify().startswith("audit chain ok")

    monkeypatch.undo()
    assert purge_events(before=cutoff, batch_size=2) == 4
    assert verify().startswith("audit chain ok: 1 events verified")


def test_deleting_old_events_without_the_purge_is_caught(db) -> None:
    events(4)
    tamper(f"DELETE FROM {TABLE} WHERE seq <= 2")
    assert broken() == BrokenLink(1, "events #1 to #2 are missing and no audit.purged event accounts for them")


def test_the_purge_command_refuses_while_retention_is_off_or_too_short(db, settings) -> None:
    settings.AUDIT_RETENTION_DAYS = 0
    with pytest.raises(CommandError, match="kept forever"):
        call_command("audit_purge")
    with pytest.raises(CommandError, match="at least 365"):
        call_command("audit_purge", days=30)


def test_the_purge_command_keeps_the_retention_period(db, settings) -> None:
    events(2)
    settings.AUDIT_RETENTION_DAYS = 400
    out = io.StringIO()
    call_command("audit_purge", stdout=out)
    assert "purged 0 audit events" in out.getvalue()
    assert AuditEvent.objects.count() == 2
    assert ChainHead.objects.get().seq == 2
