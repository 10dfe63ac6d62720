"""The built-in instrument universe: the S&P 500 of February 2018, crypto pairs, FX pairs, indices.

The equity names, sectors and industries come from ``data/sp500_2018-02.csv`` (compiled by hand; see
its header). The crypto, FX and index lists below were also written by hand. Provider symbols:

- yahoo: equities with ``.`` -> ``-`` (``BRK-B``), FX ``EURUSD=X``, indices ``^GSPC``/``^VIX``, crypto
  ``BASE-USD`` (a USD quote, not USDT: a fallback only; a few bases need Yahoo's numbered id).
- ccxt: crypto as the unified ``BASE/USDT`` symbol (the same at Binance and most exchanges).
"""
from __future__ import annotations

import csv
import io
from functools import lru_cache
from importlib import resources

from core.domain import AssetClass
from core.instruments.registry import InstrumentRecord, InstrumentRegistry

SP500_FILE = "sp500_2018-02.csv"

YAHOO = "yahoo"
CCXT = "ccxt"

# (base, name); the first 32 are the pairs of ../shared/data/crypto.
CRYPTO_BASES: tuple[tuple[str, str], ...] = (
    ("AAVE", "Aave"), ("ADA", "Cardano"), ("ALGO", "Algorand"), ("ATOM", "Cosmos"),
    ("AVAX", "Avalanche"), ("BCH", "Bitcoin Cash"), ("BNB", "BNB"), ("BTC", "Bitcoin"),
    ("CHZ", "Chiliz"), ("DOGE", "Dogecoin"), ("DOT", "Polkadot"), ("EGLD", "MultiversX (Elrond)"),
    ("EOS", "EOS"), ("ETC", "Ethereum Classic"), ("ETH", "Ethereum"), ("FLOW", "Flow"),
    ("FTM", "Fantom"), ("FTT", "FTX Token"), ("LINK", "Chainlink"), ("LTC", "Litecoin"),
    ("MANA", "Decentraland"), ("MATIC", "Polygon"), ("NEAR", "NEAR Protocol"), ("SAND", "The Sandbox"),
    ("SOL", "Solana"), ("THETA", "Theta Network"), ("TRX", "TRON"), ("VET", "VeChain"),
    ("XLM", "Stellar"), ("XMR", "Monero"), ("XRP", "XRP"), ("XTZ", "Tezos"),
    ("UNI", "Uniswap"), ("FIL", "Filecoin"), ("SHIB", "Shiba Inu"), ("ICP", "Internet Computer"),
)
_YAHOO_CRYPTO_IDS = {"UNI": "UNI7083-USD"}  # Yahoo disambiguates some bases with a numeric id

FX_PAIRS: tuple[str, ...] = (
    # majors
    "EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "USDCAD", "NZDUSD",
    # crosses
    "EURGBP", "EURJPY", "EURCHF", "EURAUD", "EURCAD", "EURNZD", "GBPJPY", "GBPCHF", "GBPAUD", "GBPCAD",
    "AUDJPY", "AUDNZD", "AUDCAD", "CADJPY", "CHFJPY", "NZDJPY",
    # a few USD pairs beyond the majors
    "USDSEK", "USDNOK", "USDMXN", "USDZAR", "USDSGD",
)
CURRENCY_NAMES = {
    "USD": "US Dollar", "EUR": "Euro", "JPY": "Japanese Yen", "GBP": "British Pound", "CHF": "Swiss Franc",
    "AUD": "Australian Dollar", "CAD": "Canadian Dollar", "NZD": "New Zealand Dollar", "SEK": "Swedish Krona",
    "NOK": "Norwegian Krone", "MXN": "Mexican Peso", "ZAR": "South African Rand", "SGD": "Singapore Dollar",
}

# (symbol, name, yahoo symbol)
INDICES: tuple[tuple[str, str, str], ...] = (
    ("SPX", "S&P 500 Index", "^GSPC"),
    ("VIX", "CBOE Volatility Index", "^VIX"),
    ("NDX", "Nasdaq-100 Index", "^NDX"),
    ("DJI", "Dow Jones Industrial Average", "^DJI"),
    ("RUT", "Russell 2000 Index", "^RUT"),
)


def equity_records() -> list[InstrumentRecord]:
    text = resources.files("core.instruments").joinpath("data", SP500_FILE).read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO("".join(line for line in text.splitlines(keepends=True)
                                              if not line.startswith("#"))))
    return [
        InstrumentRecord(
            symbol=row["symbol"], asset_class=AssetClass.EQUITY, name=row["name"], exchange=row["exchange"],
            quote_currency="USD", calendar="XNYS", sector=row["sector"], industry=row["industry"],
            provider_symbols=((YAHOO, row["symbol"].replace(".", "-")),),
        )
        for row in rows
    ]


def crypto_records(quote: str = "USDT") -> list[InstrumentRecord]:
    return [
        InstrumentRecord(
            symbol=f"{base}-{quote}", asset_class=AssetClass.CRYPTO, name=name, exchange="binance",
            quote_currency=quote, calendar="24/7", sector="Cryptocurrency",
            provider_symbols=((CCXT, f"{base}/{quote}"), (YAHOO, _YAHOO_CRYPTO_IDS.get(base, f"{base}-USD"))),
        )
        for base, name in CRYPTO_BASES
    ]


def fx_records() -> list[InstrumentRecord]:
    return [
        InstrumentRecord(
            symbol=pair, asset_class=AssetClass.FX,
            name=f"{CURRENCY_NAMES[pair[:3]]} / {CURRENCY_NAMES[pair[3:]]}", exchange="FX",
            quote_currency=pair[3:], calendar="24/5", sector="Currencies",
            provider_symbols=((YAHOO, f"{pair}=X"),),
        )
        for pair in FX_PAIRS
    ]


def index_records() -> list[InstrumentRecord]:
    return [
        InstrumentRecord(symbol=sym, asset_class=AssetClass.INDEX, name=name, exchange="INDEX", quote_currency="USD",
                         calendar="XNYS", sector="Index", provider_symbols=((YAHOO, ysym),))
        for sym, name, ysym in INDICES
    ]


@lru_cache(maxsize=1)
def default_registry() -> InstrumentRegistry:
    """The built-in universe (built once per process)."""
    return InstrumentRegistry([*equity_records(), *crypto_records(), *fx_records(), *index_records()])
