"""Property: bars resampled from a lower timeframe equal the native higher timeframe wherever both exist
and the lower timeframe is complete (the crypto files hold 15m, 1h, 4h and 1d of the same pairs)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from functools import lru_cache

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core.domain import Timeframe
from core.market_data import CsvMarketData, resample_bars
from tests.conftest import data_dir

PAIRS_15M = ("AAVE-USDT", "AVAX-USDT", "DOT-USDT", "EGLD-USDT", "FLOW-USDT", "MANA-USDT", "NEAR-USDT", "SOL-USDT")
COMBOS = [(Timeframe.M15, Timeframe.H1), (Timeframe.M15, Timeframe.H4), (Timeframe.H1, Timeframe.H4),
          (Timeframe.H1, Timeframe.D1), (Timeframe.H4, Timeframe.D1)]
END = datetime(2022, 1, 1, tzinfo=timezone.utc)


@lru_cache(maxsize=1)
def market() -> CsvMarketData:
    return CsvMarketData(data_dir())


@lru_cache(maxsize=64)
def load(symbol: str, tf: Timeframe) -> pd.DataFrame:
    return asyncio.run(market().get_bars(symbol, tf, end=END))


@pytest.fixture(autouse=True)
def _needs_data() -> None:
    if not (data_dir() / "crypto").is_dir():
        pytest.skip(f"crypto data not found under {data_dir()} (set SIGNALS_DATA_DIR)")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symbol=st.sampled_from(PAIRS_15M), combo=st.sampled_from(COMBOS), start_frac=st.floats(0, 0.95),
       width=st.integers(20, 400))
def test_resampled_equals_native(symbol: str, combo: tuple[Timeframe, Timeframe], start_frac: float, width: int) -> None:
    low_tf, high_tf = combo
    low, native = load(symbol, low_tf), load(symbol, high_tf)
    first = native.index[int(start_frac * (len(native) - 1))]
    window_end = first + high_tf.duration * width
    low_win = low[(low.index >= first) & (low.index < window_end)]
    ours = resample_bars(low_win, low_tf, high_tf, end=window_end.to_pydatetime())
    per_bin = high_tf.duration // low_tf.duration
    counts = pd.Series(1, index=low_win.index).groupby(low_win.index.floor(high_tf.pandas_freq)).sum()
    complete = counts.index[counts == per_bin]
    common = complete.intersection(native.index).intersection(ours.index)
    if len(complete) == 0:
        return  # an outage covers the whole window: nothing to compare
    assert len(common) == len(complete)  # every complete bin is produced and exists natively
    pd.testing.assert_frame_equal(ours.loc[common], native.loc[common], rtol=1e-9, atol=1e-6)
    assert (ours.index + high_tf.duration <= window_end).all()  # no bin before its last slot closed
