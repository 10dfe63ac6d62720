"""The instrument registry: every tradable (or watched) instrument with its listing facts and the
symbol each data provider knows it by.

Our own symbols are canonical: equities as the exchange writes them (``AAPL``, ``BRK.B``), crypto as
``BASE-QUOTE`` (``BTC-USDT``), FX as six letters (``EURUSD``), indices by their short name (``SPX``).
`get` also accepts the usual spellings (``brk-b``, ``BTC/USDT``, ``eur/usd``) and any provider's own
symbol (``^GSPC``, ``EURUSD=X``).
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from core.domain import AssetClass, Instrument
from core.errors import MarketDataError, UnknownSymbolError

_WORD = re.compile(r"[a-z0-9]+")

# Extra words a person may search an industry by (matched like words of the name).
_INDUSTRY_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("Banks", "bank banking lender"),
    ("Thrifts", "bank savings lender"),
    ("Consumer Finance", "credit lender cards"),
    ("Investment Banking", "bank broker"),
    ("Insurance", "insurer insurance"),
    ("Reinsurance", "insurer"),
    ("REIT", "reit property real estate"),
    ("Oil & Gas", "oil gas petroleum"),
    ("Semiconductor", "chip chips chipmaker"),
    ("Pharmaceuticals", "pharma drug drugmaker"),
    ("Biotechnology", "biotech pharma drug"),
    ("Airlines", "airline aviation"),
    ("Aerospace", "defense aircraft"),
    ("Software", "software"),
    ("Internet", "internet tech"),
    ("Utilities", "utility power"),
    ("Restaurants", "restaurant food"),
)
_CLASS_KEYWORDS = {
    AssetClass.CRYPTO: "crypto cryptocurrency coin token",
    AssetClass.FX: "fx forex currency",
    AssetClass.INDEX: "index indices benchmark",
    AssetClass.EQUITY: "stock equity share",
}


@dataclass(frozen=True, slots=True)
class InstrumentRecord:
    """One instrument as the registry knows it."""

    symbol: str
    asset_class: AssetClass
    name: str
    exchange: str
    quote_currency: str
    calendar: str  # a name for core.instruments.calendars.get_calendar
    sector: str = ""
    industry: str = ""
    provider_symbols: tuple[tuple[str, str], ...] = ()  # (provider key, its symbol), e.g. ("yahoo", "BRK-B")

    @property
    def instrument(self) -> Instrument:
        return Instrument(self.symbol, self.asset_class, self.name, self.exchange, self.quote_currency, self.sector)

    def provider_symbol(self, provider: str) -> str | None:
        """This instrument's symbol at `provider` ("yahoo", "ccxt"), or None when it has none."""
        return next((s for p, s in self.provider_symbols if p == provider), None)

    def keywords(self) -> str:
        words = [_CLASS_KEYWORDS[self.asset_class]]
        words += [extra for key, extra in _INDUSTRY_KEYWORDS if key.lower() in (self.industry + " " + self.sector).lower()]
        return " ".join(words)


class InstrumentRegistry:
    """Lookup and search over instrument records. Immutable once built."""

    def __init__(self, records: Iterable[InstrumentRecord]) -> None:
        self._records: dict[str, InstrumentRecord] = {}
        for rec in records:
            if rec.symbol in self._records:
                raise ValueError(f"duplicate instrument symbol {rec.symbol}")
            self._records[rec.symbol] = rec
        self._compact: dict[str, str] = {}
        self._by_provider: dict[str, str] = {}  # any provider's symbol -> ours
        for rec in self._records.values():
            self._compact.setdefault(_compact(rec.symbol), rec.symbol)
            for _, psym in rec.provider_symbols:
                self._by_provider.setdefault(psym.upper(), rec.symbol)
        self._index = {sym: _SearchFields.of(rec) for sym, rec in self._records.items()}

    # -- lookup ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[InstrumentRecord]:
        return iter(self._records.values())

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and self.find(symbol) is not None

    def find(self, symbol: str) -> InstrumentRecord | None:
        """The record for `symbol` in any accepted spelling, or None."""
        key = symbol.strip().upper()
        if key in self._records:
            return self._records[key]
        canonical = self._compact.get(_compact(key))
        if canonical is None:
            canonical = self._by_provider.get(key)
        return self._records[canonical] if canonical is not None else None

    def get(self, symbol: str) -> InstrumentRecord:
        """The record for `symbol`; UnknownSymbolError with up to three suggestions otherwise."""
        found = self.find(symbol)
        if found is None:
            raise UnknownSymbolError(symbol, self.suggest(symbol))
        return found

    def suggest(self, text: str, n: int = 3) -> list[str]:
        key = text.strip().upper()
        close = difflib.get_close_matches(key, list(self._records), n=n, cutoff=0.6)
        if len(close) < n:
            close += [r.symbol for r in self.search(text, limit=n) if r.symbol not in close]
        return close[:n]

    def provider_symbol(self, symbol: str, provider: str) -> str:
        """`symbol`'s symbol at `provider`; MarketDataError when that provider does not carry it."""
        rec = self.get(symbol)
        psym = rec.provider_symbol(provider)
        if psym is None:
            raise MarketDataError(f"{rec.symbol} has no {provider} symbol")
        return psym

    def records(self, asset_classes: Iterable[AssetClass] | None = None) -> list[InstrumentRecord]:
        wanted = set(asset_classes) if asset_classes is not None else None
        return [r for r in self._records.values() if wanted is None or r.asset_class in wanted]

    def instruments(self, asset_classes: Iterable[AssetClass] | None = None) -> list[Instrument]:
        return [r.instrument for r in self.records(asset_classes)]

    # -- search ----------------------------------------------------------------------------------

    def search(self, query: str, *, limit: int | None = None,
               asset_classes: Iterable[AssetClass] | None = None) -> list[InstrumentRecord]:
        """Instruments matching every word of `query` (case-insensitive) by symbol, name, sector,
        industry or an industry keyword ("bank" finds JPM, BAC, C, WFC...), best matches first:
        symbol, then name, then industry/keywords, then sector."""
        words = _WORD.findall(query.lower())
        if not words:
            return []
        wanted = set(asset_classes) if asset_classes is not None else None
        scored: list[tuple[int, str]] = []
        for sym, fields in self._index.items():
            rec = self._records[sym]
            if wanted is not None and rec.asset_class not in wanted:
                continue
            score = fields.score(words, _compact(query))
            if score is not None:
                scored.append((score, sym))
        scored.sort()
        hits = [self._records[sym] for _, sym in scored]
        return hits if limit is None else hits[:limit]


@dataclass(frozen=True, slots=True)
class _SearchFields:
    symbol: str  # compact, lower case
    name: tuple[str, ...]
    industry: tuple[str, ...]
    sector: tuple[str, ...]
    haystack: str  # everything, lower case, for substring fallback

    @classmethod
    def of(cls, rec: InstrumentRecord) -> _SearchFields:
        provider_syms = " ".join(s for _, s in rec.provider_symbols)
        hay = " ".join((rec.symbol, provider_syms, rec.name, rec.industry, rec.sector)).lower()
        return cls(_compact(rec.symbol).lower(), tuple(_WORD.findall(rec.name.lower())),
                   tuple(_WORD.findall(f"{rec.industry} {rec.keywords()}".lower())),
                   tuple(_WORD.findall(rec.sector.lower())), hay)

    def score(self, words: Sequence[str], whole: str) -> int | None:
        """Lower is better; None when some word matches nowhere."""
        if whole.lower() == self.symbol:
            return 0
        total = 0
        for word in words:
            best = self._word_score(word)
            if best is None:
                return None
            total += best
        return total

    def _word_score(self, word: str) -> int | None:
        if self.symbol.startswith(word):
            return 1
        if any(w.startswith(word) for w in self.name):
            return 2
        if any(w.startswith(word) for w in self.industry):
            return 3
        if any(w.startswith(word) for w in self.sector):
            return 4
        if word in self.haystack:
            return 5
        return None


def _compact(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())
