"""The audit changelist's date hierarchy without the queries that do not scale.

Django's `date_hierarchy` tag runs MIN/MAX over the *filtered* rows and then a
`SELECT DISTINCT` of years, months or days over them: at a million events, each a scan. Here the
links come from the calendar between the journal's first and last event (MIN and MAX of the
indexed `recorded_at` over the whole table, which the index answers at once); a link may lead to an
empty page, which costs one indexed query to find out."""

from __future__ import annotations

import calendar
import datetime
from typing import Any

from django import template
from django.db.models import Max, Min
from django.utils import formats, timezone
from django.utils.text import capfirst

register = template.Library()


@register.inclusion_tag("admin/date_hierarchy.html")
def audit_date_hierarchy(cl: Any) -> dict[str, Any]:
    field = cl.date_hierarchy
    year_field, month_field, day_field = f"{field}__year", f"{field}__month", f"{field}__day"
    year, month, day = (cl.params.get(name) for name in (year_field, month_field, day_field))

    def link(filters: dict[str, Any]) -> str:
        return str(cl.get_query_string(filters, [f"{field}__"]))

    span = cl.model._default_manager.aggregate(first=Min(field), last=Max(field))
    if span["first"] is None:
        return {"show": False}
    first, last = (timezone.localtime(value).date() for value in (span["first"], span["last"]))
    try:
        year, month, day = (int(value) if value else None for value in (year, month, day))
    except ValueError:
        return {"show": False}

    if year and month and day:
        chosen = datetime.date(year, month, day)
        return {
            "show": True,
            "back": {
                "link": link({year_field: year, month_field: month}),
                "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
        }
    if year and month:
        days = [
            datetime.date(year, month, d)
            for d in range(1, calendar.monthrange(year, month)[1] + 1)
            if first <= datetime.date(year, month, d) <= last
        ]
        return {
            "show": True,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: d.day}),
                    "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT")),
                }
                for d in days
            ],
        }
    if year:
        months = [
            datetime.date(year, m, 1)
            for m in range(1, 13)
            if (first.year, first.month) <= (year, m) <= (last.year, last.month)
        ]
        return {
            "show": True,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {
                    "link": link({year_field: year, month_field: m.month}),
                    "title": capfirst(formats.date_format(m, "YEAR_MONTH_FORMAT")),
                }
                for m in months
            ],
        }
    return {
        "show": True,
        "back": None,
        "choices": [{"link": link({year_field: y}), "title": str(y)} for y in range(first.year, last.year + 1)],
    }


@register.simple_tag
def audit_page_link(cl: Any, page: int) -> str:
    """The changelist's query string for another page (the filters and search kept)."""
    return str(cl.get_query_string({"p": page}) if page > 1 else cl.get_query_string())
