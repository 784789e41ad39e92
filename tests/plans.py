"""MariaDB query plans for the scale tests: what a query reads, proven by its plan and by what
executing it actually read, not by timing it."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection


def analyze(sql: str, params: Any = None) -> dict[str, Any]:
    """MariaDB's ANALYZE: the plan, plus what executing it actually read (r_rows)."""
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE FORMAT=JSON {sql}", params)
        return json.loads(cursor.fetchone()[0])


def tables(plan: Any) -> list[dict[str, Any]]:
    """Every table access in a plan, however nested."""
    found = []
    if isinstance(plan, dict):
        if "table_name" in plan:
            found.append(plan)
        for value in plan.values():
            found.extend(tables(value))
    elif isinstance(plan, list):
        for value in plan:
            found.extend(tables(value))
    return found
