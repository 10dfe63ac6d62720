"""The red-team script (tests/redteam.py): its counting rules on made-up outcomes, and one bounded --quick run
against the real service process (loopback only, about 75 s) in which every row must hold (or be skipped: the
read-only and full-disk faults need root)."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redteam import LONG_LINE_CHARS, Fact, _runs, align, answered, fuzz_lines, tally
from tests.conftest import REPO


def fact(chat: str, sid: str = "S", status: str = "sent", *, user_id: int | None = None, active: bool = True,
         error: str = "") -> Fact:
    return Fact(user_id if user_id is not None else int(chat), chat, active, sid, status, error)


def test_align_counts_answers_in_order_and_takes_any_echo_for_the_overlong_line():
    expected = ["> a", "> b", "> LONG", "> c", "> d"]
    done, long_answer, unanswered = align(["> a", "> b", "> (a line of 99 bytes)", "> c", "> d"], expected, 2)
    assert (done, long_answer, unanswered) == (5, "> (a line of 99 bytes)", [])
    # the console ended at the long line: nothing after it is answered
    assert align(["> a", "> b"], expected, 2) == (2, None, [2, 3, 4])
    # one line unanswered in the middle, the rest in order
    assert align(["> a", "> b", "> refused", "> d"], expected, 2) == (4, "> refused", [3])


def test_fuzz_lines_are_bounded_and_hold_one_overlong_line():
    lines, long_at = fuzz_lines(2_001, random.Random(19))
    assert len(lines) == 2_001 and len(lines[long_at]) == LONG_LINE_CHARS
    assert not any("\n" in line for line in lines)
    assert any(not answered(line) for line in lines) and any(line.startswith("/help") for line in lines)


def test_tally_tells_lost_from_duplicated_inside_and_outside_the_window():
    facts = [fact("1"), fact("2"), fact("3"), fact("4", status="failed", error="telegram: Forbidden: bot was blocked"),
             fact("5", status="failed", error="gave up after 5 attempts"), fact("6"), fact("7", active=False,
                                                                                        status="failed")]
    parts = {("1", "S"): (0, 1), ("2", "S"): (0, 2), ("3", "S"): (0, 2), ("6", "S"): (0, 1)}
    t = tally(facts, parts, window={(2, "S")}, late_chats={"6"}, blocked={"7"})
    assert [c for c, _, _ in t.lost] == ["5"]  # 4 failed for a permanent reason: not lost
    assert [c for c, _, _ in t.dup_window] == ["2"] and [c for c, _, _ in t.dup_outside] == ["3"]
    assert not t.dup_timeout and not t.blocked_wrong


def test_tally_counts_a_photo_sent_again_without_its_text_as_a_doubled_part():
    facts = [fact(str(c)) for c in range(1, 6)]
    parts = {("1", "S"): (1, 1), ("2", "S"): (1, 1), ("3", "S"): (1, 1),  # photo + text, once
             ("4", "S"): (2, 1),  # the text failed, the retry sent the photo again
             ("5", "S"): (2, 2)}  # the whole message twice (a kill between send and record)
    t = tally(facts, parts, window={(5, "S")})
    assert t.multipart == 5 and t.partial_resends == 1
    assert [c for c, _, _ in t.parts_outside] == ["4"] and [c for c, _, _ in t.parts_window] == ["5"]
    assert [c for c, _, _ in t.dup_outside] == ["4"]  # by its first part, the photo, it arrived twice


def test_runs_summarise_probe_answers():
    assert _runs(["503 in 0.1 s", "503 in 2.0 s", "200 in 0.0 s"]) == "503 x2 (slowest 2.0 s), 200 (slowest 0.0 s)"
    assert _runs([]) == "no probe"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kill -9, chattr and mount as on Linux")
def test_quick_red_team_run_holds(tmp_path: Path) -> None:
    out = tmp_path / "redteam.json"
    proc = subprocess.run([sys.executable, "-m", "tests.redteam", "--quick", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=150)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    attacks = " ".join(r["attack"] for r in rows)
    for family in ("fan-out", "webhook", "db fault", "console fuzz"):
        assert family in attacks, attacks
    failed = [f"{r['attack']}: expected {r['expected']}; observed {r['observed']}" for r in rows
              if r["verdict"] == "no"]
    assert not failed, "\n".join(failed)
    assert proc.returncode == 0, proc.stdout[-3000:]
