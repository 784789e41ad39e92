"""Rate limits: requests per device (DRF throttling, counted in the cache: Redis when REDIS_URL is
set, as in the MariaDB half of `make test`), and failed passwords per username and address, for
device registration and for the admin's login page. Size limits have their tests next to what
they guard (push: tests/test_sync_push.py; uploads: tests/test_attachments_*.py; record data:
tests/test_security_bad_input.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from records.models import Record
from sync.models import Device
from tests.conftest import DeviceClient
from tests.test_security_bad_input import push_body

PASSWORD = "fieldsync-demo"


@pytest.fixture(autouse=True)
def _mid_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # Windows are fixed: a test that crossed a window's end would start counting afresh. The clock
    # stands 30 s into a window of every length used here.
    monkeypatch.setattr("config.throttling._clock", lambda: 1_800_000_030.0)


def register(password: str, *, username: str = "alice", address: str = "203.0.113.7", **extra: Any) -> Any:
    body = {"username": username, "password": password, "name": "phone"}
    return APIClient().post("/api/v1/devices/register", body, format="json", REMOTE_ADDR=address, **extra)


def admin_login(client: Client, password: str, *, username: str = "olivia") -> Any:
    return client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})


# --- per device -------------------------------------------------------------------------------


def test_a_device_over_its_rate_gets_429_throttled_with_retry_after(device_for: Any, settings: Any) -> None:
    settings.API_DEVICE_RATE = "3/min"
    alice = device_for("alice")

    answers = [alice.get("/api/v1/me").status_code for _ in range(3)]
    refused = alice.get("/api/v1/me")

    assert answers == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert refused["Retry-After"] == "30"


def test_a_throttled_push_writes_nothing_and_other_devices_carry_on(device_for: Any, settings: Any) -> None:
    settings.API_DEVICE_RATE = "1/min"
    alice, bob = device_for("alice"), device_for("bob")
    assert alice.get("/api/v1/me").status_code == 200

    refused = alice.generic("POST", "/api/v1/sync/push", push_body(), content_type="application/json")

    assert refused.status_code == 429
    assert not Record.objects.exists()
    assert bob.get("/api/v1/me").status_code == 200


def test_the_rate_is_counted_per_device_not_per_user(device_for: Any, settings: Any) -> None:
    settings.API_DEVICE_RATE = "2/min"
    phone, tablet = device_for("alice"), device_for("alice")

    assert [phone.get("/api/v1/me").status_code for _ in range(3)] == [200, 200, 429]
    assert tablet.get("/api/v1/me").status_code == 200


def test_after_retry_after_seconds_the_device_may_call_again(
    device_for: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.API_DEVICE_RATE = "1/min"
    alice = device_for("alice")
    assert alice.get("/api/v1/me").status_code == 200
    wait = int(alice.get("/api/v1/me")["Retry-After"])

    monkeypatch.setattr("config.throttling._clock", lambda: 1_800_000_030.0 + wait)

    assert alice.get("/api/v1/me").status_code == 200


def test_an_empty_rate_turns_the_limit_off(device_for: Any, settings: Any) -> None:
    settings.API_DEVICE_RATE = ""
    alice: DeviceClient = device_for("alice")

    assert {alice.get("/api/v1/me").status_code for _ in range(20)} == {200}


# --- failed passwords: registration -----------------------------------------------------------


def test_after_five_wrong_passwords_registration_refuses_even_the_right_one(demo: None) -> None:
    wrong = [register("guess").status_code for _ in range(5)]
    refused = register(PASSWORD)

    assert wrong == [401] * 5
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert refused["Retry-After"] == "870"
    assert not Device.objects.exists()


def test_the_username_limit_does_not_lock_out_other_users_or_other_addresses(demo: None) -> None:
    for _ in range(5):
        register("guess")

    assert register(PASSWORD, username="bob").status_code == 201
    assert register(PASSWORD, address="198.51.100.9").status_code == 201


def test_spraying_many_usernames_from_one_address_is_stopped(demo: None, settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_ADDRESS = 4
    for name in ("a", "b", "c", "d"):
        assert register("guess", username=name).status_code == 401

    assert register(PASSWORD, username="carol").status_code == 429
    assert register(PASSWORD, username="carol", address="198.51.100.9").status_code == 201


def test_behind_a_trusted_proxy_the_forwarded_address_counts(demo: None, settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    via_proxy = {"address": "10.0.0.1"}
    for _ in range(5):
        register("guess", HTTP_X_FORWARDED_FOR="203.0.113.7", **via_proxy)

    # Another client behind the same proxy is not locked out with the attacker.
    assert register(PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.9", **via_proxy).status_code == 201
    assert register(PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.7", **via_proxy).status_code == 429


def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(demo: None) -> None:
    for n in range(5):
        register("guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")

    assert register(PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 429


# --- failed passwords: the admin's login page ---------------------------------------------------


def test_after_five_failed_admin_logins_the_right_password_is_refused_too(demo: None) -> None:
    client = Client()

    failed = [admin_login(client, "guess").status_code for _ in range(5)]
    refused = admin_login(client, PASSWORD)

    assert failed == [200] * 5  # the form again, with Django's error
    assert refused.status_code == 429
    assert "Too many failed sign-in attempts" in refused.content.decode()
    assert refused["Retry-After"] == "870"
    assert client.get("/admin/").status_code == 302  # not signed in


def test_a_good_admin_login_is_not_counted_and_still_works(demo: None) -> None:
    client = Client()
    for _ in range(4):
        admin_login(client, "guess")

    response = admin_login(client, PASSWORD)

    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_field_worker_trying_the_admin_counts_as_a_failure(demo: None) -> None:
    client = Client()
    for _ in range(5):
        assert admin_login(client, PASSWORD, username="alice").status_code == 200

    assert admin_login(client, PASSWORD, username="alice").status_code == 429


def test_the_throttle_spans_clients_and_sessions(demo: None) -> None:
    for _ in range(5):
        admin_login(Client(), "guess")

    assert admin_login(Client(), PASSWORD).status_code == 429
    assert User.objects.get(username="olivia").last_login is None


@pytest.mark.parametrize("username", ["OLIVIA", "Olivia"])
def test_case_variants_of_a_username_share_its_count(demo: None, username: str) -> None:
    for _ in range(5):
        admin_login(Client(), "guess", username=username)

    assert admin_login(Client(), PASSWORD).status_code == 429
