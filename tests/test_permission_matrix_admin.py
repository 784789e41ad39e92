"""The admin's permission matrix, extended: tests/test_audit_permissions.py covers every model
page (changelist, change, add, delete, change POST, bulk actions) for the manager, the officer,
a field worker and the superuser. This adds the callers it leaves out (nobody signed in, a field
worker of another team, a device token, which opens nothing in the admin), each model's history
page, and the admin's other pages: the dashboard, the app indexes, the record timeline, the
audit export, attachment thumbnails, the password change, the JavaScript catalogue."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.attachments_support import media, png, put
from tests.test_audit_permissions import PAGES, client_for, expected, objects

__all__ = ["media", "objects"]

OUTSIDERS = ["nobody", "carol", "device token"]
STAFF = ["mark", "olivia", "admin"]


@pytest.fixture
def outsider(device_for: Any) -> Any:
    def make(kind: str) -> Client:
        if kind == "nobody":
            return Client()
        if kind == "carol":
            return client_for("carol")
        return Client(HTTP_AUTHORIZATION=f"Bearer {device_for('alice').token}")

    return make


def model_urls(name: str, obj: Any) -> list[str]:
    page = PAGES[name]
    return [
        page.url,
        f"{page.url}add/",
        f"{page.url}{obj.pk}/change/",
        f"{page.url}{obj.pk}/delete/",
        f"{page.url}{obj.pk}/history/",
    ]


@pytest.fixture
def thumbnail(device_for: Any, media: Any, django_capture_on_commit_callbacks: Any) -> str:
    alice = device_for("alice")
    with django_capture_on_commit_callbacks(execute=True):
        response = put(alice, png())
    assert response.status_code == 201
    return f"/admin/attachments/attachment/{response.json()['id']}/thumbnail/"


@pytest.fixture
def other_pages(objects: dict[str, Any], thumbnail: str) -> dict[str, tuple[str, dict[str, int]]]:
    """url and the status for each staff role; every outsider is sent to the login page."""
    everyone = {"mark": 200, "olivia": 200, "admin": 200}
    return {
        "dashboard": ("/admin/", everyone),
        "records app": ("/admin/records/", everyone),
        "sync app": ("/admin/sync/", everyone),
        "users and groups app": ("/admin/auth/", {"mark": 404, "olivia": 404, "admin": 200}),
        "record timeline": (f"/admin/sync/ledgerentry/record/{objects['record'].pk}/timeline/", everyone),
        "audit export": ("/admin/audit/auditevent/export/", everyone),
        "attachment thumbnail": (thumbnail, everyone),
        "password change": ("/admin/password_change/", everyone),
        "javascript catalogue": ("/admin/jsi18n/", everyone),
    }


@pytest.mark.parametrize("kind", OUTSIDERS)
def test_outsiders_are_sent_to_the_login_page_from_every_admin_page(
    kind: str, outsider: Any, objects: dict[str, Any], other_pages: dict[str, Any]
) -> None:
    client = outsider(kind)
    urls = [url for name, obj in objects.items() for url in model_urls(name, obj)]
    urls += [url for url, _ in other_pages.values()]

    answers = {url: client.get(url) for url in urls}

    assert {url: r.status_code for url, r in answers.items()} == dict.fromkeys(urls, 302)
    assert all(r["Location"].startswith("/admin/login/") for r in answers.values())


@pytest.mark.parametrize("kind", OUTSIDERS)
def test_outsiders_change_nothing_with_a_post(kind: str, outsider: Any, objects: dict[str, Any]) -> None:
    client = outsider(kind)
    team = objects["team"]

    response = client.post(f"/admin/records/team/{team.pk}/change/", {"slug": "taken", "name": "taken"})
    client.post("/admin/records/team/", {"action": "delete_selected", "_selected_action": [team.pk], "post": "yes"})

    assert response.status_code == 302
    team.refresh_from_db()
    assert team.slug == "north"


@pytest.mark.parametrize("role", ["mark", "olivia", "alice", "admin"])
def test_each_history_page_follows_the_view_permission(role: str, objects: dict[str, Any]) -> None:
    client = client_for(role)

    got = {name: client.get(model_urls(name, obj)[4]).status_code for name, obj in objects.items()}

    assert got == {name: expected(role, PAGES[name], "view") for name in objects}


@pytest.mark.parametrize("role", STAFF)
def test_the_other_admin_pages_answer_each_staff_role_as_the_matrix_says(
    role: str, other_pages: dict[str, tuple[str, dict[str, int]]]
) -> None:
    client = client_for(role)

    got = {name: client.get(url).status_code for name, (url, _) in other_pages.items()}

    assert got == {name: statuses[role] for name, (_, statuses) in other_pages.items()}


def test_a_superuser_who_is_deactivated_loses_the_admin(objects: dict[str, Any]) -> None:
    client = client_for("admin")
    User.objects.filter(username="admin").update(is_active=False)

    assert client.get("/admin/").status_code == 302
