from typing import Any

from django.db import migrations

# Frozen here (not imported) so this migration keeps doing what it did when the code moves on.
# The variable is the maintenance path of audit/maintenance.py.
TRIGGER = """
CREATE TRIGGER {name} BEFORE {event} ON audit_auditevent FOR EACH ROW
BEGIN
    IF COALESCE(@fieldsync_audit_maintenance, 0) <> 1 THEN
        SIGNAL SQLSTATE '45000'
            SET MESSAGE_TEXT = 'audit_auditevent is append-only: {event} refused (docs/audit.md)';
    END IF;
END
"""
TRIGGERS = {"audit_event_no_update": "UPDATE", "audit_event_no_delete": "DELETE"}


def create_triggers(apps: Any, schema_editor: Any) -> None:
    # Only MariaDB/MySQL: SQLite (the embedded default) relies on the model's guards alone.
    if schema_editor.connection.vendor != "mysql":
        return
    for name, event in TRIGGERS.items():
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")
        schema_editor.execute(TRIGGER.format(name=name, event=event))


def drop_triggers(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "mysql":
        return
    for name in TRIGGERS:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_indexes_for_the_admin")]
    # Not atomic: MariaDB cannot roll DDL back, and Django refuses DDL inside a transaction there.
    operations = [migrations.RunPython(create_triggers, drop_triggers, atomic=False)]
