"""`fieldsync-device register | capture | attach | sync | status`.

Exit status: 0 done (for `sync --until-drained`: nothing left to upload, push or wait for);
1 an error that retrying will not fix (shown); 2 `sync` ran out of time with work left."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from fieldsync_device.device import Device
from fieldsync_device.errors import ApiError, DeviceError, Transient
from fieldsync_device.sync import Syncer

HOME_ENV = "FIELDSYNC_DEVICE_HOME"


def _json_arg(raw: str) -> dict[str, Any]:
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fieldsync-device", description="An offline-first Fieldsync device.")
    top.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get(HOME_ENV) or Path.home() / ".fieldsync-device"),
        help=f"the device's directory (its SQLite store and files); default ${HOME_ENV} or ~/.fieldsync-device",
    )
    top.add_argument("-v", "--verbose", action="store_true", help="log sync steps to stderr")
    top.add_argument("--timeout-http", type=float, default=30.0, help="seconds before a silent request fails")
    commands = top.add_subparsers(dest="command", required=True)

    register = commands.add_parser("register", help="register this device with a server (once)")
    register.add_argument("--server", required=True, help="http(s)://host:port of the Fieldsync server")
    register.add_argument("--username", required=True)
    register.add_argument("--password", help="default: $FIELDSYNC_PASSWORD, else asked")
    register.add_argument("--name", required=True, help="the device's name, shown in the back-office")
    register.add_argument("--platform", default="python")
    register.add_argument("--clock-skew", type=float, default=0.0, help=argparse.SUPPRESS)

    capture = commands.add_parser("capture", help="record a create, update or delete (works offline)")
    ops = capture.add_subparsers(dest="op", required=True)
    create = ops.add_parser("create")
    create.add_argument("--type", required=True, help="record type key (e.g. stock_count)")
    create.add_argument("--team", help="team slug; optional when you are in one team")
    create.add_argument("--record", help="the record's UUID (default: a new one)")
    create.add_argument("--data", required=True, type=_json_arg, help="every field, as JSON (or @file.json)")
    update = ops.add_parser("update")
    update.add_argument("--record", required=True)
    update.add_argument("--data", required=True, type=_json_arg, help="the changed fields, as JSON (or @file.json)")
    delete = ops.add_parser("delete")
    delete.add_argument("--record", required=True)

    attach = commands.add_parser("attach", help="take a file into the device; prints the reference for a record")
    attach.add_argument("path", type=Path)
    attach.add_argument("--content-type")
    attach.add_argument("--filename")

    sync = commands.add_parser("sync", help="upload files, push the queue, pull changes and review decisions")
    sync.add_argument("--until-drained", action="store_true", help="keep going until nothing is left to do")
    sync.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    sync.add_argument("--base-delay", type=float, default=0.5, help="first retry wait (seconds)")
    sync.add_argument("--max-delay", type=float, default=30.0, help="longest retry wait (seconds)")

    status = commands.add_parser("status", help="pending, failed and pending-review items")
    status.add_argument("--json", action="store_true")
    status.add_argument("--records", action="store_true", help="with --json: include the local records")
    return top


def _print_status(status: dict[str, Any]) -> None:
    print(f"device {status['device']} ({status['user']}) -> {status['server']}")
    print(f"teams: {', '.join(status['teams']) or '-'}; records: {status['records']}; last sync: {status['last_sync']}")
    if status["last_error"]:
        print(f"last error: {status['last_error']}")
    sections = (("pending", "pending"), ("pending review", "pending_review"), ("failed", "failed"))
    for title, key in sections:
        items = status[key]
        print(f"{title}: {len(items)}")
        for item in items:
            reason = f" - {item['error']}: {item['message']}" if item["error"] else ""
            review = f" (review {item['review']})" if key == "pending_review" else ""
            print(f"  {item['action']} {item['op']} {item['type']} {item['record']}{review}{reason}")
    pending = status["attachments"]["pending"]
    rejected = status["attachments"]["rejected"]
    print(f"files pending: {len(pending)}; files rejected: {len(rejected)}")
    for item in pending:
        print(f"  {item['id']} {item['filename']} {item['state']} {item['uploaded']}/{item['size']}")
    for item in rejected:
        print(f"  {item['id']} {item['filename']} {item['state']} - {item['reason']}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def log(message: str) -> None:
        if args.verbose:
            print(f"[{args.home.name}] {message}", file=sys.stderr, flush=True)

    try:
        with Device(args.home, timeout=args.timeout_http) as device:
            if args.command == "register":
                password = args.password or os.environ.get("FIELDSYNC_PASSWORD") or getpass.getpass()
                device_id = device.register(
                    server=args.server,
                    username=args.username,
                    password=password,
                    name=args.name,
                    platform=args.platform,
                    clock_skew_seconds=args.clock_skew,
                )
                print(device_id)
            elif args.command == "capture":
                if args.op == "create":
                    captured = device.capture_create(
                        type_key=args.type, data=args.data, team=args.team, record_id=args.record
                    )
                elif args.op == "update":
                    captured = device.capture_update(record_id=args.record, data=args.data)
                else:
                    captured = device.capture_delete(record_id=args.record)
                print(json.dumps({"action": captured.action_id, "record": captured.record_id}))
            elif args.command == "attach":
                print(json.dumps(device.attach(args.path, content_type=args.content_type, filename=args.filename)))
            elif args.command == "sync":
                outcome = Syncer(device, log=log).run(
                    until_drained=args.until_drained,
                    timeout=args.timeout,
                    base_delay=args.base_delay,
                    max_delay=args.max_delay,
                )
                report = outcome.report
                summary = {
                    "drained": outcome.drained,
                    "cycles": outcome.cycles,
                    "transient_errors": len(outcome.errors),
                    "queued": report.queued if report else None,
                    "in_review": report.in_review if report else None,
                    "files_unsettled": report.unsettled_attachments if report else None,
                }
                print(json.dumps(summary))
                complete = outcome.drained if args.until_drained else outcome.report is not None
                return 0 if complete else 2
            else:
                status = device.status()
                if args.json:
                    if args.records:
                        status["record_states"] = device.export_records()
                    print(json.dumps(status, indent=2, sort_keys=True))
                else:
                    _print_status(status)
    except (DeviceError, ApiError) as exc:
        print(f"fieldsync-device: {exc}", file=sys.stderr)
        return 1
    except Transient as exc:
        print(f"fieldsync-device: the server could not be reached: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
