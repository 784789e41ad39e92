"""Production settings and secrets: `manage.py check --deploy` is clean with the production
environment docs/security.md gives; secrets come from the environment only; device tokens and
passwords are stored hashed; no token or password reaches the logs."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from sync.models import Device
from tests.test_security_bad_input import push_body

BASE_DIR = Path(__file__).resolve().parent.parent

# What docs/security.md tells an operator to set (the proxy terminates TLS and sets X-Forwarded-Proto).
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "p" + hashlib.sha256(b"fieldsync check --deploy test").hexdigest(),
    "ALLOWED_HOSTS": "fieldsync.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}


def check_deploy(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FIELDSYNC_VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_environment(tmp_path: Path) -> None:
    result = check_deploy(PRODUCTION, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_the_operators_choices_check_deploy_names_exactly_those(tmp_path: Path) -> None:
    # Redirecting and HSTS for subdomains and preload are left to the operator (docs/security.md):
    # the proxy usually redirects, and subdomains/preload bind the whole domain.
    env = {k: v for k, v in PRODUCTION.items() if not k.startswith(("SECURE_SSL", "SECURE_HSTS"))}

    result = check_deploy(env, tmp_path)

    warnings = sorted({word.strip(":()") for word in result.stderr.split() if word.startswith("(security.W")})
    assert warnings == ["security.W005", "security.W008", "security.W021"], result.stderr


def test_production_settings_are_https_only_with_secure_cookies_and_hsts(tmp_path: Path) -> None:
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_REDIRECT_EXEMPT, s.SESSION_COOKIE_HTTPONLY, s.X_FRAME_OPTIONS]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env={
            "PATH": os.environ.get("PATH", ""),
            "FIELDSYNC_VAR_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            **PRODUCTION,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        '[true, true, 31536000, ["HTTP_X_FORWARDED_PROTO", "https"], true, ["^healthz$"], true, "DENY"]'
    )


@pytest.mark.django_db
def test_the_health_check_is_not_redirected_when_ssl_redirect_is_on(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

    assert Client().get("/healthz").status_code == 200
    assert Client().get("/api/v1/me").status_code == 301
    assert Client().get("/api/v1/me", HTTP_X_FORWARDED_PROTO="https").status_code == 401


@pytest.mark.django_db
def test_hsts_is_sent_over_https(settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 31536000

    response = Client().get("/healthz", HTTP_X_FORWARDED_PROTO="https")

    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_no_secret_is_written_in_the_settings_file() -> None:
    # The one literal key is the development key, used only with DEBUG on (tests/test_settings.py
    # proves start-up refuses without SECRET_KEY otherwise).
    source = (BASE_DIR / "config" / "settings.py").read_text()
    assert source.count('SECRET_KEY = "') == 1
    assert 'SECRET_KEY = "django-insecure-fieldsync-development-only"' in source
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "DATABASE_URL", "REDIS_URL"):
        assert f'{name} = "' not in source


# --- hashed at rest ---------------------------------------------------------------------------


def test_a_device_token_is_stored_only_as_its_sha256(demo: None) -> None:
    response = APIClient().post(
        "/api/v1/devices/register", {"username": "alice", "password": "fieldsync-demo", "name": "p"}, format="json"
    )
    token = response.json()["token"]
    device = Device.objects.get(pk=response.json()["device_id"])
    secret = token.partition(".")[2]

    assert device.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            columns = [c.name for c in connection.introspection.get_table_description(cursor, table)]
            quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
            cursor.execute(f"SELECT {quoted} FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                assert not any(secret in str(value) for value in row), f"the token's secret is in {table}"


def test_passwords_are_stored_with_a_slow_salted_hash() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from config import settings as s; print(s.__dict__.get('PASSWORD_HASHERS'))"],
        cwd=BASE_DIR,
        env={"PATH": os.environ.get("PATH", ""), "DEBUG": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Not overridden: Django's default, PBKDF2 first (the tests swap in MD5 for speed only).
    assert result.stdout.strip() == "None", result.stderr
    from django.conf import global_settings

    assert global_settings.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.PBKDF2PasswordHasher"


@pytest.mark.django_db
def test_a_password_set_through_django_is_not_stored_as_given(demo: None) -> None:
    user = User.objects.get(username="alice")
    assert "fieldsync-demo" not in user.password
    assert user.check_password("fieldsync-demo")


# --- nothing secret in the logs ---------------------------------------------------------------


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


def test_no_token_or_password_reaches_the_logs(demo: None, settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_USERNAME = 2  # throttled answers are logged too
    password, wrong = "fieldsync-demo", "Wr0ng-but-secret-Passw0rd"
    handler = Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        api = APIClient()
        register = {"username": "alice", "password": password, "name": "phone"}
        token = api.post("/api/v1/devices/register", register, format="json").json()["token"]
        for _ in range(3):
            api.post("/api/v1/devices/register", {**register, "username": "bob", "password": wrong}, format="json")
        device = APIClient()
        device.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        device.generic("POST", "/api/v1/sync/push", push_body(), content_type="application/json")
        device.generic("POST", "/api/v1/sync/push", "{bad json", content_type="application/json")
        forged = token[:-4] + "AAAA"
        APIClient().get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {forged}")
        Client().post("/admin/login/", {"username": "olivia", "password": wrong})
        Client().post("/admin/login/", {"username": "olivia", "password": password})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    logged = "\n".join(handler.lines)
    assert logged, "the requests above log at least their 4xx answers"
    secret = token.partition(".")[2]
    for value in (secret, forged.partition(".")[2], password, wrong):
        assert value not in logged
