"""The track record in chat: similar past setups per signal (/similar, no look-ahead, peers, few neighbours) and
the published backtests in /performance, kept apart from live figures."""
from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.app import build_services
from bot.commands.registry import Caller, dispatch
from bot.commands.track import parse_signal_id
from bot.settings import Settings
from bot.views.signals import signal_doc
from bot.views.text import render_text
from bot.views.track import similar_doc
from core.clock import FixedClock
from core.domain import AssetClass, Direction, Signal, SignalOutcome, SignalStatus, Timeframe
from core.errors import UserInputError
from core.instruments.catalog import default_registry
from core.market_data import SimulatedMarket
from core.similar import PeerGroup, SimilarityConfig, distance, find_similar, setup_features
from core.signals.engine import signal_id
from bot.cli import parser as signalbot_parser
from storage.backtest_reports import publish_report, published_reports, report_scope
from tests.conftest import MECHANICS_FAMILIES, utc

T = utc(2025, 6, 2)  # the signal asked about is issued here
NOW = utc(2025, 6, 10, 12)
BOB = Caller("telegram", "1001", "1001", "Bob")
CLASSES = {"AAPL": AssetClass.EQUITY, "MSFT": AssetClass.EQUITY, "NVDA": AssetClass.EQUITY, "JPM": AssetClass.EQUITY,
           "BTC-USDT": AssetClass.CRYPTO, "ETH-USDT": AssetClass.CRYPTO}
BASE = (0.8, 25.0, -2.2, -2.4, 0.85)  # setup score, RSI, z-score, ATRs from SMA20, volume percentile


def evidence(score: float, rsi: float, z: float, dist: float, vol: float | None) -> dict[str, object]:
    return {"setup": {"name": "oversold", "score": score, "criteria": []},
            "indicators": {"rsi_14": rsi, "zscore_20": z, "dist_sma20_atr": dist, "volume_pct_50": vol, "close": 100.0},
            "votes": [], "ensemble_score": 0.5}


def sig(symbol: str, issued: datetime, features: tuple[float, ...] = BASE, *, tf: Timeframe = Timeframe.D1,
        direction: Direction = Direction.LONG) -> Signal:
    return Signal(id=signal_id(symbol, tf, issued, direction), symbol=symbol, asset_class=CLASSES[symbol],
                  timeframe=tf, direction=direction, entry=100.0, target=106.0, stop=97.0, confidence=70,
                  position_size=0.04, issued_at=issued, expires_at=issued + timedelta(days=10),
                  reasoning="oversold", strategy="oversold", evidence=evidence(*features))


def closed(s: Signal, exit_time: datetime, net: float) -> tuple[Signal, SignalOutcome]:
    status = SignalStatus.TARGET if net > 0.03 else SignalStatus.STOP if net < -0.02 else SignalStatus.EXPIRED
    return s, SignalOutcome(s.id, status, 100.0, s.issued_at + timedelta(hours=14), 100.0 * (1 + net), exit_time,
                            net + 0.001, net, max(net, 0.0), min(net, 0.0), 3)


def peers(symbol: str) -> PeerGroup:
    return PeerGroup.of(symbol, CLASSES[symbol], default_registry().records())


def days(n: float) -> timedelta:
    return timedelta(days=n)


# -- selection: no look-ahead, peers, nearness -------------------------------------------------------------
def test_only_signals_closed_before_the_asked_one_was_issued_count():
    target = sig("AAPL", T)
    history = [
        closed(sig("AAPL", T - days(20)), T - days(12), 0.05),  # issued and closed before: counts
        closed(sig("AAPL", T - days(9)), T, 0.04),  # closed exactly when the signal was issued: known then
        closed(sig("AAPL", T - days(5)), T + days(1), 0.06),  # issued before, closed after: look-ahead
        closed(sig("AAPL", T + days(2)), T + days(6), -0.03),  # issued after
        closed(target, T + days(4), 0.02),  # itself
    ]
    r = find_similar(target, history, peers("AAPL"))
    assert [n.signal.id for n in r.neighbours] == [history[1][0].id, history[0][0].id]  # equal distance: recent first
    assert r.compared == 2


def test_peers_are_the_same_sector_with_the_same_setup_family_direction_and_timeframe():
    target = sig("AAPL", T)
    at = T - days(30)
    history = [closed(sig("MSFT", at), at + days(3), 0.04),  # same sector (Information Technology)
               closed(sig("NVDA", at + days(1)), at + days(4), -0.03),
               closed(sig("JPM", at), at + days(3), 0.05),  # Financials
               closed(sig("BTC-USDT", at), at + days(3), 0.05),  # another asset class
               closed(sig("MSFT", at + days(2), direction=Direction.SHORT), at + days(5), 0.05),
               closed(sig("MSFT", at + days(2), tf=Timeframe.H4), at + days(5), 0.05),
               closed(dataclasses.replace(sig("MSFT", at + days(2)), strategy="pullback"), at + days(5), 0.05)]
    assert history[0][0].strategy != "pullback"
    group = peers("AAPL")
    assert group.label == "Information Technology" and {"AAPL", "MSFT", "NVDA"} <= group.symbols
    assert "JPM" not in group.symbols
    r = find_similar(target, history, group)
    assert sorted(n.signal.symbol for n in r.neighbours) == ["MSFT", "NVDA"]
    assert r.same_symbol == 0
    crypto = peers("ETH-USDT")
    assert crypto.label == "Cryptocurrency" and "BTC-USDT" in crypto.symbols and "AAPL" not in crypto.symbols


def test_nearest_by_the_stored_evidence_and_far_setups_left_out():
    target = sig("AAPL", T)
    near = closed(sig("AAPL", T - days(40), (0.78, 26.0, -2.1, -2.3, 0.8)), T - days(35), 0.03)
    nearer = closed(sig("MSFT", T - days(50), (0.8, 25.5, -2.2, -2.4, 0.85)), T - days(45), -0.02)
    far = closed(sig("AAPL", T - days(60), (0.2, 48.0, -0.1, 0.2, 0.1)), T - days(55), 0.08)
    r = find_similar(target, [near, far, nearer], peers("AAPL"))
    assert [n.signal.id for n in r.neighbours] == [nearer[0].id, near[0].id]
    assert r.compared == 3 and r.neighbours[0].distance < r.neighbours[1].distance <= 1.0
    assert distance(setup_features(target), setup_features(far[0])) > 1.0


def test_missing_evidence_is_left_out_and_too_little_is_not_comparable():
    a = setup_features(sig("AAPL", T, (0.8, 25.0, -2.2, -2.4, None)))
    assert set(a) == {"setup_score", "rsi_14", "zscore_20", "dist_sma20_atr"}
    assert distance(a, {"rsi_14": 25.0}, min_shared=3) is None
    assert distance(a, {"rsi_14": 35.0, "setup_score": 0.8, "zscore_20": -2.2}) == pytest.approx((1 / 3) ** 0.5)
    bare = dataclasses.replace(sig("AAPL", T), evidence={})
    assert setup_features(bare) == {}
    assert "no setup evidence" in render_text(similar_doc(find_similar(bare, [], peers("AAPL"))))


def test_few_similar_setups_give_no_hit_rate_and_say_so():
    target = sig("AAPL", T)
    history = [closed(sig("AAPL", T - days(30 + 7 * i)), T - days(25 + 7 * i), r)
               for i, r in enumerate((0.04, -0.02, 0.05))]
    r = find_similar(target, history, peers("AAPL"))
    assert r.count == 3 and not r.enough and r.hit_rate is None and r.avg_return is None
    text = render_text(similar_doc(r))
    assert "only 3" in text and "too few for a hit rate" in text and "Hit rate" not in text
    assert all(s.id in text for s, _ in history)

    more = history + [closed(sig("MSFT", T - days(60 + 7 * i)), T - days(55 + 7 * i), r)
                      for i, r in enumerate((0.03, -0.01, 0.02))]
    r = find_similar(target, more, peers("AAPL"))
    assert r.count == 6 and r.enough and r.wins == 4 and r.hit_rate == pytest.approx(4 / 6)
    assert r.avg_return == pytest.approx(sum(x[1].net_return for x in more) / 6)
    text = render_text(similar_doc(r))
    assert "Hit rate        67% (4 of 6 with net return > 0)" in text
    assert "nearest 5" in text and "+5.00%" in text and "-2.00%" in text  # best / worst

    capped = find_similar(target, more, peers("AAPL"), SimilarityConfig(max_neighbours=2))
    assert capped.count == 2 and capped.compared == 6


def test_signal_ids_parse_and_malformed_ones_are_refused():
    assert parse_signal_id(["aapl-1D-20250602-l"]) == "AAPL-1d-20250602-L"
    assert parse_signal_id(["btc-usdt-4h-202506021200-s"]) == "BTC-USDT-4h-202506021200-S"
    for bad in (["hello"], ["AAPL-7h-20250602-L"], ["AAPL-1d-2025-L"], ["AAPL-1d-20250602-X"], [], ["a", "b"],
                ["A" * 60 + "-1d-20250602-L"]):
        with pytest.raises(UserInputError):
            parse_signal_id(bad)


def test_every_delivered_signal_offers_its_similar_setups():
    s = sig("AAPL", T)
    assert [(b.label, b.command) for b in signal_doc(s).buttons] == [
        ("Details", "/signal AAPL 1d"), ("Track record", "/performance"), ("Similar setups", f"/similar {s.id}"),
        ("I took it", f"/feedback {s.id} took"), ("I skipped it", f"/feedback {s.id} skipped")]


def test_a_signal_says_whether_its_confidence_is_a_probability_or_a_rule_score():
    s = sig("AAPL", T)
    fields = dict(signal_doc(dataclasses.replace(s, evidence={**s.evidence, "model_probability": 0.412})).fields)
    assert fields["Confidence"].startswith("41% chance of a win after costs")
    assert "not a probability" in dict(signal_doc(dataclasses.replace(s, evidence={})).fields)["Confidence"]


def test_the_track_record_shows_live_calibration_of_probabilities_apart_from_rule_scores():
    from bot.views.signals import calibration_line, performance_doc, setup_line

    def probable(k: int, p: float, net: float) -> tuple[Signal, SignalOutcome]:
        s = sig("AAPL", T + days(k))
        s = dataclasses.replace(s, confidence=round(p * 100), evidence={**s.evidence, "model_probability": p})
        return closed(s, s.issued_at + days(3), net)

    pairs = [probable(0, 0.41, 0.02), probable(1, 0.43, -0.01), probable(2, 0.44, -0.02), probable(3, 0.36, 0.01),
             closed(dataclasses.replace(sig("MSFT", T), evidence={}), T + days(3), 0.05)]
    line = calibration_line(pairs)
    assert line == ("30-40: 1 (said 36%, won 100%); 40-50: 3 (said 43%, won 33%); "
                    "1 with a rule score, not a probability")
    from core.performance import summarize

    doc = performance_doc("last 30 days", summarize([o for _, o in pairs]), (), pairs)
    assert dict(doc.fields)["Calibration"] == line
    pullback = closed(dataclasses.replace(sig("NVDA", T), strategy="pullback"), T + days(3), 0.01)
    by_setup = setup_line([*pairs, pullback])  # sig() makes "oversold" signals: 3 of 5 won; wins 0.08, losses 0.03
    assert by_setup == "oversold 5 (hit 60%, PF 2.67); pullback 1 (hit 100%, PF n/a)"
    assert dict(doc.fields)["By setup"] == setup_line(pairs)
    assert calibration_line([]) == "no closed signal had a model probability"


# -- published backtest reports -------------------------------------------------------------------------------
REPORT = {"period": {"start": "2015-02-09", "end": "2018-02-07"}, "universe": 505, "costs_bps": 10, "signals": 812,
          "closed": 790, "hit_rate": 0.661, "target_rate": 0.48, "avg_return": 0.011, "median_return": 0.008,
          "profit_factor": 1.6, "avg_holding_days": 4.2,
          "portfolio": {"cagr": 0.12, "sharpe": 1.3, "sortino": 1.9, "max_drawdown": -0.09, "exposure": 0.55},
          "benchmark": {"symbol": "SPX", "cagr": 0.08, "sharpe": 0.9, "max_drawdown": -0.12},
          "excess_cagr": 0.04, "alpha": 0.05, "beta": 0.4, "by_year": [],
          "by_asset_class": {"equity": {"signals": 812}}, "model": {"kind": "rules only"},
          "evaluation": {"book": {"sharpe": 1.31, "alpha_annual": 0.031, "information_ratio": 0.57},
                         "by_family": {"ranking": {"signals": 812}}}}


def test_the_latest_report_per_scope_is_kept_and_bad_files_are_skipped(tmp_path: Path):
    assert published_reports(tmp_path / "none") == []
    assert report_scope(REPORT) == "equity"
    publish_report({**REPORT, "signals": 1}, tmp_path, utc(2026, 11, 1))
    path = publish_report(REPORT, tmp_path, utc(2026, 11, 30, 9))
    assert path == tmp_path / "equity.json" and sorted(p.name for p in tmp_path.iterdir()) == ["equity.json"]
    crypto = {**REPORT, "by_asset_class": {"crypto": {}}, "benchmark": {"symbol": None, "cagr": None},
              "excess_cagr": None, "model": {"kind": "walk-forward LightGBM ..."}}
    (tmp_path / "bare.json").write_text(json.dumps(crypto))  # a report copied in by hand
    os.utime(tmp_path / "bare.json", (utc(2026, 10, 1).timestamp(),) * 2)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    found = published_reports(tmp_path)
    assert [(r.scope, r.signals, r.model) for r in found] == [("crypto", 812, "walk-forward models"),
                                                             ("equity", 812, "rules")]
    eq = found[1]
    assert (eq.run_at, eq.start.isoformat(), eq.excess_cagr, eq.benchmark) == (utc(2026, 11, 30, 9), "2015-02-09",
                                                                               0.04, "SPX")
    assert found[0].run_at == utc(2026, 10, 1) and found[0].excess_cagr is None


def test_backtest_command_has_a_publish_option():
    args = signalbot_parser().parse_args(["backtest", "--data", "d", "--report", "r.json", "--publish", "models_store/backtests"])
    assert args.publish == Path("models_store/backtests")


# -- through dispatch ----------------------------------------------------------------------------------
@pytest.fixture
async def services(tmp_path: Path):
    clock = FixedClock(NOW)
    market = SimulatedMarket(seed=7, start=NOW, history_days=400, clock=clock)
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:", backtest_reports_dir=str(tmp_path / "bt"),
                        families=MECHANICS_FAMILIES, _env_file=None)
    svc = await build_services(settings, market, clock)
    yield svc
    await svc.store.close()


async def say(svc, text: str) -> str:  # noqa: ANN001
    return render_text(await dispatch(svc.registry, svc, BOB, text))


async def store_closed(svc, pairs) -> None:  # noqa: ANN001
    for s, o in pairs:
        await svc.store.signals.add_signal(s)
        if o is not None:
            await svc.store.signals.record_outcome(o)


async def test_performance_without_and_with_a_published_backtest(services, tmp_path: Path):
    out = await say(services, "/performance")
    assert "Live, 30 days" in out and "no signal closed" in out
    assert "no backtest report has been published yet" in out
    assert "no backtest report has been published yet" in await say(services, "/performance 30d")

    publish_report(REPORT, tmp_path / "bt", utc(2026, 11, 30, 9))
    await store_closed(services, [closed(sig("AAPL", NOW - days(10)), NOW - days(5), 0.02)])
    out = await say(services, "/performance")
    assert "Live, 30 days" in out and "1 closed, hit rate 100%, average +2.00%" in out
    for text in ("Backtest (simulated)", "2015-02-09..2018-02-07", "812 (790 closed)", "66.1%", "1.60", "+12.0%",
                 "-9.0%", "+4.0%/yr vs SPX", "10 bps/side", "2026-11-30", "never counted in the live figures",
                 "ranking", "1.31", "+3.1%/yr (IR 0.57)"):
        assert text in out, text
    detail = await say(services, "/performance 90d")
    assert detail.startswith("Track record, last 90 days") and "Closed signals" in detail
    assert "Hit rate" in detail and "1 of 1" in detail and "+4.0%/yr vs SPX" in detail


async def test_similar_through_dispatch(services):
    target = sig("AAPL", NOW - days(1))
    history = [closed(sig("AAPL", NOW - days(30 + 6 * i)), NOW - days(26 + 6 * i), r)
               for i, r in enumerate((0.04, -0.02, 0.05, 0.01))]
    late = closed(sig("MSFT", NOW - days(5)), NOW, 0.09)  # closed after the target was issued
    await store_closed(services, [*history, late, (target, None)])
    out = await say(services, f"/similar {target.id.lower()}")
    assert out.startswith(f"Setups like BUY AAPL (1d) of {target.issued_at:%Y-%m-%d}")
    assert "only 4" in out and "too few for a hit rate" in out and late[0].id not in out
    assert all(s.id in out for s, _ in history)
    assert "Information Technology" in out

    assert "is not a signal id" in await say(services, "/similar hello")
    assert "There is no signal AAPL-1d-20200101-L" in await say(services, "/similar AAPL-1d-20200101-L")
    assert "Usage: /similar SIGNAL_ID" in await say(services, "/similar")
    assert "/similar SIGNAL_ID" in await say(services, "/help")


async def test_similar_for_a_signal_without_neighbours(services):
    target = sig("JPM", NOW - days(1))
    await store_closed(services, [(target, None)])
    out = await say(services, f"/similar {target.id}")
    assert "0 earlier BUY 1d setups of JPM and its peers (Financials)" in out and "No similar past setup" in out


async def test_similar_reads_the_evidence_the_engine_stores(services):
    issued = []
    for _ in range(24 * 20):  # simulated hours until the engine issues a signal
        services.clock.advance(timedelta(hours=1))
        issued += (await services.signal_service.scan()).issued
        await services.tracker.update()
        if issued:
            break
    assert issued, "the simulated market should produce setups within twenty days"
    s = await services.store.signals.get_signal(issued[0].id)
    assert set(setup_features(s)) >= {"setup_score", "rsi_14", "zscore_20", "dist_sma20_atr"}
    out = await say(services, f"/similar {s.id}")
    assert out.startswith(f"Setups like {s.direction.verb} {s.symbol} ({s.timeframe})") and "Compared" in out
