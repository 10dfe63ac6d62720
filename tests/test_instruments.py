"""The instrument registry (universe, provider symbols, search) and the trading calendars."""
from __future__ import annotations

import gzip
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import AssetClass
from core.errors import UnknownSymbolError
from core.instruments import (
    CCXT,
    CRYPTO_24_7,
    FX_24_5,
    XNYS,
    YAHOO,
    InstrumentRecord,
    InstrumentRegistry,
    default_registry,
    get_calendar,
    nyse_holidays,
    sessions,
)
from core.instruments.calendars import easter_sunday, nyse_early_closes

UTC = timezone.utc


@pytest.fixture(scope="module")
def registry() -> InstrumentRegistry:
    return default_registry()


# -- the universe -------------------------------------------------------------------------------------


def test_universe_has_what_issue_3_asks_for(registry: InstrumentRegistry) -> None:
    by_class = {cls: registry.records([cls]) for cls in AssetClass}
    assert len(registry) >= 500
    assert len(by_class[AssetClass.EQUITY]) == 505
    assert len(by_class[AssetClass.CRYPTO]) >= 30
    assert len(by_class[AssetClass.FX]) >= 20
    assert {"SPX", "VIX"} <= {r.symbol for r in by_class[AssetClass.INDEX]}
    for rec in registry:
        assert rec.exchange and rec.quote_currency and rec.calendar
        get_calendar(rec.calendar)
    assert all(r.sector for r in by_class[AssetClass.EQUITY])
    assert sum(bool(r.name) for r in by_class[AssetClass.EQUITY]) >= 500


def test_equities_are_exactly_the_shared_data_symbols(registry: InstrumentRegistry, shared_data) -> None:
    path = shared_data / "equities" / "sp500_daily_2013-02-08_2018-02-07.csv.gz"
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        col = header.index("symbol")
        symbols = {line.split(",")[col] for line in fh}
    assert {r.symbol for r in registry.records([AssetClass.EQUITY])} == symbols


def test_crypto_covers_the_shared_data_pairs(registry: InstrumentRegistry, shared_data) -> None:
    pairs = {p.name.split("_")[0] for p in (shared_data / "crypto").glob("*.csv.gz")}
    assert len(pairs) == 32
    assert pairs <= {r.symbol for r in registry.records([AssetClass.CRYPTO])}


@pytest.mark.parametrize(("symbol", "provider", "expected"), [
    ("BRK.B", YAHOO, "BRK-B"), ("BF.B", YAHOO, "BF-B"), ("AAPL", YAHOO, "AAPL"), ("EURUSD", YAHOO, "EURUSD=X"),
    ("SPX", YAHOO, "^GSPC"), ("VIX", YAHOO, "^VIX"), ("BTC-USDT", YAHOO, "BTC-USD"), ("BTC-USDT", CCXT, "BTC/USDT"),
])
def test_provider_symbols(registry: InstrumentRegistry, symbol: str, provider: str, expected: str) -> None:
    assert registry.provider_symbol(symbol, provider) == expected


def test_listing_facts(registry: InstrumentRegistry) -> None:
    aapl, btc, eur, spx = (registry.get(s) for s in ("AAPL", "BTC-USDT", "EURUSD", "SPX"))
    assert (aapl.asset_class, aapl.calendar, aapl.quote_currency, aapl.exchange) == (AssetClass.EQUITY, "XNYS", "USD", "NASDAQ")
    assert aapl.sector == "Information Technology" and aapl.name.startswith("Apple")
    assert (btc.asset_class, btc.calendar, btc.quote_currency, btc.exchange) == (AssetClass.CRYPTO, "24/7", "USDT", "binance")
    assert (eur.asset_class, eur.calendar, eur.quote_currency) == (AssetClass.FX, "24/5", "USD")
    assert (spx.asset_class, spx.calendar) == (AssetClass.INDEX, "XNYS")
    assert aapl.instrument.symbol == "AAPL" and aapl.instrument.sector == aapl.sector


@pytest.mark.parametrize(("spelling", "symbol"), [
    ("aapl", "AAPL"), ("brk-b", "BRK.B"), ("BRKB", "BRK.B"), ("btc/usdt", "BTC-USDT"), ("btcusdt", "BTC-USDT"),
    ("eur/usd", "EURUSD"), ("^GSPC", "SPX"), ("EURUSD=X", "EURUSD"), (" vix ", "VIX"),
])
def test_get_accepts_usual_spellings(registry: InstrumentRegistry, spelling: str, symbol: str) -> None:
    assert registry.get(spelling).symbol == symbol
    assert spelling in registry


def test_get_unknown_raises_with_suggestions(registry: InstrumentRegistry) -> None:
    with pytest.raises(UnknownSymbolError) as err:
        registry.get("APPL")
    assert "AAPL" in err.value.suggestions and len(err.value.suggestions) <= 3
    with pytest.raises(UnknownSymbolError):
        registry.get("NOPE-NOT-A-THING")


# -- search -------------------------------------------------------------------------------------------


def test_search_bank_finds_banks(registry: InstrumentRegistry) -> None:
    hits = [r.symbol for r in registry.search("bank")]
    assert {"JPM", "BAC", "C", "WFC", "USB", "PNC"} <= set(hits)
    assert hits.index("BAC") < hits.index("AAPL") if "AAPL" in hits else True
    assert "XOM" not in hits and "AAPL" not in hits
    assert [r.symbol for r in registry.search("BANK")] == hits  # case-insensitive


@pytest.mark.parametrize(("query", "expected"), [
    ("apple", "AAPL"), ("AAPL", "AAPL"), ("microsoft", "MSFT"), ("semiconductor", "NVDA"), ("chip", "INTC"),
    ("utilities", "DUK"), ("bitcoin", "BTC-USDT"), ("crypto", "ETH-USDT"), ("euro", "EURUSD"), ("yen", "USDJPY"),
    ("volatility", "VIX"), ("reit", "SPG"), ("oil gas", "XOM"), ("health care", "UNH"),
])
def test_search_by_symbol_name_sector_industry(registry: InstrumentRegistry, query: str, expected: str) -> None:
    assert expected in [r.symbol for r in registry.search(query)]


def test_search_ranks_exact_symbol_first_and_limits(registry: InstrumentRegistry) -> None:
    assert registry.search("c")[0].symbol == "C"
    assert registry.search("aapl")[0].symbol == "AAPL"
    assert len(registry.search("bank", limit=5)) == 5
    assert registry.search("   ") == [] and registry.search("zzzqqq") == []
    assert all(r.asset_class is AssetClass.FX for r in registry.search("usd", asset_classes=[AssetClass.FX]))


def test_registry_refuses_duplicates() -> None:
    rec = InstrumentRecord("X", AssetClass.EQUITY, "X Corp", "NYSE", "USD", "XNYS")
    with pytest.raises(ValueError):
        InstrumentRegistry([rec, rec])


@given(st.text(max_size=30))
def test_search_and_find_never_crash(text: str) -> None:
    reg = default_registry()
    hits = reg.search(text, limit=10)
    assert len(hits) <= 10
    found = reg.find(text)
    assert found is None or found.symbol in reg


# -- calendars ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("year", "expected"), [
    (2010, ["2010-01-01", "2010-01-18", "2010-02-15", "2010-04-02", "2010-05-31", "2010-07-05", "2010-09-06",
            "2010-11-25", "2010-12-24"]),
    (2012, ["2012-01-02", "2012-01-16", "2012-02-20", "2012-04-06", "2012-05-28", "2012-07-04", "2012-09-03",
            "2012-10-29", "2012-10-30", "2012-11-22", "2012-12-25"]),
    (2021, ["2021-01-01", "2021-01-18", "2021-02-15", "2021-04-02", "2021-05-31", "2021-07-05", "2021-09-06",
            "2021-11-25", "2021-12-24"]),
    (2022, ["2022-01-17", "2022-02-21", "2022-04-15", "2022-05-30", "2022-06-20", "2022-07-04", "2022-09-05",
            "2022-11-24", "2022-12-26"]),
    (2024, ["2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27", "2024-06-19", "2024-07-04",
            "2024-09-02", "2024-11-28", "2024-12-25"]),
    (2027, ["2027-01-01", "2027-01-18", "2027-02-15", "2027-03-26", "2027-05-31", "2027-06-18", "2027-07-05",
            "2027-09-06", "2027-11-25", "2027-12-24"]),
])
def test_nyse_holidays(year: int, expected: list[str]) -> None:
    assert sorted(d.isoformat() for d in nyse_holidays(year)) == expected


def test_saturday_new_year_is_not_observed_and_juneteenth_starts_2022() -> None:
    assert XNYS.is_session(date(2021, 12, 31))  # New Year 2022 fell on a Saturday
    assert XNYS.is_session(date(2021, 6, 18)) and XNYS.is_session(date(2020, 6, 19))
    assert not XNYS.is_session(date(2023, 6, 19))
    assert [easter_sunday(y) for y in (2018, 2019, 2024, 2030)] == [
        date(2018, 4, 1), date(2019, 4, 21), date(2024, 3, 31), date(2030, 4, 21)]
    with pytest.raises(ValueError):
        nyse_holidays(2031)


def test_nyse_sessions_and_hours() -> None:
    assert len(sessions(XNYS, date(2024, 1, 1), date(2024, 12, 31))) == 252
    assert sessions(XNYS, date(2024, 5, 24), date(2024, 5, 28)) == [date(2024, 5, 24), date(2024, 5, 28)]
    summer, winter = XNYS.session_bounds(date(2024, 7, 1)), XNYS.session_bounds(date(2024, 1, 2))
    assert summer == (datetime(2024, 7, 1, 13, 30, tzinfo=UTC), datetime(2024, 7, 1, 20, tzinfo=UTC))
    assert winter == (datetime(2024, 1, 2, 14, 30, tzinfo=UTC), datetime(2024, 1, 2, 21, tzinfo=UTC))
    assert XNYS.session_bounds(date(2024, 11, 29)) == (datetime(2024, 11, 29, 14, 30, tzinfo=UTC),
                                                       datetime(2024, 11, 29, 18, tzinfo=UTC))
    assert date(2024, 7, 3) in nyse_early_closes(2024) and date(2024, 12, 24) in nyse_early_closes(2024)
    assert XNYS.session_bounds(date(2024, 12, 25)) is None
    assert XNYS.is_open(datetime(2024, 7, 1, 14, tzinfo=UTC)) and not XNYS.is_open(datetime(2024, 7, 1, 20, tzinfo=UTC))
    with pytest.raises(ValueError):
        XNYS.is_open(datetime(2024, 7, 1, 14))


def test_fx_and_crypto_calendars() -> None:
    fri_close = datetime(2024, 6, 7, 21, tzinfo=UTC)  # 17:00 New York (EDT)
    assert FX_24_5.is_open(fri_close - timedelta(minutes=1)) and not FX_24_5.is_open(fri_close)
    assert not FX_24_5.is_open(datetime(2024, 6, 8, 12, tzinfo=UTC))
    assert not FX_24_5.is_open(datetime(2024, 6, 9, 20, 59, tzinfo=UTC))
    assert FX_24_5.is_open(datetime(2024, 6, 9, 21, tzinfo=UTC))
    assert not FX_24_5.is_session(date(2024, 6, 8)) and FX_24_5.is_session(date(2024, 6, 10))
    assert CRYPTO_24_7.is_open(datetime(2024, 6, 8, 3, tzinfo=UTC)) and CRYPTO_24_7.is_session(date(2024, 6, 9))
    assert get_calendar("24/7") is CRYPTO_24_7
    with pytest.raises(ValueError):
        get_calendar("XLON")


@given(st.dates(min_value=date(2010, 1, 1), max_value=date(2030, 12, 31)))
def test_nyse_calendar_properties(day: date) -> None:
    holidays = nyse_holidays(day.year)
    assert 8 <= len(holidays) <= 12  # 8 when New Year falls on a Saturday (2011, 2022)
    assert all(h.weekday() < 5 for h in holidays)
    if day.weekday() >= 5 or day in holidays:
        assert not XNYS.is_session(day) and XNYS.session_bounds(day) is None
    else:
        opens, closes = XNYS.session_bounds(day) or (None, None)
        assert opens is not None and closes is not None
        assert timedelta(hours=3, minutes=30) <= closes - opens <= timedelta(hours=6, minutes=30)
