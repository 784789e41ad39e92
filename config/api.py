"""Small pieces shared by every app's API edge: strict input fields, the error schema, request ids."""

from __future__ import annotations

import codecs
import json
import math
import re
import uuid
from typing import Any

from django.conf import settings
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
        # fullmatch: `$` also matches before a trailing newline, which uuid.UUID() then refused (a 500).
        if not isinstance(data, str) or not _UUID.fullmatch(data):
            self.fail("invalid", value=data)
        return uuid.UUID(data)


# NUL has no place in text and breaks tools downstream; the bidirectional embedding, override
# and isolate controls can make a field name display as another ("Trojan Source").
_NUL = "\x00"
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
# Report this many problems at most: a body full of them needs no list of every one.
_MAX_PROBLEMS = 20


class RecordDataField(serializers.DictField):
    """A record's data: a JSON object whose strings are at most SYNC_MAX_STRING_CHARS long and
    contain no NUL, and whose keys (at any depth) are at most SYNC_MAX_KEY_CHARS long, with no
    NUL and no bidirectional control characters. Problems are reported by path (`items.0.note`)."""

    def to_internal_value(self, data: Any) -> dict[Any, Any]:
        value = super().to_internal_value(data)
        problems: dict[str, list[str]] = {}
        max_string, max_key = settings.SYNC_MAX_STRING_CHARS, settings.SYNC_MAX_KEY_CHARS
        # Iterative: the parser allows 64 levels, a recursive walk needs no stack of its own.
        stack: list[tuple[str, Any]] = [("", data)]
        while stack and len(problems) < _MAX_PROBLEMS:
            path, item = stack.pop()
            if isinstance(item, dict):
                for key, child in item.items():
                    child_path = f"{path}.{key}" if path else str(key)
                    if len(key) > max_key:
                        problems[child_path[:200]] = [f"A key may be at most {max_key} characters."]
                    elif _NUL in key or _BIDI_CONTROLS.search(key):
                        problems[_visible(child_path)] = [
                            "A key may not contain NUL or bidirectional control characters."
                        ]
                    else:
                        stack.append((child_path, child))
            elif isinstance(item, list):
                stack.extend((f"{path}.{index}" if path else str(index), child) for index, child in enumerate(item))
            elif isinstance(item, str):
                if len(item) > max_string:
                    problems[path] = [f"A string may be at most {max_string} characters."]
                elif _NUL in item:
                    problems[path] = ["A string may not contain NUL characters."]
        if problems:
            raise serializers.ValidationError(problems)
        return dict(value)


def _visible(path: str) -> str:
    """The path with NUL and bidi controls spelled out (`\\u202e`), so the error shows them."""
    return re.sub("[\\x00\u202a-\u202e\u2066-\u2069]", lambda m: f"\\u{ord(m.group()):04x}", path)


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
                parse_float=_finite_float,
                object_pairs_hook=_reject_duplicate_keys,
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"Malformed JSON: {exc}") from None
        except RecursionError:
            raise ParseError(f"Malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels.") from None
        problem = _structural_problem(value, MAX_JSON_DEPTH)
        if problem:
            raise ParseError(f"Malformed JSON: {problem}")
        return value


# A \ud800-\udfff escape that is not half of a pair decodes to a lone surrogate: not a Unicode
# character, and not encodable as UTF-8 (the response, the journal's hash, MariaDB all fail on it).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _structural_problem(value: Any, limit: int) -> str:
    # Iterative on purpose: a recursive walk would hit the very limit it guards.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return "a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not Unicode."
            continue
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return f"nested deeper than {limit} levels."
        stack.extend((child, depth + 1) for child in children)
    return ""


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON syntax but no double: Python reads it as inf, which no JSON encoder
    # (nor MariaDB's JSON check) accepts back.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is out of range for a JSON number")
    return value


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not a JSON number")


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("an object has the same key twice")
    return result
