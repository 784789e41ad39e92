"""Small pieces shared by every app's API edge: strict input fields, the error schema, request ids."""

from __future__ import annotations

import codecs
import json
import re
import uuid
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request

from config.errors import ApiError


class StrictIntegerField(serializers.IntegerField):
    """An integer that arrived as a JSON number: no "5", no 5.0, no true."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictCharField(serializers.CharField):
    """A string that arrived as a JSON string (DRF would turn 5 into "5"), without NUL bytes."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class StrictUUIDField(serializers.UUIDField):
    """A UUID that arrived as a string in its canonical 8-4-4-4-12 form. DRF alone would turn
    the number 5 into 00000000-...-000000000005 and accept "{...}" and "urn:uuid:" spellings,
    so one id could travel under several spellings (and fingerprints)."""

    def to_internal_value(self, data: Any) -> uuid.UUID:
        if not isinstance(data, str) or not _UUID.match(data):
            self.fail("invalid", value=data)
        return uuid.UUID(data)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))  # type: ignore[assignment]


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id(request: Request) -> str:
    """The caller's X-Request-ID when it is sane, else a new one; it lands in the audit trail."""
    incoming = request.headers.get("X-Request-ID", "")
    return incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError("invalid_request", "The request body must be a JSON object.")
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# Deeper than any record schema needs; far enough below the interpreter's recursion limit that
# the JSON encoder (and jsonschema) never hit it further down the request.
MAX_JSON_DEPTH = 64


class StrictJSONParser(JSONParser):
    """JSON without NaN/Infinity (not JSON), without duplicate keys (ambiguous) and nested at
    most MAX_JSON_DEPTH levels (deeper nesting crashes the decoder with a RecursionError)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            value = json.load(
                codecs.getreader("utf-8")(stream),
                parse_constant=_reject_constant,
                object_pairs_hook=_reject_duplicate_keys,
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"Malformed JSON: {exc}") from None
        except RecursionError:
            raise ParseError(f"Malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels.") from None
        if _nested_deeper_than(value, MAX_JSON_DEPTH):
            raise ParseError(f"Malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels.")
        return value


def _nested_deeper_than(value: Any, limit: int) -> bool:
    # Iterative on purpose: a recursive walk would hit the very limit it guards.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not a JSON number")


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("an object has the same key twice")
    return result
