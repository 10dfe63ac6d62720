"""/admin: authorisation by configured numeric ids (never chat membership), the audit trail of every attempt,
and what each subcommand does, through dispatch with the real store, engine and simulated market."""
from __future__ import annotations

import dataclasses

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bot.app import build_services
from bot.commands.admin import key_metrics, read_manifests
from bot.commands.registry import Caller, dispatch
from bot.settings import Settings
from bot.views.doc import Doc
from bot.views.text import render_text
from core.clock import FixedClock
from core.domain import Tier
from core.errors import DeliveryError
from core.events import SignalIssued
from core.market_data import SimulatedMarket
from storage.admin import AuditOutcome
from tests.conftest import MECHANICS_FAMILIES, REPO, utc

START = utc(2025, 6, 2, 13, 30)
GROUP = "-100777"
ADMIN = Caller("telegram", "42", GROUP, "Ada")  # an admin, writing in a group chat
MEMBER = Caller("telegram", "555", GROUP, "Mallory")  # a member of the same group, not an admin
BOB = Caller("telegram", "1001", "1001", "Bob")
CAROL = Caller("discord", "2002", "c2002", "Carol")


@pytest.fixture
async def services(tmp_path):
    clock = FixedClock(START)
    market = SimulatedMarket(seed=7, start=START, history_days=400, clock=clock)
    # the group's chat id is configured too: it must not make the group's members admins
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:", admins=f"telegram:42,telegram:{GROUP}",
                        models_dir=str(tmp_path / "models"), families=MECHANICS_FAMILIES, _env_file=None)
    svc = await build_services(settings, market, clock)
    yield svc
    await svc.store.close()


async def say(svc, caller, text) -> str:  # noqa: ANN001
    return render_text(await dispatch(svc.registry, svc, caller, text))


async def audit(svc):  # noqa: ANN001
    return list(reversed(await svc.store.admin.audit_log(100)))  # oldest first


async def test_only_configured_ids_are_admins_and_every_attempt_is_audited(services):
    for text in ("/admin stats", "/admin grant 1 professional", "/admin"):
        assert "/admin is for administrators" in await say(services, MEMBER, text)
    assert "/admin is for administrators" in await say(services, BOB, "/admin user 1")
    assert "Service statistics" in await say(services, ADMIN, "/admin stats")
    assert "/admin stats" in await say(services, ADMIN, "/admin")  # usage
    assert "Service statistics" in await say(services, Caller("console", "op", "console"), "/admin stats")
    rows = await audit(services)
    assert [(r.platform_user_id, r.command, r.arguments, r.outcome) for r in rows] == [
        ("555", "admin", "stats", AuditOutcome.REFUSED),
        ("555", "admin", "grant 1 professional", AuditOutcome.REFUSED),
        ("555", "admin", "", AuditOutcome.REFUSED),
        ("1001", "admin", "user 1", AuditOutcome.REFUSED),
        ("42", "admin", "stats", AuditOutcome.OK),
        ("42", "admin", "", AuditOutcome.OK),
        ("op", "admin", "stats", AuditOutcome.OK),
    ]
    assert all(r.at == START and r.platform in ("telegram", "console") for r in rows)
    assert rows[0].detail == "/admin is for administrators." and rows[4].detail == "Service statistics"
    # /help shows /admin to admins only
    assert "/admin" in await say(services, ADMIN, "/help")
    assert "/admin" not in await say(services, MEMBER, "/help")


async def test_bad_arguments_are_audited_as_invalid(services):
    assert "Unknown admin command 'launch'" in await say(services, ADMIN, "/admin launch")
    assert "Unknown tier 'gold'" in await say(services, ADMIN, "/admin grant 1 gold")
    assert "No user 999" in await say(services, ADMIN, "/admin user 999")
    rows = await audit(services)
    assert [(r.arguments, r.outcome) for r in rows] == [
        ("launch", AuditOutcome.INVALID), ("grant 1 gold", AuditOutcome.INVALID), ("user 999", AuditOutcome.INVALID)]
    assert rows[2].detail == "No user 999."


async def test_grant_and_user(services):
    await say(services, BOB, "/start")
    bob = await services.store.users.find_user("telegram", "1001")
    out = await say(services, ADMIN, "/admin grant telegram:1001 trader")
    assert f"User {bob.id} (telegram:1001): free -> trader" in out
    assert (await services.store.users.get_user(bob.id)).tier is Tier.TRADER
    assert f"{bob.id} (telegram:1001): trader -> hobbyist" in await say(services, ADMIN, f"/admin grant {bob.id} hobbyist")
    await say(services, BOB, "/signal AAPL")
    await say(services, BOB, "/prefs confidence 70")
    out = await say(services, ADMIN, f"/admin user {bob.id}")
    for text in ("User 1: Bob", "telegram:1001 (chat 1001)", "Tier                hobbyist", "Requests today      1 of 50",
                 "Signals this month  0 of 100", "confidence >= 70", "Linked              none"):
        assert text in out, text
    assert "No user telegram:999" in await say(services, ADMIN, "/admin user telegram:999")
    rows = await audit(services)
    assert [r.outcome for r in rows] == [AuditOutcome.OK] * 3 + [AuditOutcome.INVALID]
    assert rows[0].detail.endswith("free -> trader")


async def test_stats_counts_users_signals_and_deliveries(services):
    await say(services, BOB, "/start")
    await say(services, CAROL, "/start")
    await say(services, CAROL, "/stop")
    await say(services, ADMIN, "/start")  # admins become professional
    issued = []
    for _ in range(24 * 10):
        services.clock.advance(timedelta(hours=1))
        issued += (await services.signal_service.scan()).issued
        if issued:
            break
    assert issued
    await services.store.outbox.enqueue([(issued[0].id, 1, "signal", "telegram", None, None)])
    out = await say(services, ADMIN, "/admin stats")
    assert "Users        3 (2 active)" in out
    assert f"{len(issued)} issued, {len(issued)} open, 0 closed" in out
    assert "Deliveries   pending 1" in out and "Queue depth  1" in out
    assert f"Last scan    {services.clock.now():%Y-%m-%d %H:%M} UTC" in out
    assert f"Last signal  {max(s.issued_at for s in issued):%Y-%m-%d %H:%M} UTC" in out
    assert "Breaker      on, nothing closed yet" in out  # the service's strategy breaker, per scope once closes exist
    table = [line.split() for line in out.splitlines()[-3:]]
    assert table == [["discord", "free", "1", "0"], ["telegram", "free", "1", "1"], ["telegram", "professional", "1", "1"]]
    services.signal_service.last_scan_at = START  # type: ignore[attr-defined]  (a service that records it)
    assert "Last scan    2025-06-02 13:30 UTC" in await say(services, ADMIN, "/admin stats")


async def test_generate_scans_or_issues_for_symbols_through_the_normal_path(services):
    published: list[SignalIssued] = []

    async def on_issued(event: SignalIssued) -> None:
        published.append(event)

    services.bus.subscribe(SignalIssued, on_issued)
    out = await say(services, ADMIN, "/admin generate")
    assert out.startswith("Scan run now") and "Evaluated" in out
    scanned = len(published)
    # find a symbol with a setup on its last daily bar that the risk manager takes on its own (an oversold setup
    # without a model's probability is not issued), then generate for it (and an unknown one)
    svc = services.signal_service
    symbol = None
    for _ in range(30):
        for inst in services.market.instruments():
            if inst.asset_class.value != "index":
                analysis = await svc.analyse(inst.symbol)
                cand = svc.engine.candidate(analysis)
                if (cand is not None and await services.store.signals.get_signal(cand.id) is None
                        and svc.risk.review(cand, [], None).approved):
                    symbol = inst.symbol
                    break
        if symbol:
            break
        services.clock.advance(timedelta(days=1))
    assert symbol, "the simulated market should offer a setup within 30 days"
    out = await say(services, ADMIN, f"/admin generate {symbol},NOPE")
    assert out.startswith(f"Generated for {symbol}, NOPE")
    assert "Issued     1" in out and "NOPE: Unknown symbol 'NOPE'" in out
    assert len(published) == scanned + 1
    signal = published[-1].signal
    assert signal.symbol == symbol and await services.store.signals.get_signal(signal.id) == signal
    again = await say(services, ADMIN, f"/admin generate {symbol}")  # the same bar: already decided
    assert "Issued     0" in again and len(published) == scanned + 1
    rows = await audit(services)
    assert [r.arguments for r in rows] == ["generate", f"generate {symbol},NOPE", f"generate {symbol}"]


def _manifest(root: Path, folder: str, content: str) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "manifest.json").write_text(content)


async def test_models_lists_manifests_generically(services):
    root = Path(services.settings.models_dir)
    assert "No model manifests" in await say(services, ADMIN, "/admin models")
    _manifest(root, "reversion-1", json.dumps({"name": "reversion", "version": "1", "created_at": "2026-11-20T10:00:00Z",
                                               "role": "champion", "metrics": {"auc": 0.6123, "brier": 0.2345,
                                                                               "folds": [1, 2], "ok": True}}))
    _manifest(root, "reversion-2", json.dumps({"name": "reversion", "version": "2", "created_at": "2026-11-21T10:00:00Z",
                                               "role": "challenger", "metrics": {"auc": 0.64}}))
    _manifest(root, "broken", "{not json")
    out = await say(services, ADMIN, "/admin models")
    assert out.startswith("3 model versions")
    lines = out.splitlines()
    v2 = next(i for i, l in enumerate(lines) if "challenger" in l)
    v1 = next(i for i, l in enumerate(lines) if "champion" in l)
    assert v2 < v1  # newest first
    assert "auc 0.6123, brier 0.2345" in lines[v1] and "auc 0.64" in lines[v2]
    assert "unreadable manifest: JSONDecodeError" in out


def test_the_shipped_sentiment_manifest_is_read():
    models = read_manifests(REPO / "models_store")
    sentiment = next(m for m in models if m["name"] == "news-sentiment")
    assert sentiment["version"] and sentiment["created_at"].startswith("20")
    assert "accuracy 0.8" in sentiment["metrics"] and "macro_f1" in sentiment["metrics"]
    assert key_metrics({"name": "x"}) == ""


async def test_retrain_hook(services):
    assert "Retraining is not available" in await say(services, ADMIN, "/admin retrain")
    calls = []

    async def retrain() -> dict[str, str]:
        calls.append(1)
        return {"version": "20261122-abc", "auc": "0.61"}

    services = dataclasses.replace(services, retrain=retrain)
    out = await say(services, ADMIN, "/admin retrain")
    assert "Retraining finished" in out and "20261122-abc" in out and calls == [1]
    assert "administrators" in await say(services, MEMBER, "/admin retrain") and calls == [1]


class RecordingTransport:
    def __init__(self, name: str, fail_for: set[str] = frozenset()) -> None:  # noqa: B006
        self.name = name
        self.fail_for = fail_for
        self.sent: list[tuple[str, Doc]] = []

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        if chat_id in self.fail_for:
            raise DeliveryError("blocked", permanent=True)
        self.sent.append((chat_id, doc))
        return str(len(self.sent))


async def test_broadcast_to_every_active_user(services):
    assert "Broadcasting is not available" in await say(services, ADMIN, "/admin broadcast hello")
    for caller in (BOB, CAROL, Caller("telegram", "3003", "3003", "Dan"), Caller("telegram", "4004", "4004", "Eve")):
        await say(services, caller, "/start")
    await say(services, Caller("telegram", "4004", "4004", "Eve"), "/stop")
    telegram = RecordingTransport("telegram", fail_for={"3003"})
    services.notices.add(telegram)
    out = await say(services, ADMIN, "/admin broadcast Maintenance   at 22:00 UTC")
    assert "Broadcast to 1 of 3 active users" in out  # Carol: no discord transport; Dan: blocked
    assert [(chat, doc.body) for chat, doc in telegram.sent] == [("1001", "Maintenance at 22:00 UTC")]
    discord = RecordingTransport("discord")
    services.notices.add(discord)
    await say(services, ADMIN, "/start")
    assert "Broadcast to 3 of 4 active users" in await say(services, ADMIN, "/admin broadcast again")
    assert [c for c, _ in discord.sent] == ["c2002"] and [c for c, _ in telegram.sent][1:] == ["1001", GROUP]
    rows = await audit(services)
    assert rows[1].arguments == "broadcast Maintenance at 22:00 UTC" and rows[1].outcome is AuditOutcome.OK


async def test_a_failing_admin_action_is_audited_as_failed(services):
    async def retrain() -> None:
        raise RuntimeError("disk full")

    services = dataclasses.replace(services, retrain=retrain)
    out = await say(services, ADMIN, "/admin retrain")
    assert "Something went wrong on our side" in out and "disk full" not in out
    rows = await audit(services)
    assert [(r.arguments, r.outcome, r.detail) for r in rows] == [("retrain", AuditOutcome.FAILED, "RuntimeError")]


def test_live_accuracy_groups_by_voter_and_scores_the_model_probability():
    from bot.commands.admin import live_accuracy

    assert live_accuracy([]) == [("Live", "no signal has closed in the window")]
    closed = [({"engine": "rules-v1"}, 0.02), ({"engine": "rules-v1"}, -0.01), ({"engine": "rules-v1"}, -0.03),
              ({"model_probability": 0.8}, 0.05), ({"model_probability": 0.4}, -0.02)]
    rules, model = live_accuracy(closed)
    assert rules == ("Live, rules alone", "3 closed, hit 33%")
    # Brier: ((0.8 - 1)^2 + (0.4 - 0)^2) / 2 = 0.1
    assert model == ("Live, with model", "2 closed, hit 50%, predicted 60%, Brier 0.100")


async def test_models_shows_the_news_analysts_and_the_news_votes_record(services):
    from bot.commands.admin import news_part
    from bot.news_job import NewsJob
    from core.news.analysts import AnalystSlot, NewsAnalysisService
    from core.llm import DailyQuota
    from core.news.schema import AnalystAnswer, NewsVerdict
    from core.news.sources import NewsItem, ReplayNews

    assert "no news source configured" in await say(services, ADMIN, "/admin models")

    class Stub:
        provider, model, prompt_version = "stub", "stub-1", "v1"

        async def analyze(self, item, symbol):  # noqa: ANN001
            return AnalystAnswer(NewsVerdict(event_type="other", severity=2, time_horizon="days", company_specific=True,
                                             revenue_impact="unknown", earnings_impact="unknown", credibility=0.5,
                                             novelty=0.5, sentiment=0.4, reasoning="stub"), self.model, 20, 10)

    clock = services.clock
    verdicts = services.store.news
    item = NewsItem.create(published_at=START - timedelta(hours=1), source="twitter", title="SIM up", tickers=("SIM",))
    slot = AnalystSlot(Stub(), DailyQuota(tokens=1000, cost_usd=2.0, clock=clock))
    job = NewsJob([ReplayNews([item])], NewsAnalysisService([slot], store=verdicts, clock=clock), verdicts, clock,
                  lambda: ["SIM"], services.store.signals)
    await job.run()
    services = dataclasses.replace(services, news=job)
    out = await say(services, ADMIN, "/admin models")
    assert "News analyst stub" in out and "breaker closed; 1 calls, 0 failures, 0 skipped" in out
    assert "today 30 tokens of 1,000, $0.00 of $2.00" in out
    assert "News vote, live" in out and "voted on 0 closed signals" in out and "1 verdicts held" in out
    rows = news_part(job, [({"news": {"score": 0.5}}, "long", 0.02), ({"news": {"score": 0.5}}, "short", 0.01),
                           ({"model_probability": 0.6}, "long", 0.01)])
    assert "voted on 2 closed signals, 2 leaning calls, hit 50%" in rows[-1][1]
