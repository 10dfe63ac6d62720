"""The indicator catalogue: every indicator the engines offer, by family, with its parameters and columns.

pandas-ta is the catalogue's reference implementation (``Indicator.reference`` names the pandas-ta call
and its columns); TA-Lib is the fast backend (``Indicator.talib`` names the TA-Lib call, or
``Indicator.kernel`` a small numpy step of the TA-Lib engine for columns TA-Lib has no function for).
This module imports neither library: it is data, read by ``core.indicators.talib_engine`` and by the
tests that hold the TA-Lib engine to pandas-ta.

Where pandas-ta's own definition differs from the one computed here, ``PandasTaRef.differs`` says how
and ``PandasTaRef.match`` says what still holds ("tail": equal once the warm-up has passed; "none":
not comparable). ``core=True`` marks the indicators whose columns are ``CORE_COLUMNS`` (the signal path
reads only those).
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.indicators.base import CORE_COLUMNS


class Family(enum.StrEnum):
    TREND = "trend"
    MOMENTUM = "momentum"
    VOLATILITY = "volatility"
    VOLUME = "volume"
    CANDLESTICK = "candlestick"


ParamValue = int | float | str


@dataclass(frozen=True, slots=True)
class TalibCall:
    """One TA-Lib function call: its inputs (bar columns or earlier output columns), keyword parameters,
    and our column name for each of its outputs, in TA-Lib's output order."""

    function: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    kwargs: Mapping[str, ParamValue] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class PandasTaRef:
    """The pandas-ta call that defines an indicator, and which of its columns is which of ours.

    `columns` maps our column to the prefix of pandas-ta's column name ("" when pandas-ta returns a
    Series). `rtol` is the tolerance of the comparison where the definitions agree but the arithmetic
    differs (for example a running sum of squares against a two-pass variance)."""

    function: str
    inputs: tuple[str, ...]
    columns: Mapping[str, str] = field(hash=False)
    kwargs: Mapping[str, ParamValue] = field(default_factory=dict, hash=False)
    match: Literal["exact", "tail", "none"] = "exact"
    rtol: float = 1e-9
    differs: str = ""


@dataclass(frozen=True, slots=True)
class Indicator:
    name: str
    family: Family
    params: Mapping[str, ParamValue] = field(hash=False)
    outputs: tuple[str, ...]
    description: str
    talib: TalibCall | None = None
    kernel: str | None = None  # a numpy step of the TA-Lib engine, for columns TA-Lib has no function for
    needs: tuple[str, ...] = ()  # columns of earlier entries a kernel reads
    reference: PandasTaRef | None = None
    core: bool = False


_C = ("close",)
_HL = ("high", "low")
_HLC = ("high", "low", "close")
_HLCV = ("high", "low", "close", "volume")
_OHLC = ("open", "high", "low", "close")


def _ta(name: str, family: Family, description: str, function: str, inputs: tuple[str, ...],
        outputs: tuple[str, ...], kwargs: Mapping[str, ParamValue] | None = None,
        reference: PandasTaRef | None = None, core: bool = False) -> Indicator:
    """An indicator that is one TA-Lib call; its parameters are the call's keyword arguments."""
    kw = dict(kwargs or {})
    return Indicator(name, family, kw, outputs, description, talib=TalibCall(function, inputs, outputs, kw),
                     reference=reference, core=core)


def _ref(function: str, inputs: tuple[str, ...], columns: Mapping[str, str], **kwargs: ParamValue) -> PandasTaRef:
    return PandasTaRef(function, inputs, dict(columns), dict(kwargs))


def _ma(kind: str, length: int, description: str, core: bool = False, source: str = "close") -> Indicator:
    """A moving average of `source` from TA-Lib's function of the same name (SMA, EMA, WMA...)."""
    col = f"{kind.lower()}_{length}" if source == "close" else f"{source}_{kind.lower()}_{length}"
    return _ta(col, Family.TREND if source == "close" else Family.VOLUME, description, kind, (source,), (col,),
               {"timeperiod": length}, _ref(kind.lower(), (source,), {col: ""}, length=length), core)


def _candle(pattern: str, description: str, reference: PandasTaRef | None = None) -> Indicator:
    """A TA-Lib candlestick pattern: +100 bullish, -100 bearish, 0 none (as pandas-ta's cdl_pattern)."""
    col = f"cdl_{pattern}"
    ref = reference or _ref("cdl_pattern", _OHLC, {col: f"CDL_{pattern.upper()}"}, name=pattern)
    return _ta(col, Family.CANDLESTICK, description, f"CDL{pattern.upper().replace('_', '')}", _OHLC, (col,),
               reference=ref)


_TREND: tuple[Indicator, ...] = (
    _ma("SMA", 5, "simple moving average, 5 bars", core=True),
    _ma("SMA", 20, "simple moving average, 20 bars", core=True),
    _ma("SMA", 50, "simple moving average, 50 bars", core=True),
    _ma("SMA", 200, "simple moving average, 200 bars", core=True),
    _ma("EMA", 20, "exponential moving average, 20 bars (seeded with the SMA)"),
    _ma("EMA", 50, "exponential moving average, 50 bars (seeded with the SMA)", core=True),
    _ma("EMA", 200, "exponential moving average, 200 bars (seeded with the SMA)", core=True),
    _ma("WMA", 20, "linearly weighted moving average, 20 bars"),
    _ma("DEMA", 20, "double exponential moving average, 20 bars"),
    _ma("TEMA", 20, "triple exponential moving average, 20 bars"),
    _ma("TRIMA", 20, "triangular moving average, 20 bars"),
    _ta("kama_10", Family.TREND, "Kaufman adaptive moving average (10; fast 2, slow 30)", "KAMA", _C, ("kama_10",),
        {"timeperiod": 10},
        PandasTaRef("kama", _C, {"kama_10": "KAMA_"}, {"length": 10, "fast": 2, "slow": 30}, match="tail", rtol=1e-6,
                    differs="pandas-ta seeds bar 10 with the SMA of the first 10 closes; TA-Lib seeds with "
                            "the 10th close and starts a bar later; equal once the seed has decayed (on AAPL "
                            "daily 2e-7 after 100 bars, 1e-15 after 600; we follow TA-Lib)")),
    _ta("t3_5", Family.TREND, "Tillson T3 moving average (5, volume factor 0.7)", "T3", _C, ("t3_5",),
        {"timeperiod": 5, "vfactor": 0.7}, _ref("t3", _C, {"t3_5": "T3_"}, length=5, a=0.7)),
    _ta("ht_trendline", Family.TREND, "Hilbert transform instantaneous trendline", "HT_TRENDLINE", _C,
        ("ht_trendline",), reference=_ref("ht_trendline", _C, {"ht_trendline": ""})),
    _ta("midpoint_14", Family.TREND, "midpoint of the highest and lowest close over 14 bars", "MIDPOINT", _C,
        ("midpoint_14",), {"timeperiod": 14}, _ref("midpoint", _C, {"midpoint_14": "MIDPOINT_"}, length=14)),
    _ta("midprice_14", Family.TREND, "midpoint of the highest high and lowest low over 14 bars", "MIDPRICE", _HL,
        ("midprice_14",), {"timeperiod": 14}, _ref("midprice", _HL, {"midprice_14": "MIDPRICE_"}, length=14)),
    _ta("linreg_14", Family.TREND, "linear regression of the close over 14 bars, value at the last bar",
        "LINEARREG", _C, ("linreg_14",), {"timeperiod": 14}, _ref("linreg", _C, {"linreg_14": "LR_"}, length=14)),
    _ta("linreg_slope_14", Family.TREND, "slope of the 14-bar linear regression of the close", "LINEARREG_SLOPE",
        _C, ("linreg_slope_14",), {"timeperiod": 14},
        _ref("linreg", _C, {"linreg_slope_14": "LRm_"}, length=14, slope=True)),
    _ta("sar", Family.TREND, "parabolic SAR (acceleration 0.02, maximum 0.2)", "SAR", _HL, ("sar",),
        {"acceleration": 0.02, "maximum": 0.2},
        PandasTaRef("psar", _HL, {"sar": "PSARl_"}, {"af0": 0.02, "af": 0.02, "max_af": 0.2}, match="none",
                    differs="pandas-ta's own loop starts from the first bar's high or low and splits long and "
                            "short stops into two columns; combined, they differ from TA-Lib's SAR on 29 % of "
                            "AAPL's daily rows and 39 % of BTC's last 3,000 hourly rows, all through the "
                            "series (both are Wilder's parabolic SAR; we follow TA-Lib)")),
    _ta("adx_14", Family.TREND, "average directional index (Wilder, 14)", "ADX", _HLC, ("adx_14",),
        {"timeperiod": 14}, _ref("adx", _HLC, {"adx_14": "ADX_"}, length=14), core=True),
    _ta("adxr_14", Family.TREND, "ADX rating: mean of ADX now and 13 bars ago", "ADXR", _HLC, ("adxr_14",),
        {"timeperiod": 14},
        PandasTaRef("adx", _HLC, {"adxr_14": "ADXR_"}, {"length": 14, "adxr_length": 13},
                    differs="pandas-ta's default ADXR looks back 2 bars; TA-Lib's (and Wilder's) period - 1 = 13, "
                            "which is what pandas-ta gives with adxr_length=13 (we follow TA-Lib)")),
    _ta("plus_di_14", Family.TREND, "plus directional indicator (14)", "PLUS_DI", _HLC, ("plus_di_14",),
        {"timeperiod": 14},
        PandasTaRef("adx", _HLC, {"plus_di_14": "DMP_"}, {"length": 14}, match="none",
                    differs="with TA-Lib installed pandas-ta's DMP column is +DM (TA-Lib PLUS_DM), not +DI")),
    _ta("minus_di_14", Family.TREND, "minus directional indicator (14)", "MINUS_DI", _HLC, ("minus_di_14",),
        {"timeperiod": 14},
        PandasTaRef("adx", _HLC, {"minus_di_14": "DMN_"}, {"length": 14}, match="none",
                    differs="with TA-Lib installed pandas-ta's DMN column is -DM (TA-Lib MINUS_DM), not -DI")),
    _ta("aroon_14", Family.TREND, "Aroon down and up (14)", "AROON", _HL, ("aroon_down_14", "aroon_up_14"),
        {"timeperiod": 14}, _ref("aroon", _HL, {"aroon_down_14": "AROOND_", "aroon_up_14": "AROONU_"}, length=14)),
    _ta("aroonosc_14", Family.TREND, "Aroon oscillator (up - down, 14)", "AROONOSC", _HL, ("aroonosc_14",),
        {"timeperiod": 14}, _ref("aroon", _HL, {"aroonosc_14": "AROONOSC_"}, length=14)),
    Indicator("donchian_20", Family.TREND, {"length": 20}, ("dc_lower_20", "dc_mid_20", "dc_upper_20"),
              "Donchian channel: lowest low, midpoint, highest high over 20 bars", kernel="donchian",
              reference=_ref("donchian", _HL, {"dc_lower_20": "DCL_", "dc_mid_20": "DCM_", "dc_upper_20": "DCU_"},
                             lower_length=20, upper_length=20)),
)

_MOMENTUM: tuple[Indicator, ...] = (
    _ta("rsi_14", Family.MOMENTUM, "relative strength index (Wilder, 14)", "RSI", _C, ("rsi_14",),
        {"timeperiod": 14}, _ref("rsi", _C, {"rsi_14": "RSI_"}, length=14), core=True),
    _ta("rsi_2", Family.MOMENTUM, "relative strength index (Wilder, 2): the pullback setup's short-term oversold",
        "RSI", _C, ("rsi_2",), {"timeperiod": 2}, _ref("rsi", _C, {"rsi_2": "RSI_"}, length=2), core=True),
    _ta("macd_12_26_9", Family.MOMENTUM, "MACD line, signal and histogram (12, 26, 9)", "MACD", _C,
        ("macd", "macd_signal", "macd_hist"), {"fastperiod": 12, "slowperiod": 26, "signalperiod": 9},
        _ref("macd", _C, {"macd": "MACD_", "macd_signal": "MACDs_", "macd_hist": "MACDh_"}, fast=12, slow=26, signal=9),
        core=True),
    _ta("stoch_14_3_3", Family.MOMENTUM, "slow stochastic: %K(14) smoothed by SMA 3, %D = SMA 3 of %K", "STOCH",
        _HLC, ("stoch_k", "stoch_d"),
        {"fastk_period": 14, "slowk_period": 3, "slowk_matype": 0, "slowd_period": 3, "slowd_matype": 0},
        _ref("stoch", _HLC, {"stoch_k": "STOCHk_", "stoch_d": "STOCHd_"}, k=14, d=3, smooth_k=3), core=True),
    _ta("stochf_14_3", Family.MOMENTUM, "fast stochastic: %K(14), %D = SMA 3 of %K", "STOCHF", _HLC,
        ("stochf_k", "stochf_d"), {"fastk_period": 14, "fastd_period": 3, "fastd_matype": 0},
        _ref("stochf", _HLC, {"stochf_k": "STOCHFk_", "stochf_d": "STOCHFd_"}, k=14, d=3)),
    Indicator("stochrsi_14_14_3_3", Family.MOMENTUM, {"length": 14, "rsi_length": 14, "k": 3, "d": 3},
              ("stochrsi_k", "stochrsi_d"),
              "stochastic RSI: stochastic(14) of RSI(14), %K = SMA 3, %D = SMA 3 of %K (pandas-ta's definition)",
              kernel="stochrsi", needs=("rsi_14",),
              reference=_ref("stochrsi", _C, {"stochrsi_k": "STOCHRSIk_", "stochrsi_d": "STOCHRSId_"},
                             length=14, rsi_length=14, k=3, d=3)),
    _ta("cci_20", Family.MOMENTUM, "commodity channel index (20)", "CCI", _HLC, ("cci_20",), {"timeperiod": 20},
        _ref("cci", _HLC, {"cci_20": "CCI_"}, length=20)),
    _ta("cmo_14", Family.MOMENTUM, "Chande momentum oscillator (14)", "CMO", _C, ("cmo_14",), {"timeperiod": 14},
        _ref("cmo", _C, {"cmo_14": "CMO_"}, length=14)),
    _ta("mom_10", Family.MOMENTUM, "momentum: close - close 10 bars ago", "MOM", _C, ("mom_10",), {"timeperiod": 10},
        _ref("mom", _C, {"mom_10": "MOM_"}, length=10)),
    _ta("roc_10", Family.MOMENTUM, "rate of change over 10 bars, percent", "ROC", _C, ("roc_10",), {"timeperiod": 10},
        _ref("roc", _C, {"roc_10": "ROC_"}, length=10)),
    _ta("willr_14", Family.MOMENTUM, "Williams %R (14)", "WILLR", _HLC, ("willr_14",), {"timeperiod": 14},
        _ref("willr", _HLC, {"willr_14": "WILLR_"}, length=14)),
    _ta("ultosc_7_14_28", Family.MOMENTUM, "ultimate oscillator (7, 14, 28)", "ULTOSC", _HLC, ("ultosc",),
        {"timeperiod1": 7, "timeperiod2": 14, "timeperiod3": 28}, _ref("uo", _HLC, {"ultosc": "UO_"}, fast=7, medium=14, slow=28)),
    _ta("apo_12_26", Family.MOMENTUM, "absolute price oscillator: SMA 12 - SMA 26", "APO", _C, ("apo_12_26",),
        {"fastperiod": 12, "slowperiod": 26, "matype": 0}, _ref("apo", _C, {"apo_12_26": "APO_"}, fast=12, slow=26)),
    _ta("ppo_12_26", Family.MOMENTUM, "percentage price oscillator: (SMA 12 - SMA 26) / SMA 26, percent", "PPO", _C,
        ("ppo_12_26",), {"fastperiod": 12, "slowperiod": 26, "matype": 0},
        _ref("ppo", _C, {"ppo_12_26": "PPO_"}, fast=12, slow=26)),
    _ta("trix_18", Family.MOMENTUM, "TRIX: 1-bar rate of change of the triple EMA(18), percent", "TRIX", _C,
        ("trix_18",), {"timeperiod": 18}, _ref("trix", _C, {"trix_18": "TRIX_"}, length=18)),
    _ta("bop", Family.MOMENTUM, "balance of power: (close - open) / (high - low)", "BOP", _OHLC, ("bop",),
        reference=_ref("bop", _OHLC, {"bop": "BOP"})),
    Indicator("zscore_20", Family.MOMENTUM, {"length": 20}, ("zscore_20",),
              "price z-score: (close - SMA20) / population std of the close over 20 bars", kernel="zscore",
              needs=("sma_20",), core=True,
              reference=PandasTaRef("zscore", _C, {"zscore_20": "ZS_"}, {"length": 20}, rtol=1e-6,
                                    differs="pandas-ta's std is TA-Lib STDDEV (running sum of squares, relative "
                                            "error up to ~1e-8 on long series); ours is two-pass over each window, "
                                            "as pandas' rolling std in core.indicators.derived_columns")),
    Indicator("dist_sma20_atr", Family.MOMENTUM, {"ma": 20, "atr": 14}, ("dist_sma20_atr",),
              "distance of the close from SMA20 in ATR(14)s", kernel="distance_atr", needs=("sma_20", "atr_14"),
              core=True),
    Indicator("gap", Family.MOMENTUM, {}, ("gap",), "opening gap: open / previous close - 1", kernel="gap", core=True),
    Indicator("ret_1", Family.MOMENTUM, {"periods": 1}, ("ret_1",), "1-bar return of the close", kernel="ret",
              core=True, reference=_ref("percent_return", _C, {"ret_1": "PCTRET_"}, length=1)),
    Indicator("ret_5", Family.MOMENTUM, {"periods": 5}, ("ret_5",), "5-bar return of the close", kernel="ret",
              core=True, reference=_ref("percent_return", _C, {"ret_5": "PCTRET_"}, length=5)),
)

_VOLATILITY: tuple[Indicator, ...] = (
    _ta("atr_14", Family.VOLATILITY, "average true range (Wilder's RMA, 14)", "ATR", _HLC, ("atr_14",),
        {"timeperiod": 14}, _ref("atr", _HLC, {"atr_14": "ATRr_"}, length=14), core=True),
    _ta("natr_14", Family.VOLATILITY, "normalised ATR: ATR(14) / close, percent", "NATR", _HLC, ("natr_14",),
        {"timeperiod": 14}, _ref("natr", _HLC, {"natr_14": "NATR_"}, length=14)),
    _ta("trange", Family.VOLATILITY, "true range", "TRANGE", _HLC, ("trange",),
        reference=_ref("true_range", _HLC, {"trange": "TRUERANGE_"})),
    _ta("bbands_20_2", Family.VOLATILITY, "Bollinger bands: SMA20 +/- 2 population std", "BBANDS", _C,
        ("bb_upper", "bb_mid", "bb_lower"), {"timeperiod": 20, "nbdevup": 2.0, "nbdevdn": 2.0, "matype": 0},
        _ref("bbands", _C, {"bb_lower": "BBL_", "bb_mid": "BBM_", "bb_upper": "BBU_"}, length=20, lower_std=2.0,
             upper_std=2.0), core=True),
    Indicator("bb_pctb_20_2", Family.VOLATILITY, {"length": 20, "std": 2.0}, ("bb_pctb",),
              "Bollinger %B: (close - lower) / (upper - lower); NaN for a band of zero width",
              kernel="bb_pctb", needs=("bb_lower", "bb_upper"), core=True,
              reference=PandasTaRef("bbands", _C, {"bb_pctb": "BBP_"}, {"length": 20, "lower_std": 2.0, "upper_std": 2.0},
                                    differs="pandas-ta adds machine epsilon to a zero width (and to every row when "
                                            "any close equals the lower band), giving 0 instead of NaN for a flat "
                                            "band; otherwise equal")),
    _ta("stddev_20", Family.VOLATILITY, "population standard deviation of the close over 20 bars", "STDDEV", _C,
        ("stddev_20",), {"timeperiod": 20, "nbdev": 1.0}, _ref("stdev", _C, {"stddev_20": "STDEV_"}, length=20)),
    Indicator("keltner_20_2", Family.VOLATILITY, {"length": 20, "scalar": 2.0}, ("kc_lower", "kc_mid", "kc_upper"),
              "Keltner channel: EMA20 of the close +/- 2 EMA20 of the true range", kernel="keltner",
              reference=_ref("kc", _HLC, {"kc_lower": "KCL", "kc_mid": "KCB", "kc_upper": "KCU"}, length=20, scalar=2)),
)

_VOLUME: tuple[Indicator, ...] = (
    _ta("obv", Family.VOLUME, "on-balance volume", "OBV", ("close", "volume"), ("obv",),
        reference=_ref("obv", ("close", "volume"), {"obv": "OBV"})),
    _ta("ad", Family.VOLUME, "Chaikin accumulation/distribution line", "AD", _HLCV, ("ad",),
        reference=_ref("ad", _HLCV, {"ad": "AD"})),
    _ta("adosc_3_10", Family.VOLUME, "Chaikin A/D oscillator: EMA 3 - EMA 10 of the A/D line", "ADOSC", _HLCV,
        ("adosc_3_10",), {"fastperiod": 3, "slowperiod": 10}, _ref("adosc", _HLCV, {"adosc_3_10": "ADOSC_"}, fast=3, slow=10)),
    _ta("mfi_14", Family.VOLUME, "money flow index (14)", "MFI", _HLCV, ("mfi_14",), {"timeperiod": 14},
        _ref("mfi", _HLCV, {"mfi_14": "MFI_"}, length=14)),
    Indicator("cmf_20", Family.VOLUME, {"length": 20}, ("cmf_20",),
              "Chaikin money flow: 20-bar sum of money-flow volume / 20-bar sum of volume", kernel="cmf",
              reference=PandasTaRef("cmf", _HLCV, {"cmf_20": "CMF_"}, {"length": 20},
                                    differs="pandas-ta divides by high - low plus machine epsilon on bars with "
                                            "high == low (a huge money-flow value); we count such a bar's money-flow "
                                            "volume as 0, as TA-Lib's AD does; otherwise equal")),
    Indicator("vwma_20", Family.VOLUME, {"length": 20}, ("vwma_20",),
              "volume-weighted moving average of the close, 20 bars", kernel="vwma",
              reference=_ref("vwma", ("close", "volume"), {"vwma_20": "VWMA_"}, length=20)),
    _ma("SMA", 20, "simple moving average of the volume, 20 bars", source="volume"),
    Indicator("volume_pct_50", Family.VOLUME, {"length": 50, "min_periods": 20}, ("volume_pct_50",),
              "percentile rank of the volume among the last 50 bars (ties averaged; from 20 bars on)",
              kernel="volume_rank", core=True),
)

_CANDLES: tuple[Indicator, ...] = (
    _candle("doji", "doji: open and close (almost) equal",
            PandasTaRef("cdl_pattern", _OHLC, {"cdl_doji": "CDL_DOJI"}, {"name": "doji"}, match="none",
                        differs="pandas-ta's own cdl_doji tests body < 10 % of the 10-bar SMA of the high-low "
                                "range including the current bar; TA-Lib's CDLDOJI body <= 10 % of the average "
                                "of the 10 bars before it (8 of AAPL's 1,259 daily rows differ; we follow TA-Lib)")),
    _candle("dragonflydoji", "dragonfly doji: doji with a long lower shadow"),
    _candle("gravestonedoji", "gravestone doji: doji with a long upper shadow"),
    _candle("hammer", "hammer: small body, long lower shadow, after a decline"),
    _candle("hangingman", "hanging man: hammer shape after an advance"),
    _candle("invertedhammer", "inverted hammer: small body, long upper shadow, after a decline"),
    _candle("shootingstar", "shooting star: small body, long upper shadow, after an advance"),
    _candle("engulfing", "engulfing: a body that engulfs the previous opposite body"),
    _candle("harami", "harami: a small body inside the previous large opposite body"),
    _candle("piercing", "piercing line: a bullish close above the previous body's midpoint"),
    _candle("darkcloudcover", "dark cloud cover: a bearish close below the previous body's midpoint"),
    _candle("morningstar", "morning star: three-bar bullish reversal"),
    _candle("eveningstar", "evening star: three-bar bearish reversal"),
    _candle("3whitesoldiers", "three white soldiers: three advancing white bodies"),
    _candle("3blackcrows", "three black crows: three declining black bodies"),
    _candle("marubozu", "marubozu: a body with (almost) no shadows"),
    _candle("spinningtop", "spinning top: small body, shadows longer than the body"),
)

CATALOGUE: tuple[Indicator, ...] = _TREND + _MOMENTUM + _VOLATILITY + _VOLUME + _CANDLES
"""Every indicator, grouped by family."""


def core_indicators() -> tuple[Indicator, ...]:
    """The catalogue entries whose outputs are CORE_COLUMNS (what the signal path reads)."""
    return tuple(i for i in CATALOGUE if i.core)


def by_family() -> dict[Family, tuple[Indicator, ...]]:
    return {f: tuple(i for i in CATALOGUE if i.family is f) for f in Family}


def indicator(name: str) -> Indicator:
    for ind in CATALOGUE:
        if ind.name == name:
            return ind
    raise KeyError(f"no indicator named {name!r} in the catalogue")


def output_columns(full: bool = True) -> tuple[str, ...]:
    """The columns an engine returns: CORE_COLUMNS first, then (full) every other catalogue output in order."""
    if not full:
        return CORE_COLUMNS
    rest = [c for i in CATALOGUE for c in i.outputs if c not in CORE_COLUMNS]
    return CORE_COLUMNS + tuple(rest)


def catalogue_markdown() -> str:
    """The catalogue as Markdown, one table per family (for the README)."""
    lines: list[str] = []
    for family, items in by_family().items():
        lines += [f"**{family.value}** ({len(items)})", "", "| indicator | parameters | columns | what |", "|---|---|---|---|"]
        for i in items:
            params = ", ".join(f"{k}={v}" for k, v in i.params.items()) or "-"
            lines.append(f"| `{i.name}` | {params} | {', '.join(f'`{c}`' for c in i.outputs)} | {i.description} |")
        lines.append("")
    return "\n".join(lines)


def _check() -> None:
    """Import-time consistency: unique names and columns, core outputs exactly CORE_COLUMNS, one backend
    per entry, and every kernel's inputs produced by TA-Lib entries (engines run TA-Lib calls first)."""
    names = [i.name for i in CATALOGUE]
    columns = [c for i in CATALOGUE for c in i.outputs]
    dup = {n for n in names if names.count(n) > 1} | {c for c in columns if columns.count(c) > 1}
    if dup:
        raise ValueError(f"catalogue: duplicate names or columns {sorted(dup)}")
    core = sorted(c for i in core_indicators() for c in i.outputs)
    if core != sorted(CORE_COLUMNS):
        raise ValueError(f"catalogue: core outputs {core} are not CORE_COLUMNS")
    available = {c for i in CATALOGUE if i.talib is not None for c in i.outputs}
    for i in CATALOGUE:
        if (i.talib is None) == (i.kernel is None):
            raise ValueError(f"catalogue: {i.name} needs exactly one of a TA-Lib call and a kernel")
        missing = set(i.needs) - available
        if missing:
            raise ValueError(f"catalogue: {i.name} needs {sorted(missing)}, which no TA-Lib entry gives")
        if i.core and not {c for j in CATALOGUE if j.core for c in j.outputs} >= set(i.needs):
            raise ValueError(f"catalogue: core indicator {i.name} needs a non-core column")


_check()
