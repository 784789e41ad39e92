"""The demo record types: the five field use cases, as JSON Schemas (draft 2020-12)."""

from __future__ import annotations

from typing import Any

ATTACHMENT: dict[str, Any] = {
    "type": "object",
    "format": "attachment",
    "properties": {"id": {"type": "string", "format": "uuid"}},
    "required": ["id"],
}
TEXT: dict[str, Any] = {"type": "string", "maxLength": 2000}
SHORT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 200}
WHEN: dict[str, Any] = {"type": "string", "format": "date-time"}
GEO: dict[str, Any] = {
    "type": "object",
    "properties": {
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lng": {"type": "number", "minimum": -180, "maximum": 180},
    },
    "required": ["lat", "lng"],
    "additionalProperties": False,
}


def _schema(title: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


RECORD_TYPES: list[dict[str, Any]] = [
    {
        "key": "clocking",
        "name": "Clock-in / clock-out",
        "conflict_policy": "lww",
        "field_policies": {},
        "schema": _schema(
            "Clocking",
            {
                "worker": SHORT,
                "event": {"type": "string", "enum": ["in", "out"]},
                "at": WHEN,
                "site": SHORT,
                "location": GEO,
                "note": TEXT,
            },
            ["worker", "event", "at", "site"],
        ),
    },
    {
        "key": "inspection",
        "name": "Vehicle / safety inspection",
        "conflict_policy": "merge",
        # Two inspectors disagreeing on the verdict is a compliance question, not a race.
        "field_policies": {"passed": "review"},
        "schema": _schema(
            "Inspection",
            {
                "vehicle": SHORT,
                "odometer_km": {"type": "integer", "minimum": 0},
                "inspector": SHORT,
                "checklist": {
                    "type": "array",
                    "maxItems": 200,
                    "items": {
                        "type": "object",
                        "properties": {"item": SHORT, "ok": {"type": "boolean"}, "note": TEXT},
                        "required": ["item", "ok"],
                        "additionalProperties": False,
                    },
                },
                "passed": {"type": "boolean"},
                "photos": {"type": "array", "maxItems": 50, "items": ATTACHMENT},
                "signature": ATTACHMENT,
            },
            ["vehicle", "inspector", "checklist", "passed"],
        ),
    },
    {
        "key": "job_card",
        "name": "Job card",
        "conflict_policy": "merge",
        "field_policies": {},
        "schema": _schema(
            "Job card",
            {
                "title": SHORT,
                "site": SHORT,
                "status": {"type": "string", "enum": ["open", "in_progress", "done"]},
                "assigned_to": SHORT,
                "description": TEXT,
                "hours": {"type": "number", "minimum": 0, "maximum": 1000},
                "parts": {
                    "type": "array",
                    "maxItems": 200,
                    "items": {
                        "type": "object",
                        "properties": {"sku": SHORT, "qty": {"type": "integer", "minimum": 1}},
                        "required": ["sku", "qty"],
                        "additionalProperties": False,
                    },
                },
            },
            ["title", "site", "status"],
        ),
    },
    {
        "key": "incident",
        "name": "Incident report",
        "conflict_policy": "lww",
        "field_policies": {},
        "schema": _schema(
            "Incident",
            {
                "title": SHORT,
                "severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
                "occurred_at": WHEN,
                "location": GEO,
                "description": TEXT,
                "injuries": {"type": "boolean"},
                "photos": {"type": "array", "maxItems": 50, "items": ATTACHMENT},
                "documents": {"type": "array", "maxItems": 20, "items": ATTACHMENT},
            },
            ["title", "severity", "occurred_at", "description"],
        ),
    },
    {
        "key": "stock_count",
        "name": "Stock count",
        "conflict_policy": "lww",
        "field_policies": {},
        "schema": _schema(
            "Stock count",
            {
                "location": SHORT,
                "sku": SHORT,
                "counted": {"type": "integer", "minimum": 0},
                "unit": {"type": "string", "enum": ["each", "box", "kg", "l", "m"]},
                "counted_at": WHEN,
                "note": TEXT,
            },
            ["location", "sku", "counted", "unit"],
        ),
    },
]
