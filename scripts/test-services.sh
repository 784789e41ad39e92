#!/usr/bin/env bash
# The suite again on MariaDB (a fresh test database), with the concurrency tests and the Celery
# integration tests (a real worker on Redis). Without the services this skips, unless CI is set.
#   MARIADB_URL     server to make the test database on (its name gets a test_ prefix)
#   REDIS_TEST_URL  Redis database for the broker, results and cache (flushed of queued tasks)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export DATABASE_URL="${MARIADB_URL:-mysql://root@127.0.0.1:3306/test}"
export REDIS_URL="${REDIS_TEST_URL:-redis://127.0.0.1:6379/15}"
# Tests that do not start a worker run tasks in-process; the worker tests switch this off.
export CELERY_TASK_ALWAYS_EAGER=1

# Prints the services that do not answer. A missing module is a broken venv, not a missing
# service: that fails here (set -e) instead of turning into a skip.
down=$("$PY" - <<'PY'
import os, sys
import dj_database_url, MySQLdb, redis

down = []
cfg = dj_database_url.parse(os.environ["DATABASE_URL"])
try:
    MySQLdb.connect(host=cfg["HOST"], port=int(cfg["PORT"] or 3306), user=cfg["USER"],
                    passwd=cfg["PASSWORD"] or "", connect_timeout=3).close()
except MySQLdb.Error as exc:
    print(f"MariaDB unreachable: {exc}", file=sys.stderr)
    down.append("MariaDB")
try:
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3).ping()
except (redis.RedisError, OSError) as exc:
    print(f"Redis unreachable: {exc}", file=sys.stderr)
    down.append("Redis")
print(" ".join(down))
PY
)
if [ -n "$down" ]; then
  if [ -n "${CI:-}" ]; then
    echo "FAIL: $down not reachable and CI is set" >&2; exit 1
  fi
  echo "SKIPPED the MariaDB/Redis suite: $down not reachable (start them: .ci/run does; see docs/operations.md)" >&2
  exit 0
fi
exec "$PY" -m pytest --create-db "$@"
