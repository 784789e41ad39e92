"""config/settings.py, imported in a fresh interpreter with a controlled environment: bad values
stop start-up with a message that names the variable; good ones give the documented setup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.conftest import on_mariadb

BASE_DIR = Path(__file__).resolve().parent.parent

PRINT_SETTINGS = """
import json
from config import settings as s
db = s.DATABASES["default"]
print(json.dumps({
    "DEBUG": s.DEBUG,
    "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
    "db_engine": db["ENGINE"],
    "db_name": str(db["NAME"]),
    "db_options": db.get("OPTIONS", {}),
    "db_conn_max_age": db.get("CONN_MAX_AGE"),
    "db_conn_health_checks": db.get("CONN_HEALTH_CHECKS", False),
    "db_test": db.get("TEST", {}),
    "cache_backend": s.CACHES["default"]["BACKEND"],
    "cache_location": s.CACHES["default"].get("LOCATION"),
    "celery_eager": s.CELERY_TASK_ALWAYS_EAGER,
    "celery_broker": s.CELERY_BROKER_URL,
    "celery_backend": s.CELERY_RESULT_BACKEND,
    "celery_acks_late": s.CELERY_TASK_ACKS_LATE,
    "celery_prefetch": s.CELERY_WORKER_PREFETCH_MULTIPLIER,
    "celery_serializers": [s.CELERY_TASK_SERIALIZER, s.CELERY_RESULT_SERIALIZER, s.CELERY_ACCEPT_CONTENT],
    "celery_limits": [s.CELERY_TASK_SOFT_TIME_LIMIT, s.CELERY_TASK_TIME_LIMIT],
    "celery_beat": sorted(s.CELERY_BEAT_SCHEDULE),
    "storage_backend": s.STORAGES["default"]["BACKEND"],
    "storage_options": s.STORAGES["default"].get("OPTIONS", {}),
    "media_root": str(s.MEDIA_ROOT),
}, default=repr))
"""


def run_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import config.settings in a new interpreter that sees only `env` (plus PATH)."""
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        cwd=BASE_DIR,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_with(**env: str) -> dict[str, Any]:
    result = run_settings(env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def startup_error(**env: str) -> str:
    """The ImproperlyConfigured message start-up fails with."""
    result = run_settings(env)
    assert result.returncode != 0, f"start-up should have failed, printed {result.stdout}"
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: "), result.stderr
    return last_line.removeprefix("django.core.exceptions.ImproperlyConfigured: ")


PROD = {"SECRET_KEY": "s3cret", "ALLOWED_HOSTS": "fieldsync.example.com"}


# --- bad values stop start-up, naming the variable ----------------------------------------------


def test_it_refuses_a_debug_value_that_is_not_a_boolean() -> None:
    message = startup_error(DEBUG="maybe", **PROD)
    assert message.startswith("DEBUG must be a boolean")
    assert "'maybe'" in message


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off() -> None:
    assert startup_error(DEBUG="0", ALLOWED_HOSTS="x.example.com") == "SECRET_KEY is required when DEBUG is off"


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_unset() -> None:
    assert "SECRET_KEY" in startup_error(ALLOWED_HOSTS="x.example.com")


def test_it_refuses_to_start_without_allowed_hosts_when_debug_is_off() -> None:
    assert startup_error(DEBUG="0", SECRET_KEY="s3cret") == "ALLOWED_HOSTS is required when DEBUG is off"
    assert "ALLOWED_HOSTS" in startup_error(DEBUG="0", SECRET_KEY="s3cret", ALLOWED_HOSTS=" , ")


@pytest.mark.parametrize(
    "url", ["postgres://u:pw@db.example.com/fieldsync", "ftp://db.example.com/x", "not a url", "mysql2x://h/db"]
)
def test_it_refuses_a_database_url_with_an_unsupported_scheme(url: str) -> None:
    message = startup_error(DATABASE_URL=url, **PROD)
    assert message.startswith("DATABASE_URL must start with sqlite:// or mysql://")
    assert "pw" not in message, "the message must not echo credentials"


def test_it_refuses_a_mysql_url_without_a_database_name() -> None:
    assert startup_error(DATABASE_URL="mysql://root@127.0.0.1:3306", **PROD).startswith(
        "DATABASE_URL must name a database"
    )


def test_it_refuses_a_redis_url_that_is_not_redis() -> None:
    message = startup_error(REDIS_URL="http://user:hunter2@x", **PROD)
    assert message.startswith("REDIS_URL must be a URL with scheme redis, rediss")
    assert "hunter2" not in message


def test_it_refuses_a_connection_max_age_that_is_not_an_integer() -> None:
    assert startup_error(DB_CONN_MAX_AGE="abc", **PROD) == "DB_CONN_MAX_AGE must be an integer, got 'abc'"
    assert startup_error(DB_CONN_MAX_AGE="-5", **PROD) == "DB_CONN_MAX_AGE must be at least 0, got -5"


def test_it_refuses_a_ledger_retention_below_ninety_days() -> None:
    assert startup_error(SYNC_LEDGER_RETENTION_DAYS="30", **PROD).startswith("SYNC_LEDGER_RETENTION_DAYS")


def test_it_refuses_celery_time_limits_that_contradict_each_other() -> None:
    assert startup_error(CELERY_TASK_SOFT_TIME_LIMIT="200", **PROD).startswith("CELERY_TASK_TIME_LIMIT (150)")
    assert startup_error(CELERY_VISIBILITY_TIMEOUT="60", **PROD).startswith("CELERY_VISIBILITY_TIMEOUT (60)")


def test_it_refuses_non_eager_celery_without_a_broker() -> None:
    assert startup_error(CELERY_TASK_ALWAYS_EAGER="0", **PROD).startswith("CELERY_TASK_ALWAYS_EAGER=0 needs REDIS_URL")


def test_it_refuses_an_unknown_log_level() -> None:
    assert startup_error(LOG_LEVEL="chatty", **PROD).startswith("LOG_LEVEL must be one of")


# --- good values ---------------------------------------------------------------------------------


def test_the_embedded_default_is_sqlite_under_var_with_eager_celery_and_local_files() -> None:
    s = settings_with(DEBUG="1")
    assert s["DEBUG"] is True
    assert s["db_engine"] == "django.db.backends.sqlite3"
    assert s["db_name"] == str(BASE_DIR / "var" / "fieldsync.sqlite3")
    assert s["cache_backend"] == "django.core.cache.backends.locmem.LocMemCache"
    assert s["celery_eager"] is True
    assert s["celery_broker"] == "memory://"
    assert s["storage_backend"] == "django.core.files.storage.FileSystemStorage"
    assert s["storage_options"]["location"] == str(BASE_DIR / "var" / "media")
    assert s["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost"]


def test_celery_is_json_only_acks_late_with_prefetch_one_time_limits_and_a_beat_schedule() -> None:
    s = settings_with(DEBUG="1")
    assert s["celery_serializers"] == ["json", "json", ["json"]]
    assert s["celery_acks_late"] is True
    assert s["celery_prefetch"] == 1
    soft, hard = s["celery_limits"]
    assert 0 < soft < hard
    assert "purge-expired-ledger-entries" in s["celery_beat"]


def test_a_redis_url_makes_redis_the_cache_broker_and_result_backend_and_turns_eager_off() -> None:
    s = settings_with(REDIS_URL="redis://127.0.0.1:6379/3", **PROD)
    assert s["cache_backend"] == "django.core.cache.backends.redis.RedisCache"
    assert s["cache_location"] == "redis://127.0.0.1:6379/3"
    assert s["celery_broker"] == "redis://127.0.0.1:6379/3"
    assert s["celery_backend"] == "redis://127.0.0.1:6379/3"
    assert s["celery_eager"] is False


def test_a_mariadb_url_gives_utf8mb4_strict_mode_read_committed_and_persistent_connections() -> None:
    s = settings_with(DATABASE_URL="mysql://fs:pw@db.internal:3306/fieldsync", **PROD)
    assert s["db_engine"] == "django.db.backends.mysql"
    assert s["db_name"] == "fieldsync"
    assert s["db_options"]["charset"] == "utf8mb4"
    assert "STRICT_TRANS_TABLES" in s["db_options"]["init_command"]
    assert s["db_options"]["isolation_level"] == "read committed"
    assert s["db_conn_max_age"] > 0
    assert s["db_conn_health_checks"] is True
    assert s["db_test"]["CHARSET"] == "utf8mb4"


def test_db_conn_max_age_sets_how_long_mariadb_connections_live() -> None:
    s = settings_with(DATABASE_URL="mysql://fs@db.internal/fieldsync", DB_CONN_MAX_AGE="300", **PROD)
    assert s["db_conn_max_age"] == 300


def test_an_s3_bucket_switches_file_storage_to_s3() -> None:
    s = settings_with(AWS_STORAGE_BUCKET_NAME="fieldsync-media", AWS_S3_REGION_NAME="eu-west-1", **PROD)
    assert s["storage_backend"] == "storages.backends.s3.S3Storage"
    assert s["storage_options"]["bucket_name"] == "fieldsync-media"
    assert s["storage_options"]["region_name"] == "eu-west-1"


def test_fieldsync_var_dir_moves_the_sqlite_file_and_the_media(tmp_path: Path) -> None:
    s = settings_with(DEBUG="1", FIELDSYNC_VAR_DIR=str(tmp_path))
    assert s["db_name"] == str(tmp_path / "fieldsync.sqlite3")
    assert s["media_root"] == str(tmp_path / "media")


# --- the live MariaDB session really runs with those options ----------------------------------


@pytest.mark.mariadb
def test_the_mariadb_session_runs_strict_read_committed_utf8mb4(db: None) -> None:
    assert on_mariadb()
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@SESSION.sql_mode, @@SESSION.tx_isolation, @@SESSION.character_set_connection")
        sql_mode, isolation, charset = cursor.fetchone()
    assert "STRICT_TRANS_TABLES" in sql_mode
    assert isolation == "READ-COMMITTED"
    assert charset == "utf8mb4"
