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


@pytest.fixture(scope="session")
def postgres():  # noqa: ANN201
    """A real PostgreSQL server for the session (tests/postgres.py): started here, or $SIGNALBOT_TEST_POSTGRES_URL.
    Skips with the reason when this machine has none."""
    from tests import postgres as pg

    try:
        srv = pg.server()
    except pg.PostgresUnavailable as exc:
        if os.environ.get("SIGNALBOT_REQUIRE_POSTGRES") == "1":  # .ci/run: these tests must run
            pytest.fail(f"no PostgreSQL server: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield srv
    srv.stop()


@pytest.fixture
def pg_databases(request: pytest.FixtureRequest):  # noqa: ANN201
    """`pg_databases(name)`: the URL of a fresh database `name` on the session's PostgreSQL server, the same URL
    each time it is asked for; dropped after the test."""
    import uuid

    from tests import postgres as pg

    srv = request.getfixturevalue("postgres")
    made: dict[str, str] = {}

    def url(name: str = "t") -> str:
        if name not in made:
            made[name] = f"t_{uuid.uuid4().hex[:12]}_{name}"[:60].lower()
            pg.create_database(srv, made[name])
        return srv.url(made[name])

    yield url
    for database in made.values():
        pg.drop_database(srv, database)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    """`db_url(name)`: the URL of database `name` for this test, the same URL each time it is asked for (a restart
    reopens it): a file under tmp_path on SQLite, a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return lambda name="t": f"sqlite+aiosqlite:///{tmp_path / name}.db"
    return request.getfixturevalue("pg_databases")
