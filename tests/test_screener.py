"""/screener: filters parsed with clear errors, every filter applied to the same analysis /signal shows."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.app import build_services
from bot.commands.registry import Caller, dispatch
from bot.commands.screener import clear_screen_cache, screen_rows
from bot.settings import Settings
from bot.views.text import render_text
from core.clock import FixedClock
from core.errors import UserInputError
from core.market_data import SimulatedMarket
from core.screener import parse_filters
from tests.conftest import MECHANICS_FAMILIES, utc

NOW = utc(2025, 6, 10, 15)
ME = Caller("telegram", "1", "1", "A")


@pytest.fixture
async def services(tmp_path: Path):
    clock = FixedClock(NOW)
    market = SimulatedMarket(seed=7, start=NOW, history_days=400, clock=clock)
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:", backtest_reports_dir="",
                        families=MECHANICS_FAMILIES, _env_file=None)
    svc = await build_services(settings, market, clock)
    clear_screen_cache()
    yield svc
    await svc.store.close()


def test_filters_parse_and_bad_ones_say_why():
    fs = parse_filters(["rsi", "<", "30", "Sector=Tech", "class=stocks", "score>=0.5"])
    assert [str(f) for f in fs] == ["rsi<30", "sector=tech", "class=equity", "score>=0.5"]
    for bad, why in (("rsi<<3", "not a filter"), ("foo=1", "Unknown filter field"), ("rsi<abc", "needs a number"),
                     ("trend=sideways", "one of up, down, flat"), ("sector>3", "takes ="), ("rsi<nan", "finite")):
        with pytest.raises(UserInputError, match=why):
            parse_filters([bad])


async def test_every_row_passes_every_filter_and_matches_the_signal_analysis(services):
    svc = services
    everything, with_data = await screen_rows(svc, [])
    assert with_data == len(everything) == len(svc.market.instruments())  # the simulated universe
    fs = parse_filters(["rsi<60", "class=crypto"])
    rows, _ = await screen_rows(svc, fs)
    expected = {r.symbol for r in everything if r.rsi < 60 and r.asset_class == "crypto"}
    assert {r.symbol for r in rows} == expected and expected
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    one = rows[0]
    analysis = await svc.signal_service.analyse(one.symbol)
    assert one.rsi == pytest.approx(analysis.snapshot["rsi_14"]) and one.score == pytest.approx(analysis.setup.score)

    out = render_text(await dispatch(svc.registry, svc, ME, "/screener rsi<60 class=crypto"))
    crypto = sum(1 for r in everything if r.asset_class == "crypto")
    assert re.search(rf"{len(rows)} of {crypto} instruments pass rsi<60 class=crypto", out), out
    tech = render_text(await dispatch(svc.registry, svc, ME, "/screener class=equity sector=information"))
    assert "AAPL" in tech and "BTC-USDT" not in tech
    assert "No instrument passes" in render_text(await dispatch(svc.registry, svc, ME, "/screener rsi<0"))
    assert "Unknown filter field" in render_text(await dispatch(svc.registry, svc, ME, "/screener foo=1"))
