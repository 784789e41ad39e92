"""What the bench compares push against, served by the bench's gunicorn only (bench/urls.py).

- `NaiveRecordViewSet`: the endpoint a first version would have: a plain DRF ModelViewSet that
  creates one record per request. No idempotency ledger, no version history, no audit journal, no
  schema validation, no conflict handling.
- `PerActionPushView`: the real push (same view, same services) without the staged batch: each
  action in its own transaction, with its own ledger insert, journal append and commit. What
  push did before records/batch.py; kept to measure the batch against.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers, viewsets

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


class PerActionPushView(PushView):
    staged = False
