"""The device API: thin views that validate input, call one service and shape the output."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import (
    ErrorDetailSerializer,
    ErrorSerializer,
    RecordDataField,
    StrictCharField,
    StrictIntegerField,
    StrictUUIDField,
    request_id,
    validated,
)
from config.errors import ApiError
from config.throttling import LoginThrottle
from records.api import RecordTypeListView
from records.models import Team
from records.roles import DEVICE_ROLES
from sync.models import Device
from sync.services import (
    Action,
    InvalidCursor,
    action_result,
    note_record_types_fetched,
    pull,
    push,
    record_types_changed,
    register_device,
)

ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 404, 413)}
# A version above this is no version any record has had (and past 2**63 not one the database stores).
MAX_VERSION = 2**31 - 1

# --- input schemas ----------------------------------------------------------------------------


class RegisterIn(serializers.Serializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=1024, trim_whitespace=False)
    name = StrictCharField(max_length=200)
    platform = StrictCharField(max_length=64, required=False, allow_blank=True, default="")


class ActionIn(serializers.Serializer):
    id = StrictUUIDField(format="hex_verbose")
    op = serializers.ChoiceField(choices=["create", "update", "delete"])
    type = StrictCharField(max_length=64)
    record = StrictUUIDField(format="hex_verbose")
    team = StrictCharField(max_length=64, required=False, allow_null=True, default=None)
    base_version = StrictIntegerField(min_value=1, max_value=MAX_VERSION, required=False, allow_null=True, default=None)
    data = RecordDataField(required=False, default=dict)  # type: ignore[assignment]
    captured_at = serializers.DateTimeField()
    # The version of the type's schema the action was captured with (docs/schema-versions.md).
    schema_version = StrictIntegerField(
        min_value=1, max_value=MAX_VERSION, required=False, allow_null=True, default=None
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["op"] in ("update", "delete") and attrs["base_version"] is None:
            raise serializers.ValidationError({"base_version": ["Required for update and delete."]})
        if attrs["op"] == "create" and not attrs["data"]:
            raise serializers.ValidationError({"data": ["A create carries every field of the record."]})
        return attrs


class PushIn(serializers.Serializer):
    sent_at = serializers.DateTimeField()
    actions = ActionIn(many=True, allow_empty=True)


# --- output schemas (documentation of the wire contract) --------------------------------------


class ResultOut(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["applied", "merged", "pending_review", "rejected"])
    record = serializers.UUIDField()
    version = serializers.IntegerField(allow_null=True)
    data = serializers.DictField(allow_null=True)  # type: ignore[assignment]
    review = serializers.UUIDField(allow_null=True)
    error = ErrorDetailSerializer(allow_null=True)
    replayed = serializers.BooleanField()


class PushOut(serializers.Serializer):
    results = ResultOut(many=True)


class ChangeOut(serializers.Serializer):
    type = serializers.CharField()
    record = serializers.UUIDField()
    team = serializers.CharField()
    version = serializers.IntegerField()
    deleted = serializers.BooleanField()
    data = serializers.DictField(allow_null=True)  # type: ignore[assignment]
    updated_at = serializers.DateTimeField()


class PullOut(serializers.Serializer):
    changes = ChangeOut(many=True)
    cursor = serializers.CharField()
    has_more = serializers.BooleanField()
    record_types_changed = serializers.BooleanField(
        help_text="A record type changed since this device last fetched GET /api/v1/record-types: fetch them again."
    )


# ASCII digits only, and few of them: str.isdigit() accepts "²" (int() then fails) and int()
# refuses strings of more than 4300 digits; either was a 500.
_DIGITS = re.compile(r"[0-9]{1,18}")


def _device(request: Request) -> Device:
    assert isinstance(request.auth, Device)
    return request.auth


# --- views ------------------------------------------------------------------------------------


class RegisterView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=RegisterIn,
        responses={
            201: inline_serializer(
                "Registered", {"device_id": serializers.UUIDField(), "token": serializers.CharField()}
            ),
            **ERRORS,
        },
        summary="Register a device; the token is shown once.",
    )
    def post(self, request: Request) -> Response:
        body = validated(RegisterIn, request.data)
        throttle = LoginThrottle(request, body["username"])
        wait = throttle.blocked_for()
        if wait is not None:
            raise ApiError(
                "throttled",
                f"Too many failed attempts; retry in {wait} seconds.",
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        user = get_user_model().objects.filter(username=body["username"]).first()
        if user is None:
            # Hash anyway, so the response time does not tell which usernames exist.
            get_user_model()().set_password(body["password"])
        if user is None or not user.check_password(body["password"]):
            throttle.failed()
            raise ApiError("invalid_credentials", "Wrong username or password.", status_code=401)
        if not user.is_active:
            raise ApiError("user_inactive", "This user is inactive.", status_code=403)
        if not user.groups.filter(name__in=DEVICE_ROLES).exists():
            raise ApiError(
                "role_not_allowed", "Only field workers and compliance officers register devices.", status_code=403
            )
        device, token = register_device(
            user=user, name=body["name"], platform=body["platform"], request_id=request_id(request)
        )
        return Response({"device_id": str(device.id), "token": token}, status=status.HTTP_201_CREATED)


class MeView(APIView):
    @extend_schema(
        responses={
            200: inline_serializer(
                "Me",
                {
                    "user": inline_serializer(
                        "MeUser",
                        {
                            "id": serializers.IntegerField(),
                            "username": serializers.CharField(),
                            "roles": serializers.ListField(child=serializers.CharField()),
                        },
                    ),
                    "device": inline_serializer(
                        "MeDevice",
                        {
                            "id": serializers.UUIDField(),
                            "name": serializers.CharField(),
                            "platform": serializers.CharField(),
                        },
                    ),
                    "teams": serializers.ListField(
                        child=inline_serializer(
                            "MeTeam", {"slug": serializers.CharField(), "name": serializers.CharField()}
                        )
                    ),
                },
            ),
            401: ErrorSerializer,
        },
    )
    def get(self, request: Request) -> Response:
        device = _device(request)
        user = device.user
        return Response(
            {
                "user": {
                    "id": user.pk,
                    "username": user.get_username(),
                    "roles": sorted(user.groups.values_list("name", flat=True)),
                },
                "device": {"id": str(device.id), "name": device.name, "platform": device.platform},
                "teams": [{"slug": t.slug, "name": t.name} for t in Team.objects.filter(members=user)],
            }
        )


class PushView(APIView):
    # A push's new actions apply in one transaction with staged writes (sync.services.push).
    staged = True

    @extend_schema(
        request=PushIn,
        responses={200: PushOut, **ERRORS, 411: ErrorSerializer, 415: ErrorSerializer},
        summary="Apply a batch of actions; one result per action, in order.",
    )
    def post(self, request: Request) -> Response:
        limit = settings.SYNC_MAX_PUSH_BYTES
        length = request.META.get("CONTENT_LENGTH") or ""
        if not length and "Transfer-Encoding" not in request.headers:
            raise ApiError("invalid_request", "The request body must be a JSON object.")
        if not _DIGITS.fullmatch(length):
            raise ApiError("length_required", "Send a Content-Length header.", status_code=411)
        if int(length) > limit:
            raise ApiError(
                "payload_too_large", f"A push may be at most {limit} bytes; send smaller batches.", status_code=413
            )
        data = request.data
        if isinstance(data, dict) and isinstance(data.get("actions"), list):
            max_actions = settings.SYNC_MAX_ACTIONS_PER_PUSH
            if len(data["actions"]) > max_actions:
                raise ApiError("too_many_actions", f"A push may carry at most {max_actions} actions.", status_code=413)
        body = validated(PushIn, data)
        actions = [
            Action(
                id=a["id"],
                op=a["op"],
                type=a["type"],
                record=a["record"],
                team=a["team"],
                base_version=a["base_version"],
                data=a["data"],
                captured_at=a["captured_at"],
                schema_version=a["schema_version"],
                raw=raw,
            )
            for a, raw in zip(body["actions"], data["actions"], strict=True)
        ]
        results = push(
            device=_device(request),
            sent_at=body["sent_at"],
            actions=actions,
            request_id=request_id(request),
            staged=self.staged,
        )
        return Response({"results": results})


class PullView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR, description="Opaque; omit to start from the beginning."),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 500},
                description="1..1000, default 500.",
            ),
        ],
        responses={200: PullOut, **ERRORS},
        summary="Changes of your teams' records after the cursor.",
    )
    def get(self, request: Request) -> Response:
        raw_limit = request.query_params.get("limit", "500")
        if not _DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= settings.SYNC_MAX_PULL_LIMIT:
            raise ApiError(
                "invalid_limit",
                f"limit must be an integer from 1 to {settings.SYNC_MAX_PULL_LIMIT}.",
                fields={"limit": ["Out of range."]},
            )
        cursor = request.query_params.get("cursor") or None
        try:
            page = pull(user=_device(request).user, cursor=cursor, limit=int(raw_limit))
        except InvalidCursor:
            raise ApiError(
                "invalid_cursor", "The cursor is not one this server handed out.", fields={"cursor": ["Invalid."]}
            ) from None
        return Response({**page, "record_types_changed": record_types_changed(device=_device(request))})


class RecordTypesView(RecordTypeListView):
    """GET /api/v1/record-types, remembering the versions the device was served: a pull tells a
    device whose versions are behind to fetch them again (docs/schema-versions.md)."""

    def served(self, request: Request, record_types: list[Any]) -> None:
        note_record_types_fetched(device=_device(request), record_types=record_types)


class ActionView(APIView):
    @extend_schema(responses={200: ResultOut, **ERRORS}, summary="The current result of one of this device's actions.")
    def get(self, request: Request, action_id: uuid.UUID) -> Response:
        result = action_result(device=_device(request), action_id=action_id)
        if result is None:
            raise ApiError("action_not_found", "This device has no action with that id.", status_code=404)
        return Response(result)
