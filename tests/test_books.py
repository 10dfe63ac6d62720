"""Books (core.books): the trend and ranking families decide from bars closed by the decision time only, exit
through the lifecycle at the next open, and size by volatility within the stop budget."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.backtest.walk import Backtester, BacktestConfig, book_bars
from core.backtest.candidates import Series
from core.books.base import BookBars, Record
from core.books.ranking import RankingBook, RankingConfig
from core.books.ranking_features import _beta_and_idio, _residual_momentum
from core.books.trend import TrendBook, TrendConfig
from core.domain import AssetClass, Direction, Instrument, Signal, SignalStatus, Timeframe
from core.labels import rule_trades
from core.lifecycle import track
from core.models.lgbm import TreeParams
from core.risk import RiskConfig, RiskManager, position_size, vol_target_size
from tests.conftest import utc
from tests.test_lifecycle import frame, signal


# --- lifecycle: the rule's exit -------------------------------------------------------------------------------

def test_a_rule_exit_fills_at_the_next_open_with_its_own_status():
    s = signal(target=150.0, stop=50.0)
    bars = frame([(100, 102, 99, 101), (101, 103, 100, 102), (104, 105, 103, 104)])
    o = track(s, bars, costs_bps=10, exit_at=utc(2024, 1, 4))  # decided at the close of the second bar
    assert o is not None and o.status is SignalStatus.EXIT
    assert o.exit_price == 104 and o.exit_time == utc(2024, 1, 4) and o.bars_held == 2
    assert o.net_return == pytest.approx(104 / 100 - 1 - 0.002)


def test_a_stop_before_the_rule_exit_still_counts_as_the_stop():
    s = signal(target=150.0, stop=97.0)
    bars = frame([(100, 101, 96, 98), (98, 99, 97.5, 98), (99, 99, 98, 98)])
    o = track(s, bars, exit_at=utc(2024, 1, 4))
    assert o is not None and o.status is SignalStatus.STOP and o.exit_price == 97


def test_rule_trades_enter_after_the_flag_and_leave_after_the_exit_flag():
    n = 8
    times = np.arange(n, dtype=np.int64) * 10
    block = np.vstack([np.arange(100, 100 + n, dtype=float)] * 4 + [np.ones(n)])  # open = close = 100 + i
    entry = np.zeros(n, bool)
    entry[1] = True
    exit_ = np.zeros(n, bool)
    exit_[4] = True
    t = rule_trades(times, times + 10, block, entry, exit_, 1, np.full(n, 1.0), 50, 0.0)
    assert t.entry_pos.tolist() == [1]
    assert t.net_return[0] == pytest.approx(105 / 102 - 1)  # filled at bar 2's open, out at bar 5's open
    assert t.end_ns.tolist() == [60]  # known once bar 5 (the exit bar) has closed


# --- sizing and the expectation gate ---------------------------------------------------------------------------

def test_vol_target_size_never_exceeds_the_stop_budget_or_the_cap():
    assert vol_target_size(100, 90, 0.80, 0.02) == pytest.approx(0.025)  # volatility binds
    assert vol_target_size(100, 99, 0.05, 0.10) == position_size(100, 99)  # stop budget (1 % at a 1 % stop) binds
    assert vol_target_size(100, 90, 0.0, 0.10) == 0.0


def test_the_risk_manager_refuses_an_idea_whose_record_loses_on_average():
    base = signal(target=130.0, stop=90.0)
    losing = replace(base, strategy="trend", confidence=35, evidence={"expected_return": -0.001})
    winning = replace(base, strategy="trend", confidence=35, evidence={"expected_return": 0.01})
    rm = RiskManager(RiskConfig(costs_bps=10))
    assert "expected return" in (rm.quality(losing) or "")
    assert rm.quality(winning) is None  # a record's win share is not held to the score minimum of 40


def test_one_asset_class_never_suggests_more_than_the_gross_cap():
    base = replace(signal(target=130.0, stop=90.0), strategy="trend", confidence=35,
                   evidence={"expected_return": 0.01})
    held = [replace(base, id=f"H{k}", symbol=f"C{k}", position_size=0.2) for k in range(4)]  # 80 % of equity
    rm = RiskManager(RiskConfig(costs_bps=10))
    assert rm.review(replace(base, symbol="NEW", position_size=0.2), held, None).approved  # 100 %: at the cap
    refused = rm.review(replace(base, symbol="NEW", position_size=0.25), held, None)
    assert not refused.approved and "gross cap" in refused.reason
    other = replace(base, symbol="EURUSD", asset_class=AssetClass.FX, position_size=0.5)
    assert rm.review(other, held, None).approved  # another class has its own budget


def test_a_record_counts_wins_mean_and_worst_case():
    rec = Record.of(np.array([0.1, -0.05, 0.02, np.nan, -0.01]), "x")
    assert rec is not None and rec.trades == 4 and rec.win_rate == 0.5
    assert rec.mean == pytest.approx(0.015) and rec.worst < -0.01


# --- the trend book ---------------------------------------------------------------------------------------------

def trending_bars(symbol: str, seed: int, n: int = 900, tf: Timeframe = Timeframe.D1) -> BookBars:
    rng = np.random.default_rng(seed)
    drift = np.where((np.arange(n) // 150) % 2 == 0, 0.004, -0.004)  # alternating up and down trends
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.02, n)))
    opn = np.r_[close[0], close[:-1]]
    hi, lo = np.maximum(opn, close) * 1.01, np.minimum(opn, close) * 0.99
    step = int(tf.duration.total_seconds()) * 10**9
    open_ns = pd.Timestamp("2019-01-01", tz="UTC").value + np.arange(n, dtype=np.int64) * step
    return BookBars(symbol, AssetClass.CRYPTO, tf, open_ns, open_ns + step,
                    np.vstack([opn, hi, lo, close, np.full(n, 1e6)]))


def truncated(b: BookBars, t_ns: int) -> BookBars:
    keep = b.close_ns <= t_ns
    return BookBars(b.symbol, b.asset_class, b.timeframe, b.open_ns[keep], b.close_ns[keep], b.block[:, keep])


def crypto_universe() -> dict:
    return {(s, Timeframe.D1): trending_bars(s, k) for k, s in enumerate(("BTC-USDT", "ETH-USDT", "XRP-USDT",
                                                                         "ADA-USDT"))}


def test_trend_decisions_read_only_bars_closed_by_the_decision():
    bars = crypto_universe()
    cfg = TrendConfig(min_record=3)
    full = TrendBook(cfg, {AssetClass.CRYPTO: (Timeframe.D1,)})
    full.prepare(bars)
    checked = entries = 0
    for p in range(450, 900, 37):
        t = int(bars[("BTC-USDT", Timeframe.D1)].close_ns[p])
        past = TrendBook(cfg, {AssetClass.CRYPTO: (Timeframe.D1,)})
        past.prepare({k: truncated(b, t) for k, b in bars.items()})
        a, b = full.decide(t, list(bars), []), past.decide(t, list(bars), [])
        assert [s.id for s in a.entries] == [s.id for s in b.entries]
        for x, y in zip(a.entries, b.entries):
            assert (x.entry, x.stop, x.target, x.position_size, x.confidence) == pytest.approx(
                (y.entry, y.stop, y.target, y.position_size, y.confidence))
            assert x.evidence["record"] == y.evidence["record"]
        checked += 1
        entries += len(a.entries)
    assert checked >= 10 and entries > 0


def test_trend_entries_are_long_in_the_up_trend_sized_by_volatility_and_exit_when_the_trend_ends():
    bars = crypto_universe()
    book = TrendBook(TrendConfig(min_record=3), {AssetClass.CRYPTO: (Timeframe.D1,)})
    book.prepare(bars)
    btc = bars[("BTC-USDT", Timeframe.D1)]
    seen_entry = seen_exit = False
    held: list[Signal] = []
    entries: list[Signal] = []
    for p in range(300, 900):
        t = int(btc.close_ns[p])
        d = book.decide(t, list(bars), held)
        gone = {e.signal_id for e in d.exits}
        for e in d.exits:
            assert "average" in e.reason
        held = [s for s in held if s.id not in gone] + d.entries
        entries += d.entries
        for s in d.entries:
            seen_entry = True
            assert s.direction is Direction.LONG and s.strategy == "trend" and s.stop < s.entry < s.target
            assert 0 < s.position_size <= position_size(s.entry, s.stop)
            assert s.evidence["expected_return"] > 0 and "Record:" in s.reasoning
            assert s.expires_at - s.issued_at == timedelta(days=90)
        seen_exit |= bool(gone)
    assert seen_entry and seen_exit
    from bot.views.signals import signal_doc
    from bot.views.text import render_text

    s = entries[-1]
    text = render_text(signal_doc(s))
    rec = s.evidence["record"]
    assert f"{s.confidence}% of the last {rec['trades']} trades of this rule won after costs" in text
    assert "Expected return" in text and f"{s.evidence['expected_return'] * 100:+.2f}%" in text
    assert "Worst case" in text and f"{s.evidence['worst_case'] * 100:+.2f}%" in text
    assert "not a probability" not in text


# --- the ranking book ---------------------------------------------------------------------------------------------

def stock_universe(n_stocks: int = 60, days: int = 700) -> dict:
    """Stocks whose next month follows their last year a little (a momentum to find) plus noise."""
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2015-01-01", periods=days, tz="UTC")
    open_ns = dates.as_unit("ns").asi8.astype(np.int64)
    out = {}
    quality = rng.normal(0, 0.0008, n_stocks)
    for j in range(n_stocks):
        r = quality[j] + rng.normal(0, 0.015, days)
        close = 50 * np.exp(np.cumsum(r))
        opn = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, 0.002, days))
        block = np.vstack([opn, np.maximum(opn, close) * 1.005, np.minimum(opn, close) * 0.995, close,
                           rng.uniform(1e6, 2e6, days)])
        sym = f"S{j:02d}"
        out[(sym, Timeframe.D1)] = BookBars(sym, AssetClass.EQUITY, Timeframe.D1, open_ns,
                                            open_ns + 86_400 * 10**9, block)
    return out


SMALL = RankingConfig(train_days=250, min_train_rows=4_000, top_k=8, sector_cap=8, weekly=False,
                      trees=TreeParams(objective="regression", num_trees=30, num_leaves=7, min_data_in_leaf=50))


def test_residual_momentum_ranks_the_stock_with_alpha_first_not_the_one_with_beta():
    """In a rising market raw 12-1 momentum ranks the high-beta stock first for its beta alone; the residual
    momentum that replaced it ranks the stock that beat its beta (a small daily alpha) first."""
    rng = np.random.default_rng(1)
    days = 600
    m = 0.002 + 0.01 * rng.standard_normal(days)  # a rising market
    rets = {"beta2": 2.0 * m, "beta05": 0.5 * m, "alpha": 1.0 * m + 0.0006, **{f"s{i}": m for i in range(10)}}
    rets = {k: v + 0.004 * rng.standard_normal(days) for k, v in rets.items()}
    close = pd.DataFrame({k: 100 * np.cumprod(1 + v) for k, v in rets.items()})
    r = close / close.shift(1) - 1.0
    market = r.mean(axis=1)
    assert market.iloc[-252:-21].sum() > 0.2  # the premise: the market rose over the window
    beta, _ = _beta_and_idio(r, market)
    res = _residual_momentum(r, market, beta).iloc[-1]
    raw = (close.shift(21) / close.shift(252) - 1.0).iloc[-1]
    assert raw.idxmax() == "beta2" and res.idxmax() == "alpha"
    full = _residual_momentum(r, market, beta)
    assert full.iloc[:240].isna().all().all() and full.iloc[260:].notna().all().all()  # a (near) full year of past


def test_ranking_decisions_read_only_bars_closed_by_the_decision():
    bars = stock_universe()
    full = RankingBook(SMALL)
    full.prepare(bars)
    some = next(iter(bars.values()))
    checked = 0
    for p in (560, 640, 690):
        t = int(some.close_ns[p])
        past = RankingBook(SMALL)
        past.prepare({k: truncated(b, t) for k, b in bars.items()})
        a, b = full.decide(t, list(bars), []), past.decide(t, list(bars), [])
        assert a.entries and [s.id for s in a.entries] == [s.id for s in b.entries]
        assert [s.position_size for s in a.entries] == pytest.approx([s.position_size for s in b.entries])
        assert full.ranked_ideas(t)[:10] == past.ranked_ideas(t)[:10]
        checked += 1
    assert checked == 3


def test_ranking_models_train_on_labels_known_by_their_quarter_and_say_their_record():
    bars = stock_universe()
    book = RankingBook(SMALL)
    book.prepare(bars)
    some = next(iter(bars.values()))
    t = int(some.close_ns[650])
    d = book.decide(t, list(bars), [])
    model = book.model_at(650)
    assert model is not None and model.trained_at_ns <= t and model.record is not None
    first_day = pd.Timestamp(model.trained_at_ns - 86_400 * 10**9, unit="ns")
    assert first_day.month in (1, 4, 7, 10) and first_day.day <= 7  # the quarter's first trading day
    assert len(d.entries) == SMALL.top_k
    for s in d.entries:
        assert s.evidence["rank"] <= SMALL.top_k and s.strategy == "ranking" and s.direction is Direction.LONG
        assert s.confidence == round(model.record.win_rate * 100)
    # a held name that falls out of the buffer is sold; one still inside it is kept
    ranks = {sym: r for sym, r, _ in book.ranked_ideas(t)}
    worst = max(ranks, key=ranks.__getitem__)
    best = min(ranks, key=ranks.__getitem__)
    held = [replace(d.entries[0], id="held-worst", symbol=worst), replace(d.entries[0], id="held-best", symbol=best)]
    out = book.decide(t, list(bars), held)
    assert [e.signal_id for e in out.exits] == ["held-worst"] and "rank" in out.exits[0].reason
    assert all(s.symbol != best for s in out.entries)


def test_a_weekly_book_trades_only_on_the_first_trading_day_of_the_week():
    bars = stock_universe()
    book = RankingBook(replace(SMALL, weekly=True))
    book.prepare(bars)
    some = next(iter(bars.values()))
    traded = [p for p in range(600, 660) if book.decide(int(some.close_ns[p]), list(bars), []).entries]
    days = [pd.Timestamp(int(some.open_ns[p]), unit="ns") for p in traded]
    assert traded and all(d.day_of_week == 0 for d in days)  # this calendar has no Monday holidays


def test_the_crash_guard_shrinks_the_book_when_the_market_is_volatile():
    bars = stock_universe()
    book = RankingBook(SMALL)
    book.prepare(bars)
    calm = book.guard(650)
    book._market_vol[651] = 0.45  # three times the volatility the book is sized for
    assert calm == 1.0 and book.guard(651) == pytest.approx(1 / 3)


# --- through the backtester -----------------------------------------------------------------------------------

class _Bars:
    """A MarketData over BookBars, for the walk."""

    def __init__(self, bars: dict) -> None:
        self.bars = bars

    def instruments(self):
        return [Instrument(s, b.asset_class) for (s, _), b in self.bars.items()]

    def timeframes(self, symbol):
        return [tf for (s, tf) in self.bars if s == symbol]

    async def get_bars(self, symbol, timeframe, *, end, limit=None):
        b = self.bars[(symbol, timeframe)]
        idx = pd.DatetimeIndex(b.open_ns.view("datetime64[ns]")).tz_localize("UTC").rename("time")
        frame_ = pd.DataFrame(b.block.T, columns=["open", "high", "low", "close", "volume"], index=idx)
        return frame_[idx + timeframe.duration <= end]


async def test_the_walk_closes_book_signals_at_the_next_open_when_the_rule_says_so():
    from core.indicators import default_engine
    from core.signals.engine import SignalEngine

    bars = crypto_universe()
    book = TrendBook(TrendConfig(min_record=3, costs_bps=10), {AssetClass.CRYPTO: (Timeframe.D1,)})
    bt = Backtester(_Bars(bars), SignalEngine(default_engine()), RiskManager(RiskConfig(costs_bps=10)),
                    BacktestConfig(costs_bps=10, timeframes={}), [book])
    result = await bt.run(utc(2020, 1, 1), None)
    exits = [t for t in result.trades if t.outcome is not None and t.outcome.status is SignalStatus.EXIT]
    assert result.trades and exits
    for t in exits:
        s = Series.of(Instrument(t.signal.symbol, AssetClass.CRYPTO), Timeframe.D1,
                      await _Bars(bars).get_bars(t.signal.symbol, Timeframe.D1, end=utc(2100, 1, 1)))
        b = book_bars(s)
        k = int(np.searchsorted(b.open_ns, pd.Timestamp(t.outcome.exit_time).value))
        assert t.outcome.exit_price == b.block[0, k]  # the open of the bar after the rule's decision
        assert t.outcome.exit_time > t.signal.issued_at


# --- the report: figures from its own trade list -------------------------------------------------------------------

def crypto_csvs(tmp_path) -> object:  # noqa: ANN001
    folder = tmp_path / "crypto"
    folder.mkdir()
    names = ("BTC", "ETH", "XRP", "ADA", "SOL", "DOT", "LTC", "BNB", "EOS", "TRX", "XLM", "ATOM")
    for k, name in enumerate(names):
        b = trending_bars(f"{name}-USDT", 100 + k, n=1100)
        sym = b.symbol
        times = pd.to_datetime(b.open_ns, unit="ns").strftime("%Y-%m-%d %H:%M:%S")
        pd.DataFrame({"time": times, "open": b.block[0], "high": b.block[1], "low": b.block[2],
                      "close": b.block[3], "volume": b.block[4]}).to_csv(folder / f"{sym}_1d.csv", index=False)
    return folder


async def test_the_report_recomputes_from_its_trade_list_and_scores_against_bitcoin(tmp_path):
    from bot.cli.backtest import run_backtest

    out = await run_backtest(crypto_csvs(tmp_path), "2020-01-01", None, 10, progress=lambda f, s: None,
                             families=("trend",), variants=3)
    trades = out["trades"]
    closed = [t["net_return"] for t in trades if t["net_return"] is not None]
    assert len(trades) == out["signals"] > 0 and len(closed) == out["closed"]
    assert out["hit_rate"] == pytest.approx(sum(r > 0 for r in closed) / len(closed), abs=1e-6)
    assert out["avg_return"] == pytest.approx(float(np.mean(closed)), abs=1e-6)
    gains, losses = sum(r for r in closed if r > 0), -sum(r for r in closed if r <= 0)
    assert out["profit_factor"] == pytest.approx(gains / losses, rel=1e-5)
    assert any(t["status"] == "exit" for t in trades)
    ev = out["evaluation"]
    assert ev["benchmark"] == "BTC-USDT" and out["benchmark"]["symbol"] == "BTC-USDT"
    assert set(ev["by_family"]) == {"trend"} and ev["by_family"]["trend"]["trades"]["signals"] == len(trades)
    taken = [t for t in trades if t["taken"]]
    assert ev["book"]["positions"] == len(taken) == ev["book"]["taken"]["signals"]
    assert ev["variants_tried"] == 3 and ev["book"]["deflated_sharpe"]["trials"] == 3
    assert {"beta", "alpha_annual", "information_ratio", "annual_turnover", "cost_drag_annual"} <= set(ev["book"])
    assert "equal-weight crypto" in ev["benchmarks"] and [y["year"] for y in ev["by_year"]][0] == 2020
    assert set(ev["by_regime"]) >= {"trend", "volatility"}
    assert ev["breaker"]["limits"]["window"] == 50


def trending_market():  # noqa: ANN201
    from core.backtest.market import FrameMarket

    frames, insts = {}, []
    for k, name in enumerate(("BTC", "ETH", "XRP", "ADA", "SOL", "DOT", "LTC", "BNB", "EOS", "TRX", "XLM", "ATOM")):
        b = trending_bars(f"{name}-USDT", 100 + k, n=1000)
        idx = pd.DatetimeIndex(b.open_ns.view("datetime64[ns]")).tz_localize("UTC").rename("time")
        frames[(b.symbol, Timeframe.D1)] = pd.DataFrame(b.block.T, columns=["open", "high", "low", "close", "volume"],
                                                        index=idx)
        insts.append(Instrument(b.symbol, AssetClass.CRYPTO))
    return FrameMarket(insts, frames)


async def test_the_live_service_issues_and_exits_exactly_what_the_backtest_does():
    from core.indicators import default_engine
    from core.signals.engine import SignalEngine
    from tests.test_backtest import assert_same_outcome, close_times, live_walk

    market = trending_market()
    times = close_times(market, utc(2000, 1, 1), utc(2100, 1, 1))[-160:]
    tfs = {AssetClass.CRYPTO: (Timeframe.D1,)}
    risk = RiskManager(RiskConfig(costs_bps=10.0))
    engine = SignalEngine(default_engine())
    live, live_outcomes = await live_walk(market, engine, risk, 10.0, times, books=(TrendBook(TrendConfig(), tfs),),
                                          setups=False)
    bt = Backtester(market, engine, risk, BacktestConfig(costs_bps=10.0, timeframes={}, breaker=None),
                    [TrendBook(TrendConfig(), tfs)])
    result = await bt.run(times[0] - timedelta(microseconds=1), times[-1])
    assert len(live) >= 5 and [t.signal for t in result.trades] == live  # every field, evidence included
    assert any(o is not None and o.status is SignalStatus.EXIT for o in live_outcomes.values())
    for t in result.trades:
        assert_same_outcome(live_outcomes[t.signal.id], t.outcome)


async def test_the_live_breaker_pauses_and_resumes_exactly_as_the_backtest_walk_does():
    """Tight limits, so the breaker trips and resumes inside 300 days: the live service keeps in shadow (stored,
    tracked, not published) exactly the signals the walk keeps out of its trades, and sends exactly the rest."""
    from core.breaker import BreakerLimits
    from core.indicators import default_engine
    from core.signals.engine import SignalEngine
    from tests.test_backtest import assert_same_outcome, close_times, live_walk

    limits = BreakerLimits(max_drawdown=0.01, window=4, min_expectancy=0.0, resume_after=3)
    market = trending_market()
    times = close_times(market, utc(2000, 1, 1), utc(2100, 1, 1))[-300:]
    tfs = {AssetClass.CRYPTO: (Timeframe.D1,)}
    risk = RiskManager(RiskConfig(costs_bps=10.0))
    engine = SignalEngine(default_engine())
    shadows: list = []
    live, outcomes = await live_walk(market, engine, risk, 10.0, times, books=(TrendBook(TrendConfig(), tfs),),
                                     setups=False, breaker=limits, shadows=shadows)
    bt = Backtester(market, engine, risk, BacktestConfig(costs_bps=10.0, timeframes={}, breaker=limits),
                    [TrendBook(TrendConfig(), tfs)])
    result = await bt.run(times[0] - timedelta(microseconds=1), times[-1])
    kinds = [e.kind for e in result.breaker_events]
    assert "trip" in kinds and "resume" in kinds, kinds  # the limits did bite, both ways
    assert [t.signal for t in result.trades] == live and live
    assert [t.signal.id for t in result.shadows] == [s.id for s in shadows] and shadows
    for s in shadows:
        assert s.shadow and s.evidence["shadow"]["scope"] == "trend/crypto" and "paused since" in s.evidence["shadow"]["reason"]
    for t in [*result.trades, *result.shadows]:
        assert_same_outcome(outcomes[t.signal.id], t.outcome)
