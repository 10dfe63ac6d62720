from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from bot.commands.handlers import (
    apply_preference, build_registry, parse_prefs_args, parse_quiet, parse_signal_args,
)
from bot.commands.parsing import parse_confidence, parse_period_days, parse_symbol, split_command
from core.domain import AssetClass, Instrument, Preferences, RiskTolerance, Timeframe
from core.errors import UnknownSymbolError, UserInputError
from core.tiers import OFFERED_TIMEFRAMES

REGISTRY = build_registry()
KNOWN = {"AAPL", "BTC-USDT", "EURUSD"}


def lookup(sym: str) -> Instrument:
    if sym not in KNOWN:
        raise UnknownSymbolError(sym)
    return Instrument(sym, AssetClass.EQUITY)


@given(st.text(max_size=300))
@settings(max_examples=400)
def test_any_text_parses_or_fails_with_a_user_error(text):
    try:
        line = split_command(text)
    except UserInputError as exc:
        assert str(exc)
        return
    assert line.name and line.name == line.name.lower()
    cmd = REGISTRY.get(line.name)
    if cmd is None:
        return
    try:
        cmd.parse(line.args)
    except UserInputError as exc:
        assert str(exc)


@given(st.lists(st.text(min_size=1, max_size=30).filter(lambda s: not any(c.isspace() for c in s)), min_size=1, max_size=6))
@settings(max_examples=300)
def test_prefs_arguments_never_crash(tokens):
    try:
        args = parse_prefs_args(tokens)
        if args.key is not None:
            apply_preference(Preferences(), args.key, args.values, lookup)
    except UserInputError:
        pass


@given(st.sampled_from(["aapl", "AAPL", "btc/usdt", "BTCUSDT", "btc-usdt", "eurusd"]),
       st.sampled_from(["", "1d", "4H", "1h", "daily", "15m", "5M", "1m"]))
def test_signal_arguments_normalise(symbol, tf):
    if tf and Timeframe.parse(tf) not in OFFERED_TIMEFRAMES:  # sold by no tier: refused with the ones that are
        with pytest.raises(UserInputError, match="is not offered: signals and analyses are on 1h, 4h, 1d"):
            parse_signal_args([symbol, tf])
        return
    args = parse_signal_args([symbol] + ([tf] if tf else []))
    assert args.symbol in KNOWN
    assert args.timeframe == (Timeframe.parse(tf) if tf else None)


def test_command_line_forms():
    assert split_command("/Signal@MyBot aapl 1d").name == "signal"
    assert split_command("  /signals  ").args == ()
    for bad in ("", "hello", "/", "/!!", "/" + "x" * 40, "/signal " + "A" * 2000):
        with pytest.raises(UserInputError):
            split_command(bad)


def test_argument_errors_are_specific():
    with pytest.raises(UserInputError, match="timeframe"):
        parse_signal_args(["AAPL", "7h"])
    with pytest.raises(UserInputError, match="symbol"):
        parse_symbol("<script>")
    with pytest.raises(UserInputError):
        parse_confidence("101")
    assert parse_confidence("OFF") == 1 and parse_confidence("45") == 45
    with pytest.raises(UserInputError, match="or 'off'"):
        parse_confidence("high")
    assert parse_period_days("90d") == 90 and parse_period_days("all") is None


def test_preferences_apply():
    p = Preferences()
    p = apply_preference(p, "symbols", ["aapl,btc/usdt"], lookup)
    assert p.symbols == {"AAPL", "BTC-USDT"}
    p = apply_preference(p, "assets", ["stocks", "crypto"], lookup)
    assert p.asset_classes == {AssetClass.EQUITY, AssetClass.CRYPTO}
    p = apply_preference(p, "timeframes", ["1h,1d"], lookup)
    assert p.timeframes == {Timeframe.H1, Timeframe.D1}
    p = apply_preference(p, "risk", ["HIGH"], lookup)
    assert p.risk is RiskTolerance.HIGH
    p = apply_preference(p, "quiet", ["22:00-7:30", "Europe/Berlin"], lookup)
    assert (p.quiet_hours.start, p.quiet_hours.end, p.quiet_hours.timezone) == ("22:00", "07:30", "Europe/Berlin")
    assert apply_preference(p, "symbols", ["all"], lookup).symbols == frozenset()
    with pytest.raises(UnknownSymbolError):
        apply_preference(p, "symbols", ["NOPE"], lookup)
    with pytest.raises(UserInputError, match="time zone"):
        parse_quiet(["22:00-07:00", "Mars/Olympus"])
    with pytest.raises(UserInputError):
        parse_quiet(["22:00-22:00"])
