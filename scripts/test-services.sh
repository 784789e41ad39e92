#!/usr/bin/env bash
# The suite again on MariaDB (a fresh test database), with the concurrency tests and the Celery
# integration tests (a real worker on Redis). Without the services this skips, unless CI is set.
set -euo pipefail
export DATABASE_URL="${MARIADB_URL:-mysql://root@127.0.0.1:3306/test}"
export REDIS_URL="${REDIS_TEST_URL:-redis://127.0.0.1:6379/15}"
# Tests that do not start a worker run tasks in-process; the worker tests switch this off.
export CELERY_TASK_ALWAYS_EAGER=1

down=()
python - <<'PY' || down+=(MariaDB)
import os, sys, MySQLdb, dj_database_url
cfg = dj_database_url.parse(os.environ["DATABASE_URL"])
try:
    MySQLdb.connect(host=cfg["HOST"], port=int(cfg["PORT"] or 3306), user=cfg["USER"], passwd=cfg["PASSWORD"] or "", connect_timeout=3).close()
except Exception as exc:
    print(f"MariaDB unreachable: {exc}", file=sys.stderr); sys.exit(1)
PY
python - <<'PY' || down+=(Redis)
import os, sys, redis
try:
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3).ping()
except Exception as exc:
    print(f"Redis unreachable: {exc}", file=sys.stderr); sys.exit(1)
PY
if ((${#down[@]})); then
  if [ -n "${CI:-}" ]; then
    echo "FAIL: ${down[*]} not reachable and CI is set" >&2; exit 1
  fi
  echo "SKIPPED the MariaDB/Redis suite: ${down[*]} not reachable (start them; see README)" >&2; exit 0
fi
exec pytest --create-db "$@"
