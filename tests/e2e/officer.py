"""A compliance officer deciding reviews while the devices sync (run by the e2e suite on its own
database, until the stop file appears). Decisions alternate: approve (the device's value for
every field changed on both sides), reject (with a note); each binds to the version read just
before, so a record that moved in between is refused as stale and looked at again."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402

from approvals.models import Review, ReviewState  # noqa: E402
from approvals.services import DecisionError, decide_review, live_classification  # noqa: E402
from records.models import Record  # noqa: E402
from records.services import BOTH_CHANGED  # noqa: E402


def main(stop_file: Path) -> None:
    officer = User.objects.get(username="olivia")
    decided: dict[str, str] = {}
    while not stop_file.exists():
        for review in Review.objects.filter(state=ReviewState.PENDING).order_by("created_at", "id"):
            record = Record.objects.filter(pk=review.record_id).first()
            current = record.data if record is not None else {}
            approve = len(decided) % 2 == 0
            choices = {
                name: "device" for name, how in live_classification(review, current).items() if how == BOTH_CHANGED
            }
            try:
                decide_review(
                    review_id=review.id,
                    officer=officer,
                    decision="approve" if approve else "reject",
                    seen_version=record.version if record is not None else None,
                    choices=choices,  # type: ignore[arg-type]
                    note="" if approve else "e2e: the officer rejects this edit",
                )
            except DecisionError as exc:
                print(f"review {review.id}: {exc.code}", file=sys.stderr, flush=True)
                continue
            decided[str(review.id)] = "approve" if approve else "reject"
        time.sleep(0.3)
    json.dump(decided, sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
