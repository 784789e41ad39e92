from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ErrorSerializer
from records.models import RecordType


class RecordTypeOut(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    schema = serializers.DictField()
    conflict_policy = serializers.ChoiceField(choices=["lww", "merge", "review", "review_all"])
    field_policies = serializers.DictField(child=serializers.CharField())


class RecordTypeListView(APIView):
    @extend_schema(
        responses={200: RecordTypeOut(many=True), 401: ErrorSerializer},
        summary="Record types with their JSON Schema and conflict policies.",
    )
    def get(self, request: Request) -> Response:
        record_types = list(RecordType.objects.order_by("key"))
        self.served(request, record_types)
        return Response(
            [
                {
                    "key": rt.key,
                    "name": rt.name,
                    "version": rt.schema_version,
                    "schema": rt.schema,
                    "conflict_policy": rt.conflict_policy,
                    "field_policies": rt.field_policies,
                }
                for rt in record_types
            ]
        )

    def served(self, request: Request, record_types: list[RecordType]) -> None:
        """Told which types (at their current versions) a request was served; sync's subclass
        remembers them per device (records may not import sync)."""
