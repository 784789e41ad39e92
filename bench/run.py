"""`make bench`: push, replay, pull, the admin at scale and uploads on MariaDB + Redis, each figure a
ratio to a baseline measured in the same run. Prints a table and writes docs/benchmarks.md.

Only 127.0.0.1: MariaDB on 3306 (its own database, `bench_fieldsync`, created and dropped here),
Redis DB 8 (flushed before and after), gunicorn on a free port in 8700-8799. Everything it starts
it stops, on success, error or Ctrl-C.

    .venv/bin/python -m bench.run              # the full run (~10 minutes on 2 CPUs)
    .venv/bin/python -m bench.run --quick      # smaller sizes, to try the script (numbers not written)
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import io
import json
import os
import pstats
import random
import secrets
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import sql
from bench.report import Report, Row, load_average, machine, write_markdown
from bench.server import Gunicorn, request

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "bench_fieldsync"
REDIS_URL = "redis://127.0.0.1:6379/8"
VAR_DIR = ROOT / "var" / "bench"
DOC = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Sizes:
    small: int  # records, audit events and reviews for the "10,000" figures
    large: int  # ... for the "1,000,000" figures
    rounds: int  # push measurements are interleaved this many times
    batch1_requests: int
    batch100_requests: int
    batch500_requests: int
    naive_requests: int
    upload_mib: tuple[int, int]


FULL = Sizes(10_000, 1_000_000, 3, 100, 4, 2, 300, (20, 100))
QUICK = Sizes(2_000, 40_000, 1, 30, 2, 1, 60, (5, 20))


def environment() -> dict[str, str]:
    """The app's environment, for gunicorn and for this process's Django (admin pages, profile)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "ATTACHMENT_", "SYNC_", "CELERY_", "DB_", "DJANGO_"))
        and key not in ("MEDIA_ROOT", "DATABASE_URL", "REDIS_URL")
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": f"mysql://root@127.0.0.1:3306/{DATABASE}",
            "REDIS_URL": REDIS_URL,
            # A production app server: tasks go to the broker. No worker runs, so attachment
            # verification waits in Redis DB 8, which the bench flushes.
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + secrets.token_hex(16),
            "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "FIELDSYNC_VAR_DIR": str(VAR_DIR),
            "LOG_LEVEL": "WARNING",
            # The per-device rate limit guards against runaway clients; the bench is one on purpose.
            "API_DEVICE_RATE": "",
            "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def best_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """The fastest of `repeat` calls: other processes on the machine only ever add time."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def step(title: str) -> None:
    print(f"\n== {title} ({time.strftime('%H:%M:%S')})", flush=True)


class SmallPusher(threading.Thread):
    """Device bob, pushing one action at a time until stopped; keeps each push's latency."""

    def __init__(self, bench: Bench, port: int) -> None:
        super().__init__(daemon=True)
        self.bench, self.port = bench, port
        self.done = threading.Event()
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.done.is_set():
                body = self.bench.push_body(1)
                started = time.perf_counter()
                self.bench.send_push(self.port, "/api/v1/sync/push", body, username="bob")
                self.latencies.append(time.perf_counter() - started)
        except BaseException as exc:  # re-raised by stop()
            self.error = exc

    def stop(self) -> list[float]:
        self.done.set()
        self.join()
        if self.error is not None:
            raise self.error
        return sorted(self.latencies)


class Bench:
    def __init__(self, sizes: Sizes, report: Report) -> None:
        self.sizes = sizes
        self.report = report
        self.rng = random.Random(8)
        self.env = environment()
        self.conn: Any = None
        self.world: sql.World | None = None
        self.tokens: dict[str, str] = {}
        self.applied_batches: list[bytes] = []

    # --- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        step("setup: database, migrations, demo users, devices")
        sql.create_database(DATABASE)
        for key in set(os.environ) - set(self.env):
            del os.environ[key]
        os.environ.update(self.env)
        import django

        django.setup()
        from django.contrib.auth.models import User
        from django.core.management import call_command

        from records.models import RecordType, Team
        from sync.services import register_device

        call_command("migrate", verbosity=0, interactive=False)
        call_command("seed_demo", stdout=io.StringIO())
        devices = {}
        for username in ("alice", "bob", "carol", "olivia"):
            device, token = register_device(
                user=User.objects.get(username=username), name=f"bench {username}", platform="bench"
            )
            devices[username] = device.id
            self.tokens[username] = token
        self.world = sql.World(
            users=dict(User.objects.values_list("username", "pk")),
            teams=dict(Team.objects.values_list("slug", "pk")),
            types=dict(RecordType.objects.values_list("key", "pk")),
            devices=devices,
        )
        self.conn = sql.connect(DATABASE)

    def seed_small(self) -> None:
        assert self.world is not None
        step(f"seed: {self.sizes.small:,} records (with version, ledger entry, audit event) and reviews")
        started = time.perf_counter()
        sql.seed_records(self.conn, self.world, self.sizes.small, self.rng)
        sql.seed_reviews(self.conn, self.world, self.sizes.small, self.rng)
        sql.analyze(self.conn, ["records_record", "audit_auditevent", "approvals_review"])
        print(f"  {time.perf_counter() - started:.1f} s", flush=True)

    def grow(self) -> None:
        step(f"grow to {self.sizes.large:,} records, audit events and reviews (INSERT ... SELECT doubling)")
        for name, grow in (
            ("audit events", sql.grow_journal),
            ("records", sql.grow_records),
            ("reviews", sql.grow_reviews),
        ):
            started = time.perf_counter()
            grow(self.conn, self.sizes.large)
            print(f"  {name}: {time.perf_counter() - started:.1f} s", flush=True)
        sql.move_chain_head(self.conn)
        started = time.perf_counter()
        sql.analyze(self.conn, ["records_record", "audit_auditevent", "approvals_review"])
        print(f"  analyze: {time.perf_counter() - started:.1f} s", flush=True)

    # --- push ----------------------------------------------------------------------------------

    def push_body(self, batch: int) -> bytes:
        when = datetime.now(UTC)
        actions = [sql.create_action(self.rng, when) for _ in range(batch)]
        return json.dumps({"sent_at": now_iso(), "actions": actions}).encode()

    def send_push(self, port: int, path: str, body: bytes, *, username: str = "alice") -> Any:
        answer = request(
            port,
            "POST",
            path,
            body=body,
            headers={"Authorization": f"Bearer {self.tokens[username]}", "Content-Type": "application/json"},
        )
        if answer.status != 200:
            raise RuntimeError(f"push answered {answer.status}: {answer.body[:300]!r}")
        return answer.json()["results"]

    def timed_pushes(self, port: int, path: str, batch: int, count: int, *, keep: bool = False) -> list[float]:
        """Seconds per request of `count` pushes of `batch` new creates, each checked."""
        bodies = [self.push_body(batch) for _ in range(count)]
        times = []
        for body in bodies:
            started = time.perf_counter()
            results = self.send_push(port, path, body)
            times.append(time.perf_counter() - started)
            bad = [r for r in results if r["status"] != "applied" or r["replayed"]]
            if bad:
                raise RuntimeError(f"push did not apply: {bad[0]}")
            if keep:
                self.applied_batches.append(body)
        return times

    def raw_rows(self, count: int) -> list[sql.Prepared]:
        assert self.world is not None
        when = datetime.now(UTC)
        return [
            sql.prepare(self.world, "alice", "north", sql.create_action(self.rng, when), when) for _ in range(count)
        ]

    def push(self, api: Gunicorn) -> None:
        step("push over HTTP vs the raw limit (plain SQL executemany), interleaved")
        s = self.sizes
        plan = {1: s.batch1_requests, 100: s.batch100_requests, 500: s.batch500_requests}
        # Seconds per request (push) or per commit (raw), pooled over the rounds; a rate is the
        # batch size over the median, so a burst from another process on the machine moves it less.
        samples: dict[str, list[float]] = {}
        for _ in range(s.rounds):
            for batch, requests in plan.items():
                raw = sql.write_actions(self.conn, self.raw_rows(batch * requests), per_commit=batch)
                samples.setdefault(f"raw/{batch}", []).extend(raw)
                pushed = self.timed_pushes(api.port, "/api/v1/sync/push", batch, requests, keep=batch == 500)
                samples.setdefault(f"push/{batch}", []).extend(pushed)
                one = self.timed_pushes(api.port, "/bench/push-per-action", batch, requests)
                samples.setdefault(f"per-action/{batch}", []).extend(one)
            per_action = sql.write_actions(self.conn, self.raw_rows(500), per_commit=1)
            samples.setdefault("raw/per-action", []).extend(per_action)
        self.rates = {}
        for key, times in samples.items():
            size = key.rsplit("/", 1)[1]
            self.rates[key] = (1 if size == "per-action" else int(size)) / statistics.median(times)
        r = self.rates
        section = "Push (actions/s, HTTP to gunicorn, each action creates a record)"
        for batch in plan:
            self.report.add(
                Row(
                    section,
                    f"push, batch {batch} (staged: one transaction per push)",
                    r[f"push/{batch}"],
                    "actions/s",
                    f"raw, one commit per batch of {batch}",
                    r[f"raw/{batch}"],
                    target=">= 0.25" if batch == 500 else "",
                )
            )
        self.report.add(
            Row(
                section,
                "push, batch 500 (staged)",
                r["push/500"],
                "actions/s",
                "raw, one commit per action",
                r["raw/per-action"],
            )
        )
        for batch in plan:
            self.report.add(
                Row(
                    section,
                    f"push, batch {batch}, a transaction per action (push before the staged batch)",
                    r[f"per-action/{batch}"],
                    "actions/s",
                    f"raw, one commit per batch of {batch}",
                    r[f"raw/{batch}"],
                )
            )
        self.report.add(
            Row(
                section,
                "push, batch 500: staged vs a transaction per action",
                r["push/500"],
                "actions/s",
                "push, batch 500, a transaction per action",
                r["per-action/500"],
            )
        )

    def replay(self, api: Gunicorn) -> None:
        step("replay: a retried batch of 500 already-applied actions")
        times = []
        for body in self.applied_batches:
            started = time.perf_counter()
            results = self.send_push(api.port, "/api/v1/sync/push", body)
            times.append(time.perf_counter() - started)
            if not all(r["replayed"] and r["status"] == "applied" for r in results):
                raise RuntimeError("a retried batch was not replayed")
        replay_rate = 500 / statistics.median(times)
        section = "Replay (actions/s)"
        self.report.add(
            Row(
                section,
                "retried batch of 500, all replayed",
                replay_rate,
                "actions/s",
                "raw, one commit per batch of 500",
                self.rates["raw/500"],
                target=">= 1",
            )
        )
        self.report.add(
            Row(
                section,
                "retried batch of 500, all replayed",
                replay_rate,
                "actions/s",
                "raw, one commit per action",
                self.rates["raw/per-action"],
            )
        )

    def naive(self, api: Gunicorn) -> None:
        step("the naive peer: a DRF ModelViewSet, one record per request")
        assert self.world is not None
        bodies = []
        for _ in range(self.sizes.naive_requests):
            action = sql.create_action(self.rng, datetime.now(UTC))
            fields = {
                "id": action["record"],
                "type": self.world.types["clocking"],
                "team": self.world.teams["north"],
                "data": action["data"],
                "captured_at": action["captured_at"],
                "version": 1,
            }
            bodies.append(json.dumps(fields).encode())
        headers = {"Authorization": f"Bearer {self.tokens['alice']}", "Content-Type": "application/json"}
        times = []
        for body in bodies:
            started = time.perf_counter()
            answer = request(api.port, "POST", "/bench/naive/records", body=body, headers=headers)
            times.append(time.perf_counter() - started)
            if answer.status != 201:
                raise RuntimeError(f"naive create answered {answer.status}: {answer.body[:300]!r}")
        naive_rate = 1 / statistics.median(times)
        section = "Naive peer (records/s)"
        self.report.add(
            Row(
                section,
                "push, batch 500 (staged)",
                self.rates["push/500"],
                "records/s",
                "naive ModelViewSet, one record per request",
                naive_rate,
                target=">= 3",
            )
        )
        self.report.add(
            Row(
                section,
                "push, batch 1",
                self.rates["push/1"],
                "records/s",
                "naive ModelViewSet, one record per request",
                naive_rate,
            )
        )

    def contention(self, api: Gunicorn) -> None:
        """What a batch's transaction does to everyone else: device bob pushes single actions while
        device alice pushes batches of 500, once staged (the feed lock taken at the end of each
        batch), once with a transaction per action."""
        step("contention: bob's single actions while alice pushes batches of 500")
        section = "Contention (2 gunicorn workers): bob's batch-1 pushes while alice pushes batches of 500"
        alone = 1000 / self.rates["push/1"]
        for path, label, key in (
            ("/api/v1/sync/push", "staged batch", "push/500"),
            ("/bench/push-per-action", "a transaction per action", "per-action/500"),
        ):
            big = [self.push_body(500) for _ in range(max(2, self.sizes.batch500_requests))]
            small = SmallPusher(self, api.port)
            small.start()
            started = time.perf_counter()
            try:
                for body in big:
                    self.send_push(api.port, path, body)
            finally:
                elapsed = time.perf_counter() - started
                latencies = small.stop()
            p95 = latencies[int(0.95 * (len(latencies) - 1))] * 1000
            alice = 500 * len(big) / elapsed
            self.report.add(
                Row(section, f"{label}: alice", alice, "actions/s", "alice alone (same mode)", self.rates[key])
            )
            self.report.add(Row(section, f"{label}: bob, p95", p95, "ms", "bob alone (median)", alone))
            self.report.add(Row(section, f"{label}: bob, worst", latencies[-1] * 1000, "ms", "bob alone", alone))

    # --- profile -------------------------------------------------------------------------------

    def profile(self) -> None:
        """Where a batch of 500 spends its time, in this process (no HTTP), by cProfile."""
        step("profile: one push of 500 actions in-process (cProfile)")
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.tokens['alice']}")
        lines = ["### Where a push of 500 spends its time", ""]
        for path, label in (
            ("/api/v1/sync/push", "staged batch (one transaction)"),
            ("/bench/push-per-action", "a transaction per action"),
        ):
            client.post(path, data=self.push_body(10), content_type="application/json")  # warm
            body = self.push_body(500)
            profiler = cProfile.Profile()
            profiler.enable()
            answer = client.post(path, data=body, content_type="application/json")
            profiler.disable()
            assert answer.status_code == 200, answer.content[:300]
            stats = pstats.Stats(profiler)
            total, buckets, calls = breakdown(stats)
            lines.append(f"{label}: {total * 1000:,.0f} ms in-process under cProfile (which slows Python code).")
            lines.append("")
            lines.append("| where | share of the time | |")
            lines.append("|---|---:|---|")
            for name, seconds in sorted(buckets.items(), key=lambda kv: -kv[1]):
                lines.append(f"| {name} | {100 * seconds / total:.0f}% | {calls.get(name, '')} |")
            lines.append("")
            print("\n".join(lines[-len(buckets) - 4 :]), flush=True)
        self.report.extra.extend(lines)

    # --- pull ----------------------------------------------------------------------------------

    def pull(self, api: Gunicorn, label: str) -> dict[str, float]:
        from records.models import Record, Team
        from sync.services import encode_cursor

        step(f"pull: pages of 1000 with {label} records")
        out: dict[str, float] = {}
        for username in ("alice", "olivia"):
            team_ids = sorted(Team.objects.filter(members__username=username).values_list("pk", flat=True))
            feed = Record.objects.filter(team_id__in=team_ids, change_seq__gt=0).order_by("change_seq")
            total = feed.count()
            middle = feed.values_list("change_seq", flat=True)[total // 2]
            cursor_middle = encode_cursor(middle, list(team_ids))
            headers = {"Authorization": f"Bearer {self.tokens[username]}"}
            for where, cursor, after in (("first page", "", 0), ("a page mid-feed", cursor_middle, middle)):
                path = "/api/v1/sync/pull?limit=1000" + (f"&cursor={cursor}" if cursor else "")

                def get(path: str = path, headers: dict[str, str] = headers) -> None:
                    answer = request(api.port, "GET", path, headers=headers)
                    assert answer.status == 200, answer.body[:300]
                    assert len(answer.json()["changes"]) == 1000

                def raw(team_ids: list[int] = team_ids, after: int = after) -> None:
                    # The query shape pull uses (sync.services.pull): where the page ends, one
                    # index-only read per team, then the page's rows in that bounded range.
                    cursor = self.conn.cursor()
                    seqs: list[int] = []
                    for team_id in team_ids:
                        cursor.execute(
                            "SELECT change_seq FROM records_record WHERE team_id = %s AND change_seq > %s"
                            " ORDER BY change_seq LIMIT 1001",
                            (team_id, after),
                        )
                        seqs.extend(row[0] for row in cursor.fetchall())
                    last = sorted(seqs)[999]
                    marks = ",".join(["%s"] * len(team_ids))
                    cursor.execute(
                        "SELECT r.id, r.version, r.deleted, r.data, r.updated_at, r.change_seq, t.`key`, m.slug"
                        " FROM records_record r JOIN records_recordtype t ON t.id = r.type_id"
                        " JOIN records_team m ON m.id = r.team_id"
                        f" WHERE r.team_id IN ({marks}) AND r.change_seq > %s AND r.change_seq <= %s"
                        " ORDER BY r.change_seq LIMIT 1000",
                        (*team_ids, after, last),
                    )
                    rows = cursor.fetchall()
                    cursor.close()
                    self.conn.commit()
                    assert len(rows) == 1000

                teams = "one team" if len(team_ids) == 1 else f"{len(team_ids)} teams"
                key = f"{username}'s device ({teams}), {where}"
                out[key] = best_time(get, 7)
                out[key + "/raw"] = best_time(raw, 7)
        return out

    def pull_rows(self, small: dict[str, float], large: dict[str, float]) -> None:
        section = "Pull (ms per page of 1000 changes, HTTP)"
        for key in small:
            if key.endswith("/raw"):
                continue
            self.report.add(
                Row(
                    section,
                    f"{key}, {self.sizes.large:,} records",
                    large[key] * 1000,
                    "ms",
                    f"same page, {self.sizes.small:,} records",
                    small[key] * 1000,
                    target="<= 1.5",
                )
            )
        for key in small:
            if key.endswith("/raw"):
                continue
            for label, figures in ((self.sizes.small, small), (self.sizes.large, large)):
                self.report.add(
                    Row(
                        section,
                        f"{key}, {label:,} records",
                        figures[key] * 1000,
                        "ms",
                        "raw SQL SELECT of the same rows",
                        figures[key + "/raw"] * 1000,
                    )
                )

    # --- admin ---------------------------------------------------------------------------------

    def admin_pages(self) -> list[tuple[str, str, str]]:
        """(user, name, path): the managers' audit trail and the officers' review queue."""
        assert self.world is not None
        trail, queue = "/admin/audit/auditevent/", "/admin/approvals/review/"
        record = sql.scalar(self.conn, "SELECT MIN(object_id) FROM audit_auditevent WHERE object_type = 'record'")
        deep = max(2, min(50, self.sizes.small // 200))  # a page that exists at the small size too
        return [
            ("mark", "audit trail", trail),
            ("mark", f"audit trail, page {deep}", trail + f"?p={deep}"),
            ("mark", "audit trail, team north", trail + "?team=north"),
            ("mark", "audit trail, one device", trail + f"?device_id={self.world.devices['bob']}"),
            ("mark", "audit trail, search a record id", trail + f"?q={record}"),
            ("olivia", "review queue", queue),
            ("olivia", "review queue, pending", queue + "?state__exact=pending"),
            ("olivia", f"review queue, page {deep}", queue + f"?p={deep}"),
        ]

    def admin(self, label: str) -> dict[str, float]:
        from django.contrib.auth.models import User
        from django.test import Client

        step(f"admin changelists with {label} rows")
        out = {}
        clients = {}
        pages = self.admin_pages()
        for username in {u for u, _, _ in pages}:
            client = Client()
            client.force_login(User.objects.get(username=username))
            clients[username] = client
        for username, name, path in pages:
            client = clients[username]

            def get(client: Any = client, path: str = path) -> None:
                answer = client.get(path)
                assert answer.status_code == 200, (path, answer.status_code)

            out[name] = best_time(get, 5)
            print(f"  {name}: {out[name] * 1000:.0f} ms", flush=True)
        return out

    def admin_rows(self, small: dict[str, float], large: dict[str, float]) -> None:
        section = "Admin changelists (ms per page, Django test client)"
        for name in small:
            self.report.add(
                Row(
                    section,
                    f"{name}, {self.sizes.large:,} rows",
                    large[name] * 1000,
                    "ms",
                    f"{self.sizes.small:,} rows",
                    small[name] * 1000,
                    target="<= 1.5",
                )
            )

    # --- uploads -------------------------------------------------------------------------------

    def uploads(self) -> None:
        step("uploads: tus in 5 MB chunks vs a raw file copy; the app process's peak RSS")
        chunk = 5 * 2**20
        section = "Uploads (tus 1.0.0, 5 MB chunks, one gunicorn worker)"
        headers = {"Authorization": f"Bearer {self.tokens['alice']}", "Tus-Resumable": "1.0.0"}
        VAR_DIR.mkdir(parents=True, exist_ok=True)

        def upload(port: int, content: bytes) -> float:
            digest = hashlib.sha256(content).hexdigest()
            meta = {
                "id": str(uuid.uuid4()),
                "filename": "bench.pdf",
                "content_type": "application/pdf",
                "sha256": digest,
            }
            encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
            started = time.perf_counter()
            created = request(
                port,
                "POST",
                "/api/v1/uploads/",
                body=b"",
                headers={**headers, "Upload-Length": str(len(content)), "Upload-Metadata": encoded},
            )
            assert created.status == 201, created.body[:300]
            location = "/" + created.headers["location"].split("/", 3)[3]
            for offset in range(0, len(content), chunk):
                part = content[offset : offset + chunk]
                answer = request(
                    port,
                    "PATCH",
                    location,
                    body=part,
                    headers={
                        **headers,
                        "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream",
                    },
                )
                assert answer.status == 204, answer.body[:300]
            return time.perf_counter() - started

        small_mib, large_mib = self.sizes.upload_mib
        content = os.urandom(large_mib * 2**20)
        with Gunicorn(env=self.env, workers=1, log=VAR_DIR / "gunicorn-uploads.log") as server:
            upload(server.port, content[: 2**20])  # warm: imports, connections
            idle = server.rss_mib("VmHWM")
            upload(server.port, content[: small_mib * 2**20])
            peak_small = server.rss_mib("VmHWM")
            seconds = upload(server.port, content)
            peak_large = server.rss_mib("VmHWM")

        source, target = VAR_DIR / "raw-copy-source", VAR_DIR / "raw-copy-target"
        source.write_bytes(content)
        started = time.perf_counter()
        shutil.copyfile(source, target)
        with target.open("rb+") as fh:
            os.fsync(fh.fileno())
        raw_seconds = time.perf_counter() - started
        source.unlink()
        target.unlink()

        self.report.add(
            Row(
                section,
                f"upload {large_mib} MB",
                large_mib / seconds,
                "MB/s",
                "raw file copy + fsync, same disk",
                large_mib / raw_seconds,
            )
        )
        self.report.add(
            Row(
                section,
                f"worker peak RSS after {large_mib} MB",
                peak_large,
                "MiB",
                f"after {small_mib} MB",
                peak_small,
                target="<= 1.1",
                note="target: under 150 MiB",
            )
        )
        self.report.add(
            Row(section, f"worker peak RSS after {small_mib} MB", peak_small, "MiB", "after a 1 MB upload", idle)
        )
        self.report.add(
            Row(
                section,
                f"worker peak RSS after {large_mib} MB",
                peak_large,
                "MiB",
                "the 150 MiB budget",
                150,
                target="<= 1",
            )
        )

    # --- the run -------------------------------------------------------------------------------

    def run(self, *, profile: bool) -> None:
        self.setup()
        self.seed_small()
        with Gunicorn(env=self.env, workers=2, log=VAR_DIR / "gunicorn-api.log") as api:
            self.push(api)
            self.replay(api)
            self.naive(api)
            self.contention(api)
            if profile:
                self.profile()
            pull_small = self.pull(api, f"{self.sizes.small:,}")
            admin_small = self.admin(f"{self.sizes.small:,}")
            self.grow()
            pull_large = self.pull(api, f"{self.sizes.large:,}")
            admin_large = self.admin(f"{self.sizes.large:,}")
        self.pull_rows(pull_small, pull_large)
        self.admin_rows(admin_small, admin_large)
        self.uploads()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: S110 (Django may never have been set up)
            pass


def breakdown(stats: pstats.Stats) -> tuple[float, dict[str, float], dict[str, str]]:
    """Own time per function, summed by where the function lives."""
    raw: Any = stats.stats  # type: ignore[attr-defined]
    buckets: dict[str, float] = {}
    calls: dict[str, str] = {}
    counts: dict[str, int] = {}
    total = 0.0
    for (filename, _line, name), (_cc, ncalls, tottime, _cum, _callers) in raw.items():
        where = bucket(filename, name)
        buckets[where] = buckets.get(where, 0.0) + tottime
        total += tottime
        for method, label in (("Connection.query ", "statements"), ("'commit'", "commits")):
            if where == DATABASE_BUCKET and method in name:
                counts[label] = counts.get(label, 0) + ncalls
    if counts:
        calls[DATABASE_BUCKET] = ", ".join(f"{n:,} {label}" for label, n in sorted(counts.items(), reverse=True))
    return total, buckets, calls


DATABASE_BUCKET = "database (MySQLdb: round trips, waits, commits)"


def bucket(filename: str, name: str) -> str:
    path = filename.replace("\\", "/")
    # C functions have no file: MySQLdb's show up as "<function Connection.query ...>" or
    # "<method 'commit' of '_mysql.connection' objects>".
    if "/MySQLdb/" in path or "_mysql" in name or "Connection." in name:
        return DATABASE_BUCKET
    if "/jsonschema/" in path or "/referencing/" in path or "/rpds" in path:
        return "JSON Schema validation (jsonschema)"
    if "/rest_framework/" in path:
        return "DRF (request parsing, input serializers)"
    if "/django/db/" in path:
        return "Django ORM (SQL compilation, model instances)"
    if "/django/" in path:
        return "Django (request handling, transactions, signals)"
    if any(f"/{app}/" in path for app in ("records", "sync", "audit", "approvals", "attachments", "config")):
        return "Fieldsync's own code"
    if path.endswith(("json/encoder.py", "json/decoder.py", "json/__init__.py")) or "_json" in name:
        return "json encode/decode"
    return "other (stdlib, uuid, datetime, hashing, ...)"


@contextmanager
def redis_db() -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes; does not write docs/benchmarks.md")
    parser.add_argument("--no-profile", action="store_true", help="skip the in-process cProfile of push")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards (to look at it)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    report = Report()
    report.machine = machine(sql.server_version())
    bench = Bench(sizes, report)
    shutil.rmtree(VAR_DIR, ignore_errors=True)
    VAR_DIR.mkdir(parents=True)
    try:
        with redis_db():
            bench.run(profile=not args.no_profile)
    finally:
        bench.close()
        if not args.keep:
            sql.drop_database(DATABASE)
            shutil.rmtree(VAR_DIR, ignore_errors=True)
    duration = time.perf_counter() - started
    report.machine["load_end"] = load_average()
    print("\n" + report.text())
    print(f"\n{report.machine}\nrun time {duration / 60:.1f} min")
    if not args.quick:
        write_markdown(DOC, report, duration_s=duration)
        print(f"written: {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
