"""The OpenAPI 3 schema at /api/schema/ describes the device API with its real shapes."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def schema(db: None) -> dict[str, Any]:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return dict(response.json())


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        node = schema["components"]["schemas"][name]
    return node


def response_schema(schema: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    content = schema["paths"][path][method]["responses"][status]["content"]
    return resolve(schema, content["application/json"]["schema"])


def request_schema(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    content = schema["paths"][path][method]["requestBody"]["content"]
    return resolve(schema, content["application/json"]["schema"])


def test_it_is_openapi_3_with_every_device_path(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.")
    assert {
        "/api/v1/devices/register": "post",
        "/api/v1/me": "get",
        "/api/v1/record-types": "get",
        "/api/v1/sync/push": "post",
        "/api/v1/sync/pull": "get",
        "/api/v1/sync/actions/{action_id}": "get",
    }.items() <= {path: method for path, ops in schema["paths"].items() for method in ops}.items()


def test_push_documents_its_request_and_action_result(schema: dict[str, Any]) -> None:
    body = request_schema(schema, "/api/v1/sync/push", "post")
    action = resolve(schema, body["properties"]["actions"]["items"])
    result = resolve(
        schema, response_schema(schema, "/api/v1/sync/push", "post", "200")["properties"]["results"]["items"]
    )

    assert set(body["required"]) == {"sent_at", "actions"}
    assert {"id", "op", "type", "record", "team", "base_version", "data", "captured_at"} <= set(action["properties"])
    assert action["properties"]["id"]["format"] == "uuid"
    assert action["properties"]["base_version"]["type"] == "integer"
    assert set(result["properties"]) == {"id", "status", "record", "version", "data", "review", "error", "replayed"}
    assert resolve(schema, result["properties"]["status"])["enum"] == [
        "applied",
        "merged",
        "pending_review",
        "rejected",
    ]
    assert result["properties"]["replayed"]["type"] == "boolean"
    assert result["properties"]["version"]["nullable"] is True


def test_pull_documents_its_page(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/api/v1/sync/pull"]["get"]
    page = response_schema(schema, "/api/v1/sync/pull", "get", "200")
    change = resolve(schema, page["properties"]["changes"]["items"])

    assert {p["name"] for p in operation["parameters"]} == {"cursor", "limit"}
    assert set(page["properties"]) == {"changes", "cursor", "has_more", "record_types_changed"}
    assert set(change["properties"]) == {"type", "record", "team", "version", "deleted", "data", "updated_at"}


def test_the_actions_endpoint_returns_an_action_result(schema: dict[str, Any]) -> None:
    result = response_schema(schema, "/api/v1/sync/actions/{action_id}", "get", "200")

    assert {"id", "status", "error", "replayed"} <= set(result["properties"])


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/api/v1/sync/push", "post", {"400", "401", "413"}),
        ("/api/v1/sync/pull", "get", {"400", "401"}),
        ("/api/v1/sync/actions/{action_id}", "get", {"404"}),
        ("/api/v1/devices/register", "post", {"400", "401", "403"}),
    ],
)
def test_errors_have_the_one_error_shape(schema: dict[str, Any], path: str, method: str, statuses: set[str]) -> None:
    for status in statuses:
        error = response_schema(schema, path, method, status)
        detail = resolve(schema, error["properties"]["error"])
        assert error["required"] == ["error"]
        assert set(detail["properties"]) == {"code", "message", "fields"}
        assert detail["properties"]["fields"]["additionalProperties"]["type"] == "array"


def test_device_calls_are_documented_as_bearer_token_calls(schema: dict[str, Any]) -> None:
    [scheme] = [s for s in schema["components"]["securitySchemes"].values() if s.get("scheme") == "bearer"]

    assert scheme["type"] == "http"
    assert schema["paths"]["/api/v1/sync/push"]["post"]["security"]
    assert (
        "security" not in schema["paths"]["/api/v1/devices/register"]["post"]
        or {} in (schema["paths"]["/api/v1/devices/register"]["post"]["security"])
    )


def test_the_swagger_ui_is_served(db: None) -> None:
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
