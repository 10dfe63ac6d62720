"""Instruments: the registry of what the service knows (symbols, listings, provider symbols) and
the trading calendars that say when each trades."""
from core.instruments.calendars import (
    CRYPTO_24_7,
    FX_24_5,
    XNYS,
    AlwaysOpenCalendar,
    FxCalendar,
    NyseCalendar,
    TradingCalendar,
    get_calendar,
    nyse_holidays,
    sessions,
)
from core.instruments.catalog import CCXT, YAHOO, default_registry
from core.instruments.registry import InstrumentRecord, InstrumentRegistry

__all__ = [
    "CCXT", "CRYPTO_24_7", "FX_24_5", "XNYS", "YAHOO",
    "AlwaysOpenCalendar", "FxCalendar", "InstrumentRecord", "InstrumentRegistry", "NyseCalendar",
    "TradingCalendar", "default_registry", "get_calendar", "nyse_holidays", "sessions",
]
