from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]
# Tests of delivery, commands and tracking need signals on the simulated random-walk market, where the default
# families (trend, ranking) rightly issue almost nothing: they switch the rule-based setups on as well.
MECHANICS_FAMILIES = "setups,trend,ranking"


def data_dir() -> Path:
    return Path(os.environ.get("SIGNALS_DATA_DIR") or REPO.parent / "shared" / "data")


@pytest.fixture
def shared_data() -> Path:
    d = data_dir()
    if not (d / "equities").is_dir():
        pytest.skip(f"shared data not found at {d} (set SIGNALS_DATA_DIR)")
    return d


def make_bars(closes, start="2024-01-01", freq="1D", spread=0.01, volume=1e6, opens=None) -> pd.DataFrame:
    """Bars from a close path: open = previous close unless given, high/low a spread around."""
    closes = np.asarray(closes, dtype=float)
    idx = pd.date_range(start, periods=len(closes), freq=freq, tz="UTC", name="time")
    o = np.asarray(opens, dtype=float) if opens is not None else np.concatenate([[closes[0]], closes[:-1]])
    hi = np.maximum(o, closes) * (1 + spread)
    lo = np.minimum(o, closes) * (1 - spread)
    vol = np.full(len(closes), volume) if np.isscalar(volume) else np.asarray(volume, dtype=float)
    return pd.DataFrame({"open": o, "high": hi, "low": lo, "close": closes, "volume": vol}, index=idx)


UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    """The local Anthropic Messages API (tests/fakes/anthropic_api.py) for the real SDK."""
    async with FakeAnthropic() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """The local OpenAI Chat Completions API (tests/fakes/openai_api.py) for the real SDK."""
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]
