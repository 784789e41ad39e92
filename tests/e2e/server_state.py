"""Prints the server's state as JSON (run by the e2e suite on its own database):
records, versions, the ledger, the journal's events that carry an action or concern a file,
attachments and their links, reviews, devices and each user's teams."""

from __future__ import annotations

import json
import sys

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db.models import Q  # noqa: E402

from approvals.models import Review  # noqa: E402
from attachments.models import Attachment, AttachmentLink  # noqa: E402
from audit.models import AuditEvent  # noqa: E402
from records.models import Record, RecordType, RecordVersion  # noqa: E402
from sync.models import Device, LedgerEntry  # noqa: E402


def main() -> None:
    state = {
        "records": [
            {
                "id": str(r.id),
                "type": r.type.key,
                "team": r.team.slug,
                "version": r.version,
                "deleted": r.deleted,
                "data": None if r.deleted else r.data,
            }
            for r in Record.objects.select_related("type", "team")
        ],
        "versions": [
            {
                "record": str(v.record_id),
                "version": v.version,
                "source": v.source,
                "device": str(v.device_id) if v.device_id else None,
                "action": str(v.action_id) if v.action_id else None,
                "op": v.op,
            }
            for v in RecordVersion.objects.all()
        ],
        "ledger": [
            {
                "device": str(e.device_id),
                "action": str(e.action_id),
                "status": e.status,
                "error": e.error_code,
                "replays": e.replays,
                "record": str(e.record_id),
                "review": e.result.get("review"),
            }
            for e in LedgerEntry.objects.all()
        ],
        "events": [
            {
                "seq": e.seq,
                "verb": e.verb,
                "source": e.source,
                "action": str(e.action_id) if e.action_id else None,
                "device": str(e.device_id) if e.device_id else None,
                "object_type": e.object_type,
                "object_id": e.object_id,
            }
            for e in AuditEvent.objects.filter(Q(action_id__isnull=False) | Q(object_type="attachment")).order_by("seq")
        ],
        "attachments": [
            {
                "id": str(a.id),
                "state": a.state,
                "reason": a.reject_reason,
                "size": a.declared_size,
                "sha256": a.computed_sha256,
                "attempts": a.verify_attempts,
                "owner": a.owner.username,
            }
            for a in Attachment.objects.select_related("owner")
        ],
        "links": [
            {"attachment": str(link.attachment_id), "record": str(link.record_id)}
            for link in AttachmentLink.objects.all()
        ],
        "reviews": [
            {"id": str(r.id), "action": str(r.action_id), "state": r.state, "device": str(r.device_id)}
            for r in Review.objects.all()
        ],
        "devices": {str(d.id): d.user.username for d in Device.objects.select_related("user")},
        "teams": {u.username: sorted(u.teams.values_list("slug", flat=True)) for u in User.objects.all()},
        "schemas": {t.key: t.schema for t in RecordType.objects.all()},
    }
    json.dump(state, sys.stdout)


if __name__ == "__main__":
    main()
