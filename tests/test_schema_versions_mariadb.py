"""Schema versions under concurrency, with real threads on MariaDB: two officers saving a schema
change of one record type at the same moment get one new version and one refusal (the type row
lock, taken when the form is checked and held until the save commits, decides)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from records.models import RecordType
from tests.concurrency import run_together

pytestmark = [pytest.mark.mariadb, pytest.mark.django_db(transaction=True)]

SHORT = {"type": "string", "minLength": 1, "maxLength": 200}


def officer() -> Client:
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    return client


def form_adding(field: str) -> dict[str, Any]:
    stock = RecordType.objects.get(key="stock_count")
    schema = json.loads(json.dumps(stock.schema))
    schema["properties"][field] = SHORT
    return {
        "key": stock.key,
        "name": stock.name,
        "schema": json.dumps(schema),
        "upgrade": "",
        "based_on": str(stock.schema_version),
        "conflict_policy": stock.conflict_policy,
        "field_policies": "{}",
    }


@pytest.mark.parametrize("round_", range(3))
def test_two_officers_saving_a_schema_at_once_get_one_version_and_one_refusal(demo: None, round_: int) -> None:
    stock = RecordType.objects.get(key="stock_count")
    url = f"/admin/records/recordtype/{stock.pk}/change/"
    first, second = officer(), officer()
    forms = {"bin": form_adding("bin"), "shelf": form_adding("shelf")}

    responses = run_together(lambda: first.post(url, forms["bin"]), lambda: second.post(url, forms["shelf"]))

    assert sorted(r.status_code for r in responses) == [200, 302], responses
    [refused] = [r for r in responses if r.status_code == 200]
    assert "changed by someone else" in " ".join(refused.context["adminform"].form.errors["schema"])
    stock.refresh_from_db()
    assert stock.schema_version == 2
    assert sorted(stock.versions.values_list("version", flat=True)) == [1, 2]
    [winner] = [field for field in forms if field in stock.schema["properties"]]
    assert stock.versions.get(version=2).schema == stock.schema
    assert winner in ("bin", "shelf")
