"""The bench's table: printed, and written to docs/benchmarks.md above the hand-written part."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

KEEP_MARKER = "<!-- Everything below this line is hand-written; `make bench` keeps it. -->"


@dataclass(frozen=True)
class Row:
    section: str
    measure: str
    value: float
    unit: str
    baseline: str  # what the ratio is against
    baseline_value: float
    target: str = ""  # e.g. ">= 0.25"
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")

    @property
    def verdict(self) -> str:
        if not self.target:
            return ""
        op, _, bound = self.target.partition(" ")
        limit = float(bound)
        ok = self.ratio >= limit if op == ">=" else self.ratio <= limit
        return "holds" if ok else "MISSED"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # further markdown sections (profile, memory)
    machine: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(
            f"  {row.measure}: {fmt(row.value)} {row.unit} | {row.baseline} {fmt(row.baseline_value)} "
            f"| ratio {row.ratio:.3g} {row.target} {row.verdict}".rstrip(),
            flush=True,
        )
        return row

    def table(self) -> str:
        lines = [
            "| | measure | value | baseline (same run) | ratio | target | |",
            "|---|---|---:|---|---:|---|---|",
        ]
        section = ""
        for row in self.rows:
            shown = row.section if row.section != section else ""
            section = row.section
            baseline = f"{row.baseline}: {fmt(row.baseline_value)}"
            lines.append(
                f"| {shown} | {row.measure} | {fmt(row.value)} {row.unit} | {baseline} | {row.ratio:.3g} "
                f"| {row.target} | {row.verdict} |"
            )
        return "\n".join(lines)

    def text(self) -> str:
        width = max(len(r.measure) for r in self.rows) if self.rows else 10
        out = []
        section = ""
        for row in self.rows:
            if row.section != section:
                out.append(f"\n{row.section}")
                section = row.section
            value = f"{fmt(row.value)} {row.unit}"
            out.append(
                f"  {row.measure:<{width}}  {value:>16}  ratio {row.ratio:>7.3g} to {row.baseline} "
                f"({fmt(row.baseline_value)})  {row.target} {row.verdict}".rstrip()
            )
        return "\n".join(out)


def fmt(value: float) -> str:
    if value != value:  # nan
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def machine(mariadb: str) -> dict[str, str]:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "load": load_average(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} ({cpu})" if cpu else str(os.cpu_count()),
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "mariadb": mariadb,
        "python": platform.python_version(),
        "commit": commit or "?",
    }


def load_average() -> str:
    """The 1-minute load average: other work on the machine is the main source of noise."""
    return Path("/proc/loadavg").read_text().split()[0]


def write_markdown(path: Path, report: Report, *, duration_s: float) -> None:
    kept = ""
    if path.exists():
        text = path.read_text()
        if KEEP_MARKER in text:
            kept = text.split(KEEP_MARKER, 1)[1]
    m = report.machine
    generated = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/run.py); the part after the marker line is hand-written.",
        "Every figure is a ratio to a baseline measured in the same run, one after the other, because",
        "these machines are noisy: compare ratios between runs, not absolute numbers.",
        "",
        f"- date: {m.get('date', '?')}, commit {m.get('commit', '?')}, run time {duration_s / 60:.1f} min",
        f"- machine: {m.get('cpus', '?')} CPUs, {m.get('memory', '?')} memory, Python {m.get('python', '?')}",
        f"- MariaDB {m.get('mariadb', '?')}; Redis as Celery broker and cache (no worker running)",
        f"- load average (1 min) at the start {m.get('load', '?')}, at the end {m.get('load_end', '?')}: other"
        " processes on the machine share its CPUs",
        "",
        report.table(),
        "",
        *report.extra,
        "",
        KEEP_MARKER,
    ]
    path.write_text("\n".join(generated) + (kept if kept else "\n"))
