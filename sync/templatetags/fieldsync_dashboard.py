"""The admin index dashboard: what needs a look today. Each figure is one indexed query.

In `sync` because it reads the ledger and the devices (and `sync` may import every other app)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from django import template
from django.conf import settings
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from attachments.models import Attachment, State
from sync.models import Device, LedgerEntry, Outcome

register = template.Library()

CHART_DAYS = 14
# Outcomes stacked bottom to top, with their colours (the same as the record timeline's).
CHART_OUTCOMES = [
    (Outcome.APPLIED, "#5cb85c"),
    (Outcome.MERGED, "#5bc0de"),
    (Outcome.PENDING_REVIEW, "#f0ad4e"),
    (Outcome.REJECTED, "#d9534f"),
]
BAR_WIDTH, BAR_GAP, CHART_HEIGHT = 26, 8, 120


@register.simple_tag
def rejected_attachments_count() -> int:
    return Attachment.objects.filter(state=State.REJECTED).count()


@register.simple_tag
def silent_devices(limit: int = 10) -> dict[str, Any]:
    """Devices (not revoked) that have not synced for DASHBOARD_SILENT_DEVICE_DAYS, or never did
    since they registered that long ago. Longest silent first."""
    days = settings.DASHBOARD_SILENT_DEVICE_DAYS
    cutoff = timezone.now() - datetime.timedelta(days=days)
    silent = Device.objects.filter(revoked_at__isnull=True).filter(
        Q(last_seen__lt=cutoff) | Q(last_seen__isnull=True, created__lt=cutoff)
    )
    listed = list(silent.select_related("user").order_by("last_seen", "created")[: limit + 1])
    return {"days": days, "devices": listed[:limit], "more": len(listed) > limit}


@dataclass
class Bar:
    day: datetime.date
    x: int
    total: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)


@register.simple_tag
def actions_by_outcome(days: int = CHART_DAYS) -> dict[str, Any]:
    """Device actions per day of the last `days` days (today included), by outcome, from the
    ledger: one GROUP BY over the (received_at, status) index."""
    today = timezone.localdate()
    first = today - datetime.timedelta(days=days - 1)
    start = timezone.make_aware(datetime.datetime.combine(first, datetime.time.min))
    counts: dict[tuple[datetime.date, str], int] = {
        (row["day"], row["status"]): row["n"]
        for row in LedgerEntry.objects.filter(received_at__gte=start)
        .annotate(day=TruncDate("received_at"))
        .values("day", "status")
        .annotate(n=Count("id"))
        .order_by()
    }
    bars = [Bar(day=first + datetime.timedelta(days=i), x=i * (BAR_WIDTH + BAR_GAP)) for i in range(days)]
    for bar in bars:
        bar.total = sum(counts.get((bar.day, outcome), 0) for outcome, _ in CHART_OUTCOMES)
    peak = max((bar.total for bar in bars), default=0) or 1
    for bar in bars:
        y = CHART_HEIGHT
        for outcome, colour in CHART_OUTCOMES:
            n = counts.get((bar.day, outcome), 0)
            height = round(n * CHART_HEIGHT / peak)
            if n and not height:
                height = 1  # a day with one rejection among thousands still shows it
            y -= height
            bar.segments.append(
                {"outcome": outcome, "label": outcome.label, "n": n, "y": y, "height": height, "colour": colour}
            )
    return {
        "bars": bars,
        "legend": [(outcome.label, colour) for outcome, colour in CHART_OUTCOMES],
        "totals": {outcome.label: sum(counts.get((b.day, outcome), 0) for b in bars) for outcome, _ in CHART_OUTCOMES},
        "width": days * (BAR_WIDTH + BAR_GAP),
        "height": CHART_HEIGHT,
        "bar_width": BAR_WIDTH,
        "peak": peak if any(bar.total for bar in bars) else 0,
    }
