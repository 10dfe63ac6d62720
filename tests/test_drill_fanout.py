"""Drill 1 of issue 17, bounded for the suite (tests/drill_fanout.py runs it at 10,000 users): three `signalbot run`
processes on one PostgreSQL database, 1,500 Telegram subscribers, the first scan's burst, a local Bot API that
answers some sends with 429, 500, 403 and late, and the scheduler's leader SIGKILLed while it has sends in
flight. A new leader within 10 s; every eligible user gets each signal exactly once, except duplicates inside
the documented send/record window (a late answer, or a row the killed process held in SENDING)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.drill_fanout import drill


@pytest.mark.slow
async def test_three_processes_deliver_a_burst_exactly_once_through_faults_and_a_killed_leader(
        pg_databases, tmp_path: Path) -> None:  # noqa: ANN001
    report = await drill(pg_databases("drill"), 1500, 3, faults=True, kill=True, workdir=tmp_path,
                         max_seconds=600, backend="postgresql")
    print("\n" + "\n".join(report.lines()))
    assert report.signals >= 1 and report.eligible_pairs > 0
    assert report.failover_seconds is not None and report.failover_seconds < 10
    assert report.in_flight_at_kill > 0  # the kill hit sends in flight
    assert report.lost == 0
    assert report.duplicated_unexplained == 0
    assert report.duplicated_kill_window <= report.in_flight_at_kill
    assert report.received_pairs == report.eligible_pairs
    assert report.outbox_final.get("pending", 0) == report.outbox_final.get("sending", 0) == 0
    assert all("blocked" in reason for reason in report.failed_rows)  # the 403s only, one per blocked user
    assert sum(report.failed_rows.values()) == report.blocked
    assert report.log_errors == 0
