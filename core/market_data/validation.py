"""Validation of bars on the way in: every problem repaired or rejected with a logged reason.

`validate_bars` takes a frame in the BAR_COLUMNS convention (as an adapter built it from a vendor
payload) and returns the cleaned frame and a `ValidationReport`. Checks, in order:

==================  =========================================================================  ========
check               rule                                                                       action
==================  =========================================================================  ========
structure           missing columns, a non-datetime or naive index                             raises DataValidationError
unsorted            times out of order                                                         repaired (sorted)
missing values      NaN/inf in open/high/low/close                                              dropped
missing volume      NaN volume (indices have none)                                              repaired (0)
duplicate           the same open time twice                                                    repaired (last kept)
non-positive        a price <= 0 or a negative volume                                          dropped
inconsistent OHLC   high below max(open, close) or low above min(open, close): by at most       repaired (widened)
                    `ohlc_tolerance` of the close, else                                         dropped
outlier tick        a close whose log return in and out are both beyond `outlier_z` robust      dropped
                    z-scores (rolling median/MAD of the previous returns) and that reverts
split jump          an open/previous-close or close/previous-close ratio within                 rejected (whole series)
                    `split_tolerance` of 2, 3, 4, 5, 10, 3:2 or their inverses, that persists
                    to the close, on unremarkable volume (equities and unknown classes only)
gap                 bars the instrument's trading calendar expects but that are missing        reported (not filled)
==================  =========================================================================  ========

A report with a rejected issue means the series must not be used: `require_valid` raises
`DataRejectedError` (a DataValidationError) carrying the report. Every issue is logged as a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from core.domain import BAR_COLUMNS, AssetClass, Timeframe
from core.errors import DataValidationError
from core.instruments.calendars import CRYPTO_24_7, FX_24_5, XNYS, TradingCalendar
from core.market_data.resample import bars_from_block

logger = logging.getLogger(__name__)

_SPLIT_RATIOS = (2.0, 3.0, 4.0, 5.0, 10.0, 1.5, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 10, 2 / 3)
_MAD_TO_SIGMA = 1.4826
_NS_PER_DAY = 86_400 * 10**9
_DEFAULT_CALENDARS: dict[AssetClass, TradingCalendar] = {
    AssetClass.EQUITY: XNYS, AssetClass.INDEX: XNYS, AssetClass.CRYPTO: CRYPTO_24_7, AssetClass.FX: FX_24_5,
}


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    ohlc_tolerance: float = 0.005
    outlier_z: float = 10.0
    mad_window: int = 50
    mad_min_periods: int = 20
    min_scale: float = 1e-4  # floor of the robust return scale (flat series)
    check_splits: bool = True
    split_ratios: tuple[float, ...] = _SPLIT_RATIOS
    split_tolerance: float = 0.03
    split_volume_anomaly: float = 4.0  # volume / median volume above this: a real event, not a split
    max_listed_times: int = 5


DEFAULT_POLICY = ValidationPolicy()


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    check: str
    action: str  # "repaired", "dropped", "rejected", "reported"
    count: int
    detail: str
    times: tuple[pd.Timestamp, ...] = ()

    def describe(self) -> str:
        when = f" at {', '.join(t.isoformat() for t in self.times)}" if self.times else ""
        return f"{self.check}: {self.count} {self.action} ({self.detail}){when}"


@dataclass(frozen=True, slots=True)
class ValidationReport:
    symbol: str
    timeframe: Timeframe
    rows_in: int
    rows_out: int
    issues: tuple[ValidationIssue, ...] = field(default=())

    @property
    def rejected(self) -> bool:
        return any(i.action == "rejected" for i in self.issues)

    @property
    def clean(self) -> bool:
        return not self.issues

    def count(self, check: str) -> int:
        return sum(i.count for i in self.issues if i.check == check)

    def summary(self) -> str:
        head = f"{self.symbol} {self.timeframe.value}: {self.rows_in} rows in, {self.rows_out} out"
        return head if self.clean else head + "; " + "; ".join(i.describe() for i in self.issues)


class DataRejectedError(DataValidationError):
    """Validation rejected the whole series (e.g. an unadjusted split): nothing may be used or stored."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(f"rejected: {report.summary()}")
        self.report = report


def require_valid(bars: pd.DataFrame, *, symbol: str, timeframe: Timeframe, asset_class: AssetClass | None = None,
                  calendar: TradingCalendar | None = None,
                  policy: ValidationPolicy = DEFAULT_POLICY) -> tuple[pd.DataFrame, ValidationReport]:
    """`validate_bars`, raising DataRejectedError when the series is rejected."""
    clean, report = validate_bars(bars, symbol=symbol, timeframe=timeframe, asset_class=asset_class,
                                  calendar=calendar, policy=policy)
    if report.rejected:
        raise DataRejectedError(report)
    return clean, report


def validate_bars(bars: pd.DataFrame, *, symbol: str, timeframe: Timeframe, asset_class: AssetClass | None = None,
                  calendar: TradingCalendar | None = None,
                  policy: ValidationPolicy = DEFAULT_POLICY) -> tuple[pd.DataFrame, ValidationReport]:
    """Clean `bars` (see the module docstring). Returns the cleaned bars and what was done."""
    work = _Work.of(bars, symbol, timeframe, policy)
    work.sort()
    work.drop_missing()
    work.deduplicate()
    work.drop_non_positive()
    work.fix_ohlc()
    work.drop_outlier_ticks()
    if policy.check_splits and asset_class in (AssetClass.EQUITY, None):
        work.reject_split_jumps()
    cal = calendar or (_DEFAULT_CALENDARS.get(asset_class) if asset_class is not None else None)
    if cal is not None:
        work.report_gaps(cal)
    report = ValidationReport(symbol, timeframe, len(bars), 0 if work.rejected else len(work.times),
                              tuple(work.issues))
    for issue in report.issues:
        logger.warning("%s %s: %s", symbol, timeframe.value, issue.describe())
    if work.rejected:
        return bars_from_block(np.empty(0, np.int64), np.empty((0, len(BAR_COLUMNS)))), report
    return bars_from_block(work.times, work.values), report


@dataclass
class _Work:
    symbol: str
    timeframe: Timeframe
    policy: ValidationPolicy
    times: np.ndarray  # int64 UTC ns
    values: np.ndarray  # (n, 5) in BAR_COLUMNS order
    issues: list[ValidationIssue] = field(default_factory=list)
    rejected: bool = False

    @classmethod
    def of(cls, bars: pd.DataFrame, symbol: str, timeframe: Timeframe, policy: ValidationPolicy) -> _Work:
        missing = [c for c in BAR_COLUMNS if c not in bars.columns]
        if missing:
            raise DataValidationError(f"{symbol} {timeframe.value}: bars lack column(s) {', '.join(missing)}")
        if not isinstance(bars.index, pd.DatetimeIndex) or bars.index.tz is None:
            raise DataValidationError(f"{symbol} {timeframe.value}: bars need a tz-aware DatetimeIndex")
        try:
            values = bars[list(BAR_COLUMNS)].to_numpy(dtype=np.float64, copy=True)
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"{symbol} {timeframe.value}: non-numeric OHLCV ({exc})") from exc
        times = bars.index.tz_convert("UTC").as_unit("ns").asi8.copy()
        return cls(symbol, timeframe, policy, times, values)

    # -- helpers ---------------------------------------------------------------------------------

    def _note(self, check: str, action: str, mask_or_times: np.ndarray, detail: str) -> None:
        times = self.times[mask_or_times] if mask_or_times.dtype == bool else mask_or_times
        if len(times) == 0:
            return
        listed = tuple(pd.Timestamp(int(t), tz="UTC") for t in times[: self.policy.max_listed_times])
        self.issues.append(ValidationIssue(check, action, int(len(times)), detail, listed))

    def _keep(self, keep: np.ndarray) -> None:
        self.times, self.values = self.times[keep], self.values[keep]

    # -- checks ----------------------------------------------------------------------------------

    def sort(self) -> None:
        if len(self.times) > 1 and (np.diff(self.times) < 0).any():
            order = np.argsort(self.times, kind="stable")
            self.issues.append(ValidationIssue("unsorted", "repaired", 1, "bars sorted by time"))
            self._keep(order)

    def drop_missing(self) -> None:
        bad = ~np.isfinite(self.values[:, :4]).all(axis=1)
        self._note("missing values", "dropped", bad, "NaN or infinite price")
        self._keep(~bad)
        no_volume = ~np.isfinite(self.values[:, 4])
        self._note("missing volume", "repaired", no_volume, "volume set to 0")
        self.values[no_volume, 4] = 0.0

    def deduplicate(self) -> None:
        if len(self.times) < 2:
            return
        same_next = self.times[:-1] == self.times[1:]
        dup = np.r_[same_next, False]  # superseded by the next row (sorted stably: the later one wins)
        if dup.any():
            conflicting = int((same_next & ~(self.values[:-1] == self.values[1:]).all(axis=1)).sum())
            detail = "kept the last" + (f"; {conflicting} with conflicting values" if conflicting else "")
            self._note("duplicate", "repaired", dup, detail)
            self._keep(~dup)

    def drop_non_positive(self) -> None:
        bad = (self.values[:, :4] <= 0).any(axis=1) | (self.values[:, 4] < 0)
        self._note("non-positive", "dropped", bad, "price <= 0 or volume < 0")
        self._keep(~bad)

    def fix_ohlc(self) -> None:
        o, h, lo, c = (self.values[:, i] for i in range(4))
        top, bottom = np.maximum(o, c), np.minimum(o, c)
        excess = np.maximum.reduce([top - h, lo - bottom, lo - h, np.zeros_like(c)]) / c
        broken = excess > 0
        if not broken.any():
            return
        fixable = broken & (excess <= self.policy.ohlc_tolerance)
        self._note("inconsistent OHLC", "repaired", fixable, "high/low widened to cover open and close")
        self.values[fixable, 1] = self.values[fixable, :4].max(axis=1)
        self.values[fixable, 2] = self.values[fixable, :4].min(axis=1)
        hopeless = broken & ~fixable
        self._note("inconsistent OHLC", "dropped", hopeless,
                   f"high/low off by more than {self.policy.ohlc_tolerance:.1%} of the close")
        self._keep(~hopeless)

    def _robust_z(self, returns: np.ndarray) -> np.ndarray:
        """z of each return against the median/MAD of the `mad_window` returns before it (NaN before
        `mad_min_periods`)."""
        p = self.policy
        r = pd.Series(returns)
        med = r.rolling(p.mad_window, min_periods=p.mad_min_periods).median().shift(1)
        mad = (r - med).abs().rolling(p.mad_window, min_periods=p.mad_min_periods).median().shift(1)
        scale = np.maximum(_MAD_TO_SIGMA * mad.to_numpy(), p.min_scale)
        return ((r - med).to_numpy()) / scale

    def drop_outlier_ticks(self) -> None:
        if len(self.times) < self.policy.mad_min_periods + 3:
            return
        r = np.diff(np.log(self.values[:, 3]))
        z = self._robust_z(r)
        z_in, z_out = z[:-1], z[1:]  # for bars 1..n-2: the return into and out of the bar
        r_in, r_out = r[:-1], r[1:]
        limit = self.policy.outlier_z
        with np.errstate(invalid="ignore"):
            spike = ((np.abs(z_in) > limit) & (np.abs(z_out) > limit) & (np.sign(r_in) != np.sign(r_out))
                     & (np.abs(r_in + r_out) < 0.5 * np.abs(r_in)))
        bad = np.r_[False, spike, False]
        self._note("outlier tick", "dropped", bad, f"close beyond {limit:g} robust z and reverting")
        self._keep(~bad)

    def reject_split_jumps(self) -> None:
        if len(self.times) < 2:
            return
        p = self.policy
        o, c, vol = self.values[1:, 0], self.values[:, 3], self.values[:, 4]
        gap_ratio, day_ratio = o / c[:-1], c[1:] / c[:-1]
        ratios = np.asarray(p.split_ratios)
        nearest = ratios[np.argmin(np.abs(np.log(gap_ratio)[:, None] - np.log(ratios)[None, :]), axis=1)]
        near_day = ratios[np.argmin(np.abs(np.log(day_ratio)[:, None] - np.log(ratios)[None, :]), axis=1)]
        gap_near = np.abs(gap_ratio / nearest - 1) <= p.split_tolerance
        day_near = np.abs(day_ratio / near_day - 1) <= p.split_tolerance
        nearest = np.where(gap_near, nearest, near_day)
        near = gap_near | day_near
        persists = np.abs(np.log(day_ratio / nearest)) <= 0.1
        med_vol = pd.Series(vol).rolling(p.mad_window, min_periods=1).median().shift(1).to_numpy()[1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            vol_ratio = np.where(med_vol > 0, vol[1:] / med_vol, 0.0)
        calm = ~(vol_ratio > p.split_volume_anomaly)
        jump = near & persists & calm
        if jump.any():
            hits = self.times[1:][jump]
            ratio_text = ", ".join(f"{1 / r:.3g}:1" if r < 1 else f"1:{r:.3g}" for r in nearest[jump][:3])
            self._note("split jump", "rejected", hits,
                       f"price ratio like an unadjusted split ({ratio_text}) on ordinary volume")
            self.rejected = True

    def report_gaps(self, calendar: TradingCalendar) -> None:
        if len(self.times) < 2 or self.rejected:
            return
        expected = expected_opens(calendar, self.timeframe, int(self.times[0]), int(self.times[-1]))
        if expected is None:
            return
        missing = np.setdiff1d(expected, self.times, assume_unique=True)
        if len(missing):
            runs = 1 + int((np.diff(missing) > _ns(self.timeframe.duration)).sum())
            self._note("gap", "reported", missing, f"{runs} run(s) of bars the {calendar.name} calendar expects")


def expected_opens(calendar: TradingCalendar, timeframe: Timeframe, first_ns: int, last_ns: int) -> np.ndarray | None:
    """Open times (int64 UTC ns) in ``[first, last]`` at which `calendar` expects a `timeframe` bar,
    or None when the calendar cannot say (equity bins that do not follow the session)."""
    step = _ns(timeframe.duration)
    if timeframe is Timeframe.D1:
        days = np.arange(first_ns - first_ns % _NS_PER_DAY, last_ns + 1, _NS_PER_DAY)
        try:
            keep = [calendar.is_session(_date(int(t))) for t in days]
        except ValueError:  # outside the calendar's years
            return None
        return days[np.asarray(keep, dtype=bool)] if len(days) else days
    if calendar.name == XNYS.name:
        if timeframe.duration > timedelta(hours=1):
            return None
        return _session_grid(calendar, step, first_ns, last_ns)
    grid = np.arange(first_ns, last_ns + 1, step)
    if calendar.name == FX_24_5.name:
        local = pd.DatetimeIndex(grid.view("datetime64[ns]")).tz_localize("UTC").tz_convert("America/New_York")
        minutes = local.hour * 60 + local.minute
        roll = 17 * 60
        wd = local.day_of_week
        open_ = (wd < 4) | ((wd == 4) & (minutes < roll)) | ((wd == 6) & (minutes >= roll))
        return grid[np.asarray(open_, dtype=bool)]
    return grid


def _session_grid(calendar: TradingCalendar, step: int, first_ns: int, last_ns: int) -> np.ndarray | None:
    out: list[np.ndarray] = []
    day = _date(first_ns)
    try:
        while _ns_of(datetime.combine(day, datetime.min.time())) <= last_ns + _NS_PER_DAY:
            bounds = calendar.session_bounds(day)
            if bounds is not None:
                start, end = (_ns_of(b) for b in bounds)
                out.append(np.arange(start, end, step))
            day += timedelta(days=1)
    except ValueError:
        return None
    grid = np.concatenate(out) if out else np.empty(0, np.int64)
    return grid[(grid >= first_ns) & (grid <= last_ns)]


def _ns(delta: timedelta) -> int:
    return (delta // timedelta(microseconds=1)) * 1000


def _ns_of(when: datetime) -> int:
    ts = pd.Timestamp(when)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.as_unit("ns").value)


def _date(ns: int) -> date:
    return pd.Timestamp(int(ns), tz="UTC").date()
