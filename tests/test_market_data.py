"""Market data: resampling, the simulated market and the CSV provider (real files when present)."""
from __future__ import annotations

import asyncio
import gzip
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.clock import FixedClock
from core.domain import BAR_COLUMNS, AssetClass, Timeframe
from core.errors import DataValidationError, MarketDataError, UnknownSymbolError
from core.market_data import CsvMarketData, SimulatedMarket, default_data_dir, resample_bars
from core.market_data.resample import EQUITY_SESSION_OPEN, default_anchor
from core.ports import MarketData

UTC = timezone.utc
TFS = (Timeframe.H1, Timeframe.H4, Timeframe.D1)


def bars(market: MarketData, symbol: str, tf: Timeframe, end: datetime, limit: int | None = None) -> pd.DataFrame:
    return asyncio.run(market.get_bars(symbol, tf, end=end, limit=limit))


def assert_conventions(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(BAR_COLUMNS)
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "time"
    assert str(frame.index.tz) == "UTC"
    assert all(frame[c].dtype == np.float64 for c in BAR_COLUMNS)
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    if len(frame):
        assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
        assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
        assert (frame[["open", "high", "low", "close"]] > 0).all().all()


def hourly(start: str, hours: int, symbol_close: float = 100.0) -> pd.DataFrame:
    index = pd.date_range(start, periods=hours, freq="1h", tz="UTC", name="time")
    close = symbol_close + np.arange(hours, dtype=float)
    return pd.DataFrame({"open": close - 0.5, "high": close + 1, "low": close - 1, "close": close,
                         "volume": np.ones(hours)}, index=index)


# -- resample_bars ------------------------------------------------------------------------------------


def test_resample_aggregates_and_drops_the_running_bin() -> None:
    src = hourly("2024-01-01 00:00", 10)  # 00:00..09:00, last closes 10:00
    out = resample_bars(src, Timeframe.H1, Timeframe.H4)
    assert list(out.index.hour) == [0, 4]  # the 08:00 bin runs until 12:00
    first = out.iloc[0]
    assert first["open"] == src["open"].iloc[0] and first["close"] == src["close"].iloc[3]
    assert first["high"] == src["high"].iloc[:4].max() and first["low"] == src["low"].iloc[:4].min()
    assert first["volume"] == 4.0
    assert_conventions(out)


def test_resample_end_and_gaps() -> None:
    src = hourly("2024-01-01 00:00", 10).drop(pd.Timestamp("2024-01-01 05:00", tz="UTC"))
    out = resample_bars(src, Timeframe.H1, Timeframe.H4, end=datetime(2024, 1, 1, 12, tzinfo=UTC))
    assert list(out.index.hour) == [0, 4, 8]  # an elapsed bin with a missing hour is still a bar
    assert out["volume"].tolist() == [4.0, 3.0, 2.0]
    early = resample_bars(src, Timeframe.H1, Timeframe.H4, end=datetime(2024, 1, 1, 7, 59, tzinfo=UTC))
    assert list(early.index.hour) == [0]


def test_resample_equity_anchor_and_daily_label() -> None:
    index = pd.DatetimeIndex([pd.Timestamp("2024-01-02 14:30", tz="UTC") + pd.Timedelta(hours=i) for i in range(7)],
                             name="time")
    src = hourly("2024-01-02", 7).set_axis(index)
    four = resample_bars(src, Timeframe.H1, Timeframe.H4, EQUITY_SESSION_OPEN, end=datetime(2024, 1, 3, tzinfo=UTC))
    assert [t.strftime("%H:%M") for t in four.index] == ["14:30", "18:30"]
    daily = resample_bars(src, Timeframe.H1, Timeframe.D1, end=datetime(2024, 1, 3, tzinfo=UTC))
    assert list(daily.index) == [pd.Timestamp("2024-01-02", tz="UTC")]
    assert resample_bars(src, Timeframe.H1, Timeframe.D1, end=datetime(2024, 1, 2, 23, 59, tzinfo=UTC)).empty


def test_resample_ignores_no_trade_placeholders_but_keeps_volume_free_series() -> None:
    # MANA-USDT 15m, 2020-09-10 11:00: the exchange writes a zero-volume bar at the previous close when nothing
    # traded; its 1h candle opens at the first trade (0.07712), not at the placeholder (0.07694).
    index = pd.date_range("2020-09-10 11:00", periods=4, freq="15min", tz="UTC", name="time")
    src = pd.DataFrame({"open": [0.07694, 0.07712, 0.07704, 0.07717], "high": [0.07694, 0.07728, 0.07726, 0.07761],
                        "low": [0.07694, 0.07687, 0.07689, 0.07710], "close": [0.07694, 0.07716, 0.07710, 0.07710],
                        "volume": [0.0, 4310.2, 27281.8, 36899.9]}, index=index)
    out = resample_bars(src, Timeframe.M15, Timeframe.H1).iloc[0]
    assert out.tolist() == [0.07712, 0.07761, 0.07687, 0.07710, pytest.approx(68491.9)]
    placeholder_high = src.assign(high=[0.08, 0.07728, 0.07726, 0.07761], low=[0.07, 0.07687, 0.07689, 0.07710])
    assert resample_bars(placeholder_high, Timeframe.M15, Timeframe.H1).iloc[0][["high", "low"]].tolist() == \
        [0.07761, 0.07687]
    fx = src.assign(volume=0.0)  # FX and indices carry no volume: every bar is priced
    assert resample_bars(fx, Timeframe.M15, Timeframe.H1).iloc[0].tolist() == [0.07694, 0.07761, 0.07687, 0.07710, 0.0]


def test_resample_equity_4h_follows_new_york_daylight_saving() -> None:
    # Yahoo's US 1h bars open at 09:30 New York time: 13:30 UTC in July (EDT), 14:30 UTC in January (EST).
    anchor = default_anchor(AssetClass.EQUITY, Timeframe.H4)
    for day, open_utc in (("2024-07-02", "13:30"), ("2024-01-02", "14:30")):
        index = pd.date_range(f"{day} {open_utc}", periods=7, freq="1h", tz="UTC", name="time")
        src = hourly(day, 7).set_axis(index)
        four = resample_bars(src, Timeframe.H1, Timeframe.H4, anchor, end=pd.Timestamp(f"{day} 23:59", tz="UTC"))
        first = pd.Timestamp(f"{day} {open_utc}", tz="UTC")
        assert list(four.index) == [first, first + pd.Timedelta(hours=4)]
        assert four["volume"].tolist() == [4.0, 3.0]  # 09:30-13:30 and 13:30-16:00 local, whatever the season
    assert default_anchor(AssetClass.CRYPTO, Timeframe.H4) == timedelta(0)


def test_resample_rejects_a_finer_target() -> None:
    with pytest.raises(ValueError):
        resample_bars(hourly("2024-01-01", 8), Timeframe.H4, Timeframe.H1)


# -- SimulatedMarket ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> SimulatedMarket:
    return SimulatedMarket(seed=7)


def test_sim_universe(sim: SimulatedMarket) -> None:
    assert isinstance(sim, MarketData) and sim.name == "simulated"
    by_class = pd.Series([i.asset_class for i in sim.instruments()]).value_counts()
    assert by_class[AssetClass.EQUITY] == 12 and by_class[AssetClass.CRYPTO] == 8
    assert by_class[AssetClass.FX] == 6 and by_class[AssetClass.INDEX] == 1
    btc = sim.instrument("btc/usdt")
    assert (btc.symbol, btc.quote_currency, btc.exchange) == ("BTC-USDT", "USDT", "binance")
    assert sim.instrument("AAPL").exchange == "NASDAQ" and sim.instrument("KO").exchange == "NYSE"
    assert list(sim.timeframes("EURUSD")) == list(TFS)
    with pytest.raises(UnknownSymbolError) as err:
        sim.instrument("APPL")
    assert "AAPL" in err.value.suggestions


@pytest.mark.parametrize("symbol", ["AAPL", "SPX", "BTC-USDT", "USDJPY"])
@pytest.mark.parametrize("tf", TFS)
def test_sim_bar_conventions(sim: SimulatedMarket, symbol: str, tf: Timeframe) -> None:
    frame = bars(sim, symbol, tf, sim.start, limit=300)
    assert len(frame) == (300 if tf is not Timeframe.D1 or symbol == "BTC-USDT" else 290)  # 400 calendar days
    assert_conventions(frame)


def test_sim_deterministic_whatever_the_call_order() -> None:
    start = datetime(2024, 6, 3, tzinfo=UTC)
    ends = [start + timedelta(days=d, hours=h) for d, h in ((90, 5), (3, 0), (45, 13), (200, 7))]
    a, b = SimulatedMarket(seed=3, start=start, history_days=60), SimulatedMarket(seed=3, start=start, history_days=60)
    first = {(s, tf, e): bars(a, s, tf, e) for e in ends for s in ("NVDA", "ETH-USDT", "GBPUSD") for tf in TFS}
    for (s, tf, e) in reversed(list(first)):
        assert bars(b, s, tf, e).equals(first[(s, tf, e)]), (s, tf, e)
    other = SimulatedMarket(seed=4, start=start, history_days=60)
    assert not bars(other, "NVDA", Timeframe.H1, ends[0]).equals(first[("NVDA", Timeframe.H1, ends[0])])


def test_sim_never_a_bar_after_end_and_never_revised(sim: SimulatedMarket) -> None:
    rng = np.random.default_rng(0)
    base = sim.start - timedelta(days=30)
    for symbol in ("MSFT", "SOL-USDT", "EURUSD", "SPX"):
        for tf in TFS:
            later = bars(sim, symbol, tf, base + timedelta(days=40))
            for minutes in rng.integers(0, 60 * 24 * 40, 12):
                end = base + timedelta(minutes=int(minutes))
                got = bars(sim, symbol, tf, end)
                assert (got.index + tf.duration <= end).all()
                closed = later[later.index + tf.duration <= end]
                assert got.equals(closed), (symbol, tf, end)  # every closed bar, none revised


def test_sim_clock_caps_end() -> None:
    clock = FixedClock(datetime(2025, 1, 6, 10, tzinfo=UTC))
    market = SimulatedMarket(clock=clock)
    frame = bars(market, "BTC-USDT", Timeframe.H1, datetime(2025, 2, 1, tzinfo=UTC))
    assert frame.index[-1] == pd.Timestamp("2025-01-06 09:00", tz="UTC")
    clock.advance(timedelta(hours=5))
    assert bars(market, "BTC-USDT", Timeframe.H1, datetime(2025, 2, 1, tzinfo=UTC)).index[-1].hour == 14


def test_sim_calendars(sim: SimulatedMarket) -> None:
    eq = bars(sim, "JPM", Timeframe.H1, sim.start)
    assert set(eq.index.strftime("%H:%M")) == {f"{h}:30" for h in range(14, 21)}
    assert eq.index.day_of_week.max() == 4
    fx = bars(sim, "EURUSD", Timeframe.H1, sim.start)
    assert fx.index.day_of_week.max() == 4 and len(set(fx.index.hour)) == 24
    crypto = bars(sim, "BTC-USDT", Timeframe.H1, sim.start)
    assert (np.diff(crypto.index.asi8) == np.diff(crypto.index.asi8)[0]).all()
    daily = bars(sim, "JPM", Timeframe.D1, sim.start)
    assert (daily.index == daily.index.normalize()).all()
    day = daily.index[-1]
    assert bars(sim, "JPM", Timeframe.D1, day + timedelta(hours=23, minutes=59)).index[-1] < day
    assert bars(sim, "JPM", Timeframe.D1, day + timedelta(days=1)).index[-1] == day


def test_sim_higher_timeframes_are_resampled_1h(sim: SimulatedMarket) -> None:
    h1 = bars(sim, "BTC-USDT", Timeframe.H1, sim.start)
    for tf in (Timeframe.H4, Timeframe.D1):
        pd.testing.assert_frame_equal(bars(sim, "BTC-USDT", tf, sim.start),
                                      resample_bars(h1, Timeframe.H1, tf, end=sim.start))


def daily_log_returns(market: MarketData, symbol: str, end: datetime) -> np.ndarray:
    close = bars(market, symbol, Timeframe.D1, end)["close"].to_numpy()
    return np.diff(np.log(close))


def test_sim_daily_volatility_by_class(sim: SimulatedMarket) -> None:
    vols: dict[AssetClass, list[float]] = {}
    for inst in sim.instruments():
        vols.setdefault(inst.asset_class, []).append(float(daily_log_returns(sim, inst.symbol, sim.start).std()))
    ranges = {AssetClass.EQUITY: (0.006, 0.06), AssetClass.INDEX: (0.005, 0.02),
              AssetClass.CRYPTO: (0.02, 0.11), AssetClass.FX: (0.002, 0.015)}
    for cls, (lo, hi) in ranges.items():
        assert all(lo < v < hi for v in vols[cls]), (cls, vols[cls])
    equity, crypto, fx = (float(np.median(vols[c])) for c in (AssetClass.EQUITY, AssetClass.CRYPTO, AssetClass.FX))
    assert 2.0 < crypto / equity < 6.0
    assert 0.2 < fx / equity < 0.7


def test_sim_volatility_clustering_and_fat_tails(sim: SimulatedMarket) -> None:
    acf, kurt = [], []
    for inst in sim.instruments():
        close = bars(sim, inst.symbol, Timeframe.H1, sim.start)["close"].to_numpy()
        r = np.diff(np.log(close))
        a = np.abs(r - r.mean())
        acf.append(np.mean([np.corrcoef(a[:-lag], a[lag:])[0, 1] for lag in (1, 2, 5, 10)]))
        kurt.append(pd.Series(r).kurt())
    assert min(acf) > 0.0 and np.median(acf) > 0.08
    assert np.median(kurt) > 2.0


def test_sim_sharp_drops_exist_and_partly_revert(sim: SimulatedMarket) -> None:
    drops, rebounds = 0, []
    for inst in sim.instruments():
        if inst.asset_class is not AssetClass.EQUITY:
            continue
        lc = np.log(bars(sim, inst.symbol, Timeframe.H1, sim.start)["close"].to_numpy())
        fall = lc[3:] - lc[:-3]  # over 3 bars
        hits = np.flatnonzero(fall <= np.log(0.96)) + 3
        events = hits[np.r_[True, np.diff(hits) > 10]]
        drops += len(events)
        rebounds += [lc[e + 21] - lc[e] for e in events if e + 21 < len(lc)]
    assert drops >= 20
    assert np.mean(rebounds) > 0.0


def test_sim_limit_and_errors(sim: SimulatedMarket) -> None:
    assert len(bars(sim, "KO", Timeframe.H1, sim.start, limit=0)) == 0
    assert bars(sim, "KO", Timeframe.H1, datetime(2000, 1, 1, tzinfo=UTC)).empty
    with pytest.raises(MarketDataError):
        bars(sim, "KO", Timeframe.M15, sim.start)
    with pytest.raises(UnknownSymbolError):
        bars(sim, "NOPE", Timeframe.H1, sim.start)
    with pytest.raises(ValueError):
        bars(sim, "KO", Timeframe.H1, datetime(2025, 1, 1))


# -- CsvMarketData on small files ---------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


BROKEN = """time,open,high,low,close,volume
2024-01-01T00:00:00Z,10,11,9,10.5,100
2024-01-01T01:00:00Z,10.5,11,10,,100
2024-01-01T02:00:00Z,10.5,abc,10,10.7,100
2024-01-01T03:00:00Z,-1,11,10,10.7,100
2024-01-01T04:00:00Z,10.5,10.6,10,10.7,100
2024-01-01T05:00:00Z,10.5,11,10.6,10.7,100
not-a-time,10.5,11,10,10.7,100
2024-01-01T06:00:00Z,10.5,11,10,10.7,100
2024-01-01T06:00:00Z,10.5,11,10,10.9,200
2024-01-01T07:00:00Z,10.9,11,10,10.8,100
"""


def test_csv_drops_and_counts_bad_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    market = CsvMarketData(write(tmp_path / "XYZ-USDT_1h.csv", BROKEN))
    with caplog.at_level(logging.WARNING, logger="core.market_data.csv_files"):
        frame = bars(market, "XYZ-USDT", Timeframe.H1, datetime(2024, 1, 2, tzinfo=UTC))
    assert list(frame.index.hour) == [0, 6, 7]
    assert frame.loc["2024-01-01 06:00", "close"].item() == 10.9  # duplicate: the last row wins
    assert_conventions(frame)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    for part in ("XYZ-USDT_1h.csv", "dropped 7 of 10", "empty or non-numeric: 2", "non-positive price: 1",
                 "high/low inconsistent: 2", "bad time or symbol: 1", "duplicate time: 1"):
        assert part in warnings[0]
    assert market.instrument("XYZ-USDT").asset_class is AssetClass.CRYPTO


def test_csv_wholly_malformed_files_raise(tmp_path: Path) -> None:
    cases = {
        "NOCOLS_1h.csv": "time,price\n2024-01-01T00:00:00Z,1\n",
        "ALLBAD_1h.csv": "time,open,high,low,close,volume\nx,1,1,1,1,1\n2024-01-01,a,b,c,d,e\n",
        "EMPTY_1h.csv": "time,open,high,low,close,volume\n",
    }
    for name, text in cases.items():
        market = CsvMarketData(write(tmp_path / name, text))
        with pytest.raises(DataValidationError, match=name):
            bars(market, name.split("_")[0], Timeframe.H1, datetime(2025, 1, 1, tzinfo=UTC))
    garbage = tmp_path / "JUNK_1h.csv.gz"
    garbage.write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataValidationError, match="JUNK_1h.csv.gz"):
        CsvMarketData(garbage)


def test_csv_long_file_and_derived_timeframes(tmp_path: Path) -> None:
    rows = ["date,symbol,open,high,low,close,volume"]
    for d in pd.date_range("2024-01-01", periods=5, freq="D"):
        rows += [f"{d:%Y-%m-%d},AAA,10,11,9,10,5", f"{d:%Y-%m-%d},BBB,20,21,19,20,5"]
    write(tmp_path / "equities" / "long.csv", "\n".join(rows) + "\n")
    write(tmp_path / "fx" / "EURUSD_1h_x.csv", hourly("2024-01-01", 30).reset_index().assign(
        time=lambda f: f["time"].dt.strftime("%Y-%m-%dT%H:%M:%S")).to_csv(index=False))
    market = CsvMarketData(tmp_path)
    assert {i.symbol for i in market.instruments()} == {"AAA", "BBB", "EURUSD"}
    assert list(market.timeframes("AAA")) == [Timeframe.D1]
    assert list(market.timeframes("eur/usd")) == list(TFS)
    end = datetime(2024, 1, 4, tzinfo=UTC)
    assert bars(market, "AAA", Timeframe.D1, end).index[-1] == pd.Timestamp("2024-01-03", tz="UTC")
    four = bars(market, "EURUSD", Timeframe.H4, end)
    assert len(four) == 7 and four["volume"].iloc[0] == 4.0  # 30 hours: 7 complete 4h bins
    first, last = market.data_range()
    assert first == datetime(2024, 1, 1, tzinfo=UTC) and last == datetime(2024, 1, 6, tzinfo=UTC)


def test_default_data_dir_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIGNALS_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("SIGNALS_DATA_DIR")
    assert default_data_dir() == Path(__file__).resolve().parents[1].parent / "shared" / "data"


# -- CsvMarketData on the shared data -----------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / "equities").is_dir() or not (path / "crypto").is_dir():
        pytest.skip(f"shared market data not found at {path} (set SIGNALS_DATA_DIR)")
    return path


@pytest.fixture(scope="module")
def real(data_dir: Path) -> CsvMarketData:
    return CsvMarketData(data_dir)


@pytest.mark.data
def test_real_equities_load_lazily(data_dir: Path) -> None:
    market = CsvMarketData(data_dir)
    aapl = bars(market, "AAPL", Timeframe.D1, datetime(2018, 1, 1, tzinfo=UTC))
    assert not any("crypto" in p.parts for p in market._parsed), "equities must not parse crypto files"
    assert_conventions(aapl)
    assert aapl.loc["2017-12-29", "close"].item() == pytest.approx(169.23)
    equities = [i for i in market.instruments() if i.asset_class is AssetClass.EQUITY]
    assert len(equities) == 505 and all(i.exchange == "US" for i in equities)
    assert list(market.timeframes("AAPL")) == [Timeframe.D1]
    last = pd.Timestamp("2018-02-07", tz="UTC")
    assert bars(market, "AAPL", Timeframe.D1, datetime(2018, 2, 7, 23, tzinfo=UTC)).index[-1] < last
    assert bars(market, "AAPL", Timeframe.D1, datetime(2018, 2, 8, tzinfo=UTC)).index[-1] == last


@pytest.mark.data
def test_real_crypto_fx_and_benchmarks(real: CsvMarketData) -> None:
    end = datetime(2022, 1, 1, tzinfo=UTC)
    btc = bars(real, "BTC-USDT", Timeframe.H1, end)
    assert_conventions(btc)
    assert len(btc) > 35_000 and btc.index[0] == pd.Timestamp("2017-08-17 04:00", tz="UTC")
    assert real.instrument("BTC-USDT").quote_currency == "USDT"
    assert list(real.timeframes("SOL-USDT")) == [Timeframe.M15, *TFS]
    assert list(real.timeframes("EURUSD")) == list(TFS)
    assert_conventions(bars(real, "EURUSD", Timeframe.D1, end, limit=50))
    for symbol in ("SPX", "VIX"):
        assert real.instrument(symbol).asset_class is AssetClass.INDEX
        assert_conventions(bars(real, symbol, Timeframe.D1, end, limit=100))


@pytest.mark.data
def test_real_no_future_bars(real: CsvMarketData) -> None:
    rng = np.random.default_rng(1)
    cases = [("BTC-USDT", tf) for tf in TFS] + [("EURUSD", Timeframe.H4), ("MSFT", Timeframe.D1), ("SPX", Timeframe.D1)]
    for symbol, tf in cases:
        for minutes in rng.integers(0, 60 * 24 * 365 * 4, 8):
            end = datetime(2017, 9, 1, tzinfo=UTC) + timedelta(minutes=int(minutes))
            got = bars(real, symbol, tf, end, limit=200)
            assert len(got) and (got.index + tf.duration <= end).all()


@pytest.mark.data
@pytest.mark.parametrize("target", [Timeframe.H4, Timeframe.D1])
def test_real_resampled_btc_matches_native(real: CsvMarketData, target: Timeframe) -> None:
    end = datetime(2022, 1, 1, tzinfo=UTC)
    h1 = bars(real, "BTC-USDT", Timeframe.H1, end)
    native = bars(real, "BTC-USDT", target, end)
    ours = resample_bars(h1, Timeframe.H1, target)
    hours = pd.Series(1, index=h1.index).groupby(h1.index.floor(target.pandas_freq)).sum()
    full = hours.index[hours == target.duration // timedelta(hours=1)]
    common = full.intersection(native.index).intersection(ours.index)
    assert len(common) > 300
    pd.testing.assert_frame_equal(ours.loc[common], native.loc[common], rtol=1e-9, atol=1e-9)
