"""The REST API (bot/api) through real clients: httpx against the service's HTTP server (FastAPI on uvicorn, on
loopback), keys made by the /apikey chat command, the same stores and entitlements as chat; 401, 403, 404, 422
and 429 with Retry-After; usage counted per key and endpoint; the OpenAPI schema."""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bot.api.public import PublicRecord
from bot.api.routes import Api
from bot.api.stream import Stream
from bot.app import build_services
from bot.commands.caller import Caller
from bot.commands.registry import dispatch
from bot.http_server import start_http
from bot.settings import Settings
from bot.views.text import render_text
from core.clock import FixedClock
from core.domain import AssetClass, SignalOutcome, SignalStatus, Tier, Timeframe
from core.market_data.simulated import SimulatedMarket
from tests.test_delivery import NOW, signal

PRO = Caller("telegram", "101", "101", "Pro")
TRADER = Caller("telegram", "102", "102", "Trader")
ADMIN = Caller("telegram", "900", "900", "Boss")


class Service:
    def __init__(self, services: Any, api: Api, base: str) -> None:
        self.services, self.api, self.base = services, api, base

    async def say(self, caller: Caller, text: str) -> str:
        return render_text(await dispatch(self.services.registry, self.services, caller, text))

    async def key_for(self, caller: Caller, tier: Tier) -> str:
        await self.say(caller, "/start")
        user = await self.services.store.users.find_user(caller.platform, caller.platform_user_id)
        await self.services.store.users.set_tier(user.id, tier)
        answer = await self.say(caller, "/apikey create laptop")
        found = re.search(r"\bsb_[A-Za-z0-9_-]{43}\b", answer)
        assert found, answer
        return found.group(0)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", http_port=0,
                        admins="telegram:900")
    clock = FixedClock(NOW)
    market = SimulatedMarket(seed=7, start=NOW, history_days=60, clock=clock)
    services = await build_services(settings, market, clock)
    api = Api(services)
    server = await start_http(settings, services,
                              routers=[api.router, Stream(api).router, PublicRecord(services).router])
    assert server is not None
    try:
        yield Service(services, api, server.url)
    finally:
        await server.stop()
        await api.close()
        await services.signal_service.close()
        await services.store.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_signals_through_a_key_made_in_chat(service: Service) -> None:
    store = service.services.store
    active, closed = signal("AAPL-1d-20240305-L"), signal("BTC-4h-20240301-L", AssetClass.CRYPTO)
    closed = replace(closed, symbol="BTC-USDT", timeframe=Timeframe.H4, issued_at=NOW - timedelta(days=4))
    shadow = replace(signal("MSFT-1d-20240305-L"), symbol="MSFT", evidence={"shadow": {"scope": "x"}})
    for s in (active, closed, shadow):
        await store.signals.add_signal(s)
    await store.signals.record_outcome(SignalOutcome(
        closed.id, SignalStatus.TARGET, 100.1, NOW - timedelta(days=3), 104.0, NOW - timedelta(days=1), 0.039,
        0.037, 0.04, -0.01, 12))
    key = await service.key_for(PRO, Tier.PROFESSIONAL)
    async with httpx.AsyncClient(base_url=service.base, headers=auth(key)) as http:
        r = await http.get("/api/v1/signals")
        assert r.status_code == 200, r.text
        body = r.json()
        assert [s["id"] for s in body["signals"]] == [active.id] and body["count"] == 1  # never a shadow
        got = body["signals"][0]
        assert got["entry"] == 100 and got["target"] == 104 and got["stop"] == 98 and got["status"] == "active"
        assert got["risk_reward"] == 2.0 and got["confidence"] == 70 and got["timeframe"] == "1d"
        r = await http.get("/api/v1/signals", params={"status": "all"})
        assert [s["id"] for s in r.json()["signals"]] == [active.id, closed.id]
        r = await http.get("/api/v1/signals", params={"status": "closed", "asset_class": "crypto"})
        [one] = r.json()["signals"]
        assert one["status"] == "target" and one["outcome"]["net_return"] == pytest.approx(0.037)
        r = await http.get(f"/api/v1/signals/{closed.id}")
        assert r.status_code == 200 and r.json()["outcome"]["bars_held"] == 12
        assert (await http.get(f"/api/v1/signals/{shadow.id}")).status_code == 404
        assert (await http.get("/api/v1/signals/NOPE-1d-1-L")).status_code == 404
        r = await http.get("/api/v1/signals", params={"status": "bogus", "limit": 0})
        assert r.status_code == 422  # validation names both parameters
        assert {e["loc"][-1] for e in r.json()["detail"]} == {"status", "limit"}
        r = await http.get("/api/v1/performance", params={"period": "all"})
        assert r.status_code == 200 and r.json()["closed"] == 1 and r.json()["hit_rate"] == 1.0
        r = await http.get("/api/v1/instruments", params={"q": "bank"})
        assert r.status_code == 200 and "JPM" in [i["symbol"] for i in r.json()["instruments"]]
        assert (await http.get("/api/v1/instruments/AAPL")).json()["asset_class"] == "equity"
        r = await http.get("/api/v1/instruments/AAPLE")
        assert r.status_code == 404 and "AAPL" in r.json()["detail"]
        sub = (await http.get("/api/v1/subscription")).json()
        assert sub["tier"] == "professional" and sub["api_requests_per_minute"] == 600
        assert (await http.get("/api/v1/admin/system")).status_code == 403  # not an administrator
        usage = (await http.get("/api/v1/usage")).json()
    counted = {row["endpoint"]: (row["count"], row["errors"]) for row in usage["rows"]}
    assert counted["GET /api/v1/signals"] == (4, 1)  # the 422 counted as an error
    assert counted["GET /api/v1/signals/{signal_id}"] == (3, 2)
    assert counted["GET /api/v1/admin/system"] == (1, 1)
    listing = await service.say(PRO, "/apikey")
    assert "laptop" in listing and key not in listing and key[:11] in listing and "requests 30 d" in listing


async def test_no_key_a_wrong_key_a_revoked_key_and_a_tier_without_the_api(service: Service) -> None:
    key = await service.key_for(PRO, Tier.PROFESSIONAL)
    async with httpx.AsyncClient(base_url=service.base) as http:
        r = await http.get("/api/v1/signals")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer" and "/apikey" in r.json()["detail"]
        assert (await http.get("/api/v1/signals", headers=auth("sb_" + "x" * 43))).status_code == 401
        assert (await http.get("/api/v1/signals", headers={"X-API-Key": key})).status_code == 200
        # the owner downgraded: the key stops at once, with what to do
        user = await service.services.store.users.find_user("telegram", "101")
        await service.services.store.users.set_tier(user.id, Tier.TRADER)
        r = await http.get("/api/v1/signals", headers=auth(key))
        assert r.status_code == 403 and "professional" in r.json()["detail"]
        await service.services.store.users.set_tier(user.id, Tier.PROFESSIONAL)
        [record] = await service.services.store.api_keys.keys_of(user.id)
        assert "revoked" in await service.say(PRO, f"/apikey revoke {record.id}")
        assert (await http.get("/api/v1/signals", headers=auth(key))).status_code == 401
    # chat: the command itself needs the tier
    await service.say(TRADER, "/start")
    assert "professional" in (await service.say(TRADER, "/apikey create x")).lower()
    assert "no active key" in (await service.say(PRO, "/apikey revoke 999")).lower()


async def test_over_the_rate_a_key_gets_429_with_retry_after(service: Service) -> None:
    key = await service.key_for(PRO, Tier.PROFESSIONAL)
    now = [1000.0]
    service.api.limiter.clock = lambda: now[0]  # time stands still: no refill while the test runs
    async with httpx.AsyncClient(base_url=service.base, headers=auth(key)) as http:
        codes = [(await http.get("/api/v1/subscription")).status_code for _ in range(601)]
        assert codes[:600] == [200] * 600  # the bucket holds a minute's worth
        assert codes[600] == 429
        r = await http.get("/api/v1/subscription")
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"  # a token every 0.1 s
        assert "600 requests per minute" in r.json()["detail"]
        now[0] += 0.1
        assert (await http.get("/api/v1/subscription")).status_code == 200
        assert (await http.get("/api/v1/subscription")).status_code == 429
    await service.services.store.api_keys.flush()
    usage = await service.services.store.api_keys.usage()
    assert sum(u.count for u in usage) == 604 and sum(u.errors for u in usage) == 3


async def test_feedback_portfolio_and_watchlist_through_the_api_agree_with_the_chat(service: Service) -> None:
    store = service.services.store
    s = replace(signal("BTC-1d-20240305-L", AssetClass.CRYPTO), symbol="BTC-USDT", issued_at=NOW - timedelta(days=1))
    await store.signals.add_signal(s)
    key = await service.key_for(PRO, Tier.PROFESSIONAL)
    async with httpx.AsyncClient(base_url=service.base, headers=auth(key)) as http:
        r = await http.post(f"/api/v1/signals/{s.id}/feedback", json={"action": "took"})
        assert r.status_code == 200 and r.json()["changed"] and r.json()["decision"] == "took", r.text
        fill = r.json()["fill_price"]
        again = await http.post(f"/api/v1/signals/{s.id}/feedback", json={"action": "skipped"})
        assert again.status_code == 200 and not again.json()["changed"] and again.json()["decision"] == "took"
        assert (await http.post(f"/api/v1/signals/{s.id}/feedback", json={"action": "maybe"})).status_code == 422
        assert (await http.post("/api/v1/signals/NOPE-1d-1-L/feedback", json={"action": "took"})).status_code == 404
        book = (await http.get("/api/v1/portfolio")).json()
        [pos] = book["positions"]
        assert pos["fill_price"] == fill and pos["how"] == "open" and book["open"] == 1
        assert book["total"] == pytest.approx(pos["contribution"])
        assert f"{book['unrealised'] * 100:+.2f}%" in await service.say(PRO, "/portfolio")
        r = await http.put("/api/v1/watchlist/nvda")
        assert r.status_code == 200 and [w["symbol"] for w in r.json()["symbols"]] == ["NVDA"], r.text
        assert r.json()["symbols"][0]["last"] is not None
        assert (await http.put("/api/v1/watchlist/NOPEX")).status_code == 404
        assert "NVDA" in await service.say(PRO, "/watchlist")
        r = await http.delete("/api/v1/watchlist/NVDA")
        assert r.status_code == 200 and r.json()["symbols"] == [] and "Removed NVDA" in r.json()["message"]
        r = await http.get("/api/v1/market/screener", params={"q": "class=crypto rsi<101"})
        assert r.status_code == 200 and r.json()["filters"] == ["class=crypto", "rsi<101"], r.text
        assert {row["asset_class"] for row in r.json()["rows"]} == {"crypto"} and r.json()["screened"] > 0
        assert len(r.json()["rows"]) == r.json()["screened"]
        r = await http.get("/api/v1/market/screener", params={"q": "rsi<<1"})
        assert r.status_code == 400 and "not a filter" in r.json()["detail"]
        done = replace(signal("AAPL-1d-20240301-L"), issued_at=NOW - timedelta(days=4))
        await store.signals.add_signal(done)
        await store.signals.record_outcome(SignalOutcome(done.id, SignalStatus.STOP, 100.0, NOW - timedelta(days=3),
                                                         98.0, NOW - timedelta(days=1), -0.02, -0.021, 0.0, -0.02, 2))
        week = (await http.get("/api/v1/reports/weekly-performance")).json()
        assert week["received"] == 0 and week["yours"] is None  # nothing was delivered to this key's owner
        assert week["service"]["closed"] == 1 and week["service"]["avg_return"] == pytest.approx(-0.021)
        assert (await http.get("/api/v1/reports/daily-summary")).status_code == 200
        closed = await http.post(f"/api/v1/signals/{s.id}/feedback", json={"action": "closed"})
        assert closed.status_code == 200 and closed.json()["closed_price"] is not None
        assert (await http.post(f"/api/v1/signals/{s.id}/feedback", json={"action": "closed"})).json()["changed"] is False
    assert (await store.feedback.counts([s.id])) == {s.id: {"took": 1}}


async def test_the_seed_endpoints_market_subscriptions_analytics_and_admin(service: Service) -> None:
    store = service.services.store
    done = replace(signal("AAPL-1d-20240301-L"), issued_at=NOW - timedelta(days=4))
    await store.signals.add_signal(done)
    await store.signals.record_outcome(SignalOutcome(done.id, SignalStatus.TARGET, 100.0, NOW - timedelta(days=3),
                                                     104.0, NOW - timedelta(days=1), 0.04, 0.039, 0.04, -0.01, 2))
    key, boss = await service.key_for(PRO, Tier.PROFESSIONAL), await service.key_for(ADMIN, Tier.FREE)
    async with httpx.AsyncClient(base_url=service.base, headers=auth(key)) as http:
        q = (await http.get("/api/v1/market/btc-usdt/current")).json()
        bars = await service.services.market.get_bars("BTC-USDT", Timeframe.H1, end=NOW, limit=1)
        assert q["symbol"] == "BTC-USDT" and q["last"] == pytest.approx(float(bars["close"].iloc[-1])), q
        assert (await http.get("/api/v1/market/NOPEX/current")).status_code == 404
        h = (await http.get("/api/v1/market/AAPL/history", params={"limit": 5, "indicators": "rsi_14,sma_20"})).json()
        assert len(h["bars"]) == 5 and set(h["bars"][-1]["indicators"]) == {"rsi_14", "sma_20"}
        daily = await service.services.market.get_bars("AAPL", Timeframe.D1, end=NOW, limit=20)
        assert h["bars"][-1]["close"] == pytest.approx(float(daily["close"].iloc[-1]))
        assert h["bars"][-1]["indicators"]["sma_20"] == pytest.approx(float(daily["close"].mean()))
        bad = await http.get("/api/v1/market/AAPL/history", params={"indicators": "nope"})
        assert bad.status_code == 400 and "unknown indicator" in bad.json()["detail"]
        r = await http.put("/api/v1/subscriptions", json={"symbols": ["aapl", "btc/usdt"], "min_confidence": "60",
                                                          "quiet_hours": "22:00-07:00 Europe/Berlin"})
        assert r.status_code == 200, r.text
        assert r.json()["symbols"] == ["AAPL", "BTC-USDT"] and r.json()["min_confidence"] == 60
        assert r.json()["quiet_hours"] == "22:00-07:00 Europe/Berlin"
        assert "60" in await service.say(PRO, "/prefs")  # the chat sees the same preferences
        r = await http.put("/api/v1/subscriptions", json={"risk": "reckless"})
        assert r.status_code == 400 and r.json()["detail"].startswith("risk")
        assert (await http.get("/api/v1/subscriptions")).json()["risk"] == "medium"  # nothing changed
        t = (await http.post("/api/v1/subscriptions/test")).json()
        assert t["channel"] == "telegram" and t["sent"] is False  # no Telegram connection in this test
        hist = (await http.get("/api/v1/analytics/signal-history")).json()
        assert [s["id"] for s in hist["signals"]] == [done.id] and hist["summary"]["closed"] == 1
        assert (await http.get("/api/v1/analytics/portfolio-impact")).json()["positions"] == []
        assert (await http.get("/api/v1/admin/models")).status_code == 403
    async with httpx.AsyncClient(base_url=service.base, headers=auth(boss)) as http:
        models = await http.get("/api/v1/admin/models")
        assert models.status_code == 200 and models.json()["heading"], models.text
        g = await http.post("/api/v1/admin/generate", json={"symbols": ["AAPL"]})
        assert g.status_code == 200 and g.json()["heading"] == "Generated for AAPL", g.text  # the admin command's
        assert dict(map(tuple, g.json()["fields"]))["Issued"] == "0"  # answer: 60 days of history make no signal
        assert (await http.post("/api/v1/admin/generate", json={"symbols": ["A;B"]})).status_code == 400


async def test_administrators_see_the_system_and_the_schema_documents_every_route(service: Service) -> None:
    key = await service.key_for(ADMIN, Tier.FREE)  # an administrator's key works whatever the tier
    async with httpx.AsyncClient(base_url=service.base, headers=auth(key)) as http:
        r = await http.get("/api/v1/admin/system")
        assert r.status_code == 200 and r.json()["users"] == 1
        schema = (await http.get("/openapi.json")).json()
        assert (await http.get("/api/docs")).status_code == 200
    paths = set(schema["paths"])
    assert {"/api/v1/signals", "/api/v1/signals/{signal_id}", "/api/v1/performance", "/api/v1/instruments",
            "/api/v1/instruments/{symbol}", "/api/v1/subscription", "/api/v1/usage", "/api/v1/admin/system"} <= paths
    assert "/stripe/webhook" not in paths and "/metrics" not in paths
    assert "429" in schema["paths"]["/api/v1/signals"]["get"]["responses"]


async def test_the_public_record_and_its_proofs_need_no_key_and_show_an_edit(service: Service) -> None:
    store = service.services.store
    won, lost = signal("AAPL-1d-20240305-L"), replace(signal("MSFT-1d-20240304-L"), symbol="MSFT")
    await store.signals.add_signals([won, lost])
    await store.signals.record_outcome(SignalOutcome(won.id, SignalStatus.TARGET, 100.1, NOW, 104.0, NOW, 0.039,
                                                     0.037, 0.04, -0.01, 3))
    await store.signals.record_outcome(SignalOutcome(lost.id, SignalStatus.STOP, 100.0, NOW, 98.0, NOW, -0.02,
                                                     -0.022, 0.01, -0.02, 2))
    async with httpx.AsyncClient(base_url=service.base) as http:
        page = await http.get("/track-record")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert won.id in page.text and lost.id in page.text and "stop -2.20 %" in page.text  # losers included
        assert "Chain whole: 4 entries" in page.text
        proof = (await http.get(f"/api/v1/signals/{lost.id}/proof")).json()
        assert proof["intact"] and [e["kind"] for e in proof["entries"]] == ["issue", "exit"]
        assert proof["entries"][0]["payload"]["stop"] == 98.0 and proof["chain"]["ok"]
        chain = (await http.get("/api/v1/public/record")).json()["entries"]
        assert [e["seq"] for e in chain] == [1, 2, 3, 4]
        # anyone can recompute the chain from what is published
        import hashlib

        prev = "0" * 64
        for e in chain:
            assert e["prev_hash"] == prev
            prev = hashlib.sha256(f"{e['seq']}|{e['kind']}|{e['signal_id']}|{prev}|{e['payload']}".encode()).hexdigest()
            assert e["hash"] == prev
        assert (await http.get("/api/v1/signals/NOPE/proof")).status_code == 404
        text = await service.say(Caller("telegram", "555", "555", "Anyone"), f"/verify {lost.id}")  # not subscribed
        assert "as recorded" in text and "NOT" not in text
        # flatter the record: the loser becomes a winner
        async with store.database.engine.begin() as conn:
            await conn.execute(sa.text(f"UPDATE signal_outcomes SET net_return = 0.01, status = 'target' "
                                       f"WHERE signal_id = '{lost.id}'"))
        text = await service.say(Caller("telegram", "555", "555", "Anyone"), f"/verify {lost.id}")
        assert "NOT as recorded" in text and "was edited after it was recorded" in text


@pytest.mark.slow
def test_the_readme_example_a_key_from_the_console_and_curl_on_the_offline_run(tmp_path: Path) -> None:
    """`printf '/start\\n/apikey create laptop\\n/web\\n' | SIGNALBOT_HTTP_PORT=... signalbot run`: the key printed
    on the console works on the running service's API, the public track record answers without one, and the
    dashboard link logs in."""
    from tests.service_proc import running_service

    with running_service(tmp_path) as svc:
        base, key, port = svc.base, svc.key, svc.port
        signals = svc.wait_for_signals()
        assert signals
        sid = signals[0]["id"]
        assert httpx.get(f"{base}/api/v1/signals/{sid}/proof", timeout=5).json()["intact"]
        page = httpx.get(f"{base}/track-record", timeout=5)
        assert page.status_code == 200 and sid in page.text
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{port}/api/v1/stream?after_seq=0", additional_headers=auth(key)) as ws:
            import json

            hello, first = json.loads(ws.recv(10)), json.loads(ws.recv(10))
            assert hello["type"] == "hello" and first["type"] == "signal.issued" and first["seq"] == 1
        assert httpx.get(f"{base}/api/v1/signals", timeout=5).status_code == 401
        link = re.search(r"http://\S+/web/login\?token=([A-Za-z0-9_-]+)", svc.console.read_text())
        assert link, svc.console.read_text()[-2000:]  # the dashboard link the console printed logs in
        login = httpx.get(f"{base}/web/login", params={"token": link.group(1)}, follow_redirects=False, timeout=5)
        assert login.status_code == 303 and login.headers["location"] == "/web"


async def test_the_stream_pushes_what_is_issued_and_resumes_after_the_last_seen(service: Service) -> None:
    import asyncio
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    key = await service.key_for(PRO, Tier.PROFESSIONAL)
    ws_base = service.base.replace("http://", "ws://") + "/api/v1/stream"
    svc = service.services.signal_service
    from tests.test_reasoning_writer import candidate

    cand = candidate(issued_at=NOW, expires_at=NOW + timedelta(days=3))

    async def receive(ws, n: int) -> list[dict]:  # noqa: ANN001
        return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(n)]

    async with connect(ws_base, additional_headers=auth(key)) as ws:
        [hello] = await receive(ws, 1)
        assert hello == {"type": "hello", "after_seq": 0, "head_seq": 0}
        report = await svc.issue([cand])  # the signal service's path: risk review, store (and chain), publish
        assert [s.id for s in report.issued] == [cand.id], report.rejected
        [issued] = await receive(ws, 1)
        assert issued["type"] == "signal.issued" and issued["seq"] == 1 and issued["data"]["entry"] == cand.entry
        await service.services.store.signals.record_outcome(SignalOutcome(
            cand.id, SignalStatus.STOP, 100.0, NOW, 98.0, NOW, -0.02, -0.022, 0.0, -0.02, 2))
        [closed] = await receive(ws, 1)
        assert closed["type"] == "signal.exit" and closed["seq"] == 2 and closed["data"]["net_return"] == -0.022
    # reconnect after the last one seen: nothing twice, nothing missed
    async with connect(f"{ws_base}?after_seq=1&key={key}") as ws:
        hello, again = await receive(ws, 2)
        assert hello["after_seq"] == 1 and again["seq"] == 2 and again["type"] == "signal.exit"
    for headers, code in (({}, 4401), (auth("sb_" + "0" * 43), 4401)):
        async with connect(ws_base, additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed) as closed_by:
                await receive(ws, 1)
            assert closed_by.value.rcvd is not None and closed_by.value.rcvd.code == code
    trader_key = await service.key_for(TRADER, Tier.PROFESSIONAL)
    user = await service.services.store.users.find_user("telegram", "102")
    await service.services.store.users.set_tier(user.id, Tier.TRADER)
    async with connect(ws_base, additional_headers=auth(trader_key)) as ws:
        with pytest.raises(ConnectionClosed) as closed_by:
            await receive(ws, 1)
        assert closed_by.value.rcvd.code == 4403 and "professional" in closed_by.value.rcvd.reason
