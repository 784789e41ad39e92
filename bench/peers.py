"""What the bench compares push against, served by the bench's gunicorn only (bench/urls.py).

- `NaiveRecordViewSet`: the endpoint a first version would have: a plain DRF ModelViewSet that
  creates one record per request. No idempotency ledger, no version history, no audit journal, no
  schema validation, no conflict handling.
- `OneTransactionPushView`: the real push (same view, same services), wrapped in one
  transaction for the whole batch, so each action's own `transaction.atomic()` becomes a savepoint
  inside it: the other choice DESIGN invariant 3 allows. Only the commit structure differs.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from records.models import Record
from sync.api import PushView


class NaiveRecordSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField()

    class Meta:
        model = Record
        fields = ["id", "type", "team", "data", "captured_at", "version"]


class NaiveRecordViewSet(viewsets.ModelViewSet):
    queryset = Record.objects.all()
    serializer_class = NaiveRecordSerializer

    def perform_create(self, serializer: Any) -> None:
        serializer.save(change_seq=0)


class OneTransactionPushView(PushView):
    def post(self, request: Request) -> Response:
        with transaction.atomic():
            return super().post(request)
