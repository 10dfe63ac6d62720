"""`signalbot scan` on the real equities file: only data up to the moment, and later bars change nothing."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from core.market_data import CsvMarketData
from bot.cli.scan import scan_at
from core.dates import parse_when
from tests.conftest import REPO, utc

EQUITIES = "equities/sp500_daily_2013-02-08_2018-02-07.csv.gz"


def test_parse_when():
    assert parse_when("2017-06-01") == utc(2017, 6, 2)
    assert parse_when("2017-06-01T14:00:00Z") == utc(2017, 6, 1, 14)
    with pytest.raises(ValueError):
        parse_when("yesterday")


@pytest.fixture(scope="module")
def cut_file(tmp_path_factory):
    """The equities file cut after 2017-06-01: what the world looked like that evening."""
    from tests.conftest import data_dir

    src = data_dir() / EQUITIES
    if not src.exists():
        pytest.skip(f"{src} not found (set SIGNALS_DATA_DIR)")
    df = pd.read_csv(src)
    out = tmp_path_factory.mktemp("cut") / "sp500_cut.csv.gz"
    df[df["date"] <= "2017-06-01"].to_csv(out, index=False)
    return src, out


async def test_adding_later_bars_changes_no_earlier_decision(cut_file):
    full, cut = cut_file
    families = ("setups", "trend", "ranking")  # the per-bar setups evaluate every symbol; the books decide too
    for when in ("2017-05-18", "2017-06-01"):
        a = await scan_at(CsvMarketData(full), parse_when(when), families=families)
        b = await scan_at(CsvMarketData(cut), parse_when(when), families=families)
        assert a.report.evaluated == b.report.evaluated > 400
        assert a.ranked == b.ranked and len(a.ranked) == 20 and a.ranked_of > 400  # the ranking book's ideas
        assert [s.id for s in a.report.issued] == [s.id for s in b.report.issued]
        assert a.report.issued == b.report.issued  # every field, evidence included
        for s in a.report.issued:
            assert s.issued_at <= parse_when(when)


def test_scan_command_prints_signals_with_every_field(cut_file):
    full, _ = cut_file
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "scan", "--data", str(full), "--as-of", "2017-06-01",
                           "--json"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["as_of"].startswith("2017-06-02T00:00") and out["universe"] >= 500
    for s in out["signals"]:
        assert {"entry", "target", "stop", "risk_reward", "confidence", "position_size", "expires_at",
                "reasoning", "evidence"} <= set(s)
        assert s["issued_at"] <= out["as_of"]


def test_scan_rejects_a_missing_path():
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "scan", "--data", "/nonexistent", "--as-of", "2017-06-01"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "signalbot scan:" in proc.stderr
