"""MarketDataRouter: one MarketData over several providers, chosen per asset class, with failover and
a circuit breaker per provider.

For each call the router takes the asset class's ordered provider list and tries them in turn within
the same call: the first success is returned. A provider whose breaker is open is skipped.

What a failure means for the breaker (and only these count):
  ProviderUnavailableError (timeouts, 5xx, 429), DataValidationError (malformed payload), a call that
  overran `call_timeout`, and any exception the adapter did not translate.
What fails over without counting against the provider:
  DataRejectedError (validation rejected one symbol's data, e.g. an unadjusted split), UnknownSymbolError (the provider answered; it does not carry the symbol), ProviderRequestError (4xx:
  this request does not suit it) and other MarketDataError (e.g. no such timeframe), NotEnoughDataError.

Breaker: closed -> open after `failure_threshold` consecutive failures -> after `cooldown` the next call
is let through as a probe (half-open; one probe at a time) -> closed on success, open again on failure.
The clock is injectable. Errors leave the router as MarketDataError subclasses naming the provider(s).
The router itself never retries (the adapters' RetryPolicy does): it fails over.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import pandas as pd

from core.clock import Clock
from core.domain import AssetClass, Instrument, Timeframe
from core.errors import DataValidationError, MarketDataError, NotEnoughDataError, UnknownSymbolError, UserInputError
from core.instruments import InstrumentRegistry
from core.market_data.capabilities import RangeMarketData
from core.market_data.retry import ProviderRequestError, ProviderUnavailableError
from core.market_data.validation import DataRejectedError
from core.resilience import BreakerState, CircuitBreaker
from core.ports import MarketData

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Failure:
    provider: str
    error: BaseException | None  # None: skipped (circuit open)

    def describe(self) -> str:
        return f"{self.provider}: circuit open" if self.error is None else f"{self.provider}: {self.error}"


class ProvidersExhaustedError(MarketDataError):
    """Every provider for the asset class failed or was skipped. `failures` says what each did."""

    def __init__(self, message: str, failures: Sequence[Failure]) -> None:
        super().__init__(message)
        self.failures = list(failures)


def counts_as_failure(exc: BaseException) -> bool:
    """Does this error say the provider is unhealthy (see the module docstring)?"""
    if isinstance(exc, DataRejectedError):
        return False  # the data of one symbol (e.g. an unadjusted split), not the provider's health
    if isinstance(exc, (ProviderUnavailableError, DataValidationError, TimeoutError)):
        return True
    if isinstance(exc, (UserInputError, ProviderRequestError, NotEnoughDataError, MarketDataError)):
        return False
    return True


class MarketDataRouter:
    """MarketData that routes each symbol to its asset class's providers, in order."""

    name = "router"

    def __init__(
        self,
        routes: Mapping[AssetClass, Sequence[MarketData]],
        *,
        registry: InstrumentRegistry | None = None,
        failure_threshold: int = 3,
        cooldown: timedelta = timedelta(seconds=60),
        clock: Clock | None = None,
        call_timeout: float | None = None,
    ) -> None:
        self.routes = {AssetClass(k): list(v) for k, v in routes.items()}
        self.registry = registry
        self.call_timeout = call_timeout
        self.breakers: dict[str, CircuitBreaker] = {}
        for providers in self.routes.values():
            for p in providers:
                self._check_capable(p)
                self.breakers.setdefault(p.name, CircuitBreaker(p.name, failure_threshold=failure_threshold,
                                                                cooldown=cooldown, clock=clock))
        self._classes: dict[str, AssetClass] | None = None

    def _check_capable(self, provider: MarketData) -> None:
        caps = getattr(provider, "capabilities", None)
        if caps is None:
            return
        for cls, providers in self.routes.items():
            if any(p is provider for p in providers) and not caps.serves(cls):
                raise ValueError(f"provider {provider.name} does not serve {cls.value}")

    # -- the MarketData protocol -----------------------------------------------------------------

    def instruments(self) -> Sequence[Instrument]:
        if self.registry is not None:
            return self.registry.instruments(self.routes)
        seen: dict[str, Instrument] = {}
        for cls, providers in self.routes.items():
            for p in providers:
                for inst in p.instruments():
                    if inst.asset_class is cls:
                        seen.setdefault(inst.symbol, inst)
        return list(seen.values())

    def timeframes(self, symbol: str) -> Sequence[Timeframe]:
        found: set[Timeframe] = set()
        for p in self._providers(symbol):
            try:
                found.update(p.timeframes(symbol))
            except MarketDataError:
                continue
            except UserInputError:
                continue
        return sorted(found, key=lambda tf: tf.duration)

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime,
                       limit: int | None = None) -> pd.DataFrame:
        return await self._route(symbol, lambda p: p.get_bars(symbol, timeframe, end=end, limit=limit))

    async def get_bars_between(self, symbol: str, timeframe: Timeframe, *, start: datetime,
                               end: datetime) -> pd.DataFrame:
        """Bars with open >= start and close <= end, from the first provider that can."""
        return await self._route(symbol, lambda p: fetch_between(p, symbol, timeframe, start=start, end=end))

    # -- extras ----------------------------------------------------------------------------------

    def status(self) -> dict[str, BreakerState]:
        """Each provider's breaker state (for health reports)."""
        return {name: b.state for name, b in self.breakers.items()}

    def lookback(self, symbol: str, timeframe: Timeframe) -> timedelta | None:
        """How far back the primary provider for `symbol` reaches on `timeframe` (None: no known limit)."""
        providers = self._providers(symbol)
        caps = getattr(providers[0], "capabilities", None) if providers else None
        return caps.lookback(timeframe) if caps is not None else None

    def providers_for(self, asset_class: AssetClass) -> list[MarketData]:
        return list(self.routes.get(asset_class, []))

    async def close(self) -> None:
        for providers in self.routes.values():
            for p in providers:
                closer = getattr(p, "close", None)
                if closer is not None and asyncio.iscoroutinefunction(closer):
                    await closer()

    # -- routing ---------------------------------------------------------------------------------

    def asset_class_of(self, symbol: str) -> AssetClass:
        if self.registry is not None:
            return self.registry.get(symbol).asset_class
        if self._classes is None:
            self._classes = {i.symbol.upper(): i.asset_class for i in self.instruments()}
        found = self._classes.get(symbol.strip().upper())
        if found is None:
            raise UnknownSymbolError(symbol)
        return found

    def _providers(self, symbol: str) -> list[MarketData]:
        return self.routes.get(self.asset_class_of(symbol), [])

    async def _route(self, symbol: str, call: Callable[[MarketData], Awaitable[T]]) -> T:
        cls = self.asset_class_of(symbol)
        providers = self.routes.get(cls)
        if not providers:
            raise MarketDataError(f"no market-data provider is configured for {cls.value} ({symbol})")
        failures: list[Failure] = []
        for provider in providers:
            breaker = self.breakers[provider.name]
            if not breaker.allow():
                failures.append(Failure(provider.name, None))
                continue
            try:
                result = await self._call(provider, call)
            except asyncio.CancelledError:
                breaker.release()
                raise
            except Exception as exc:  # noqa: BLE001 - every provider failure is judged and reported
                if counts_as_failure(exc):
                    breaker.record_failure()
                else:
                    breaker.record_success()  # it answered
                failures.append(Failure(provider.name, exc))
                nxt = providers.index(provider) + 1
                if nxt < len(providers):
                    logger.warning("%s failed for %s (%s: %s); failing over to %s", provider.name, symbol,
                                   type(exc).__name__, exc, providers[nxt].name)
                continue
            breaker.record_success()
            if failures:
                logger.info("%s served %s after %s", provider.name, symbol, "; ".join(f.describe() for f in failures))
            return result
        raise self._exhausted(symbol, cls, failures)

    async def _call(self, provider: MarketData, call: Callable[[MarketData], Awaitable[T]]) -> T:
        if self.call_timeout is None:
            return await call(provider)
        try:
            return await asyncio.wait_for(call(provider), self.call_timeout)
        except TimeoutError:
            raise ProviderUnavailableError(f"{provider.name}: no answer within {self.call_timeout:g}s") from None

    def _exhausted(self, symbol: str, cls: AssetClass, failures: list[Failure]) -> Exception:
        errors = [f.error for f in failures if f.error is not None]
        if len(failures) == 1 and errors:
            return _named(errors[0], failures[0].provider)
        detail = f"{symbol}: every {cls.value} provider failed: " + "; ".join(f.describe() for f in failures)
        if errors and len(errors) == len(failures) and all(isinstance(e, UnknownSymbolError) for e in errors):
            suggestions = self.registry.suggest(symbol) if self.registry is not None else []
            return UnknownSymbolError(symbol, [s for s in suggestions if s != symbol])
        if errors and all(isinstance(e, DataValidationError) for e in errors):
            err: MarketDataError = DataValidationError(detail)
        elif all(e is None or isinstance(e, ProviderUnavailableError) for e in (f.error for f in failures)):
            err = _Unavailable(detail, failures)
        else:
            err = ProvidersExhaustedError(detail, failures)
        err.__cause__ = errors[-1] if errors else None
        return err


class _Unavailable(ProvidersExhaustedError, ProviderUnavailableError):
    """Every provider was down or skipped: a transient condition."""


def _named(exc: BaseException, provider: str) -> Exception:
    """The provider's error, its message prefixed with the provider's name (type kept). A
    UserInputError (UnknownSymbolError) is left as it is: its message is for a person."""
    if isinstance(exc, UserInputError):
        return exc
    if not isinstance(exc, MarketDataError):
        wrapped = MarketDataError(f"{provider}: unexpected {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        return wrapped
    if not str(exc).startswith(f"{provider}:") and not str(exc).startswith(f"{provider} "):
        exc.args = (f"{provider}: {exc}", *exc.args[1:])
    setattr(exc, "provider", provider)
    return exc


async def fetch_between(provider: MarketData, symbol: str, timeframe: Timeframe, *, start: datetime,
                        end: datetime) -> pd.DataFrame:
    """Bars with open >= start and close <= end: the provider's range fetch when it has one, else
    every bar up to `end` (an in-memory provider such as the CSV files) cut at `start`."""
    if isinstance(provider, RangeMarketData):
        return await provider.get_bars_between(symbol, timeframe, start=start, end=end)
    bars = await provider.get_bars(symbol, timeframe, end=end, limit=None)
    return bars[bars.index >= pd.Timestamp(start)]
