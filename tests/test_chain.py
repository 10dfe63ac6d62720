"""The public track record's hash chain (storage/chain.py), on SQLite and PostgreSQL (the db_url fixture): every signal issued and every
outcome is chained as it is stored; an edited, deleted, hidden or added signal or outcome, and an edited or
removed entry, is found and named; a database from before the chain is chained by its migration."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.domain import SignalOutcome, SignalStatus
from storage import Database, Stores
from storage.chain import ChainStore
from storage.migrate import upgrade as upgrade_to
from storage.tables import CHAIN, OUTCOMES, SIGNALS
from tests.test_delivery import NOW, signal

def outcome(sid: str, net: float = -0.02) -> SignalOutcome:
    return SignalOutcome(sid, SignalStatus.STOP if net < 0 else SignalStatus.TARGET, 100.0, NOW + timedelta(days=1),
                         98.0, NOW + timedelta(days=2), net + 0.002, net, 0.01, -0.021, 5)


async def filled(url: str) -> tuple[Stores, ChainStore]:
    db = Database(url)
    await db.upgrade()
    store = Stores.over(db)
    a, b = signal("AAPL-1d-20240305-L"), replace(signal("MSFT-1d-20240305-L"), symbol="MSFT")
    shadow = replace(signal("XOM-1d-20240305-L"), symbol="XOM", evidence={"shadow": {"scope": "pullback/equity"}})
    await store.signals.add_signals([a, b, shadow])
    await store.signals.add_signal(a)  # again: changes nothing, chains nothing
    await store.signals.record_outcome(outcome(a.id))
    await store.signals.record_outcome(outcome(shadow.id))  # a shadow's outcome is not in the public record
    return store, ChainStore(db)


async def test_what_is_issued_is_chained_and_verifies(db_url) -> None:  # noqa: ANN001
    store, chain = await filled(db_url("c"))
    try:
        entries = await chain.entries()
        assert [(e.seq, e.kind, e.signal_id) for e in entries] == [
            (1, "issue", "AAPL-1d-20240305-L"), (2, "issue", "MSFT-1d-20240305-L"), (3, "exit", "AAPL-1d-20240305-L")]
        assert all(e.sound for e in entries) and entries[1].prev_hash == entries[0].hash
        found = await chain.verify()
        assert found.ok, found.problems
        assert found.entries == 3 and found.signals == 2 and found.head == entries[-1].hash
    finally:
        await store.close()


@pytest.mark.parametrize("tamper, says", [
    ("UPDATE signals SET target = 110 WHERE id = 'AAPL-1d-20240305-L'", "AAPL-1d-20240305-L (entry 1) was edited after"),
    ("UPDATE signal_outcomes SET net_return = 0.05, status = 'target'", "outcome of AAPL-1d-20240305-L (entry 3) was edited"),
    ("DELETE FROM signals WHERE id = 'AAPL-1d-20240305-L'", "signal AAPL-1d-20240305-L (entry 1) was deleted"),
    ("""UPDATE signals SET evidence = '{"shadow": {"scope": "x"}}' WHERE id = 'MSFT-1d-20240305-L'""",
     "now hidden as a shadow"),
    ("UPDATE record_chain SET payload = replace(payload, '104.0', '110.0') WHERE seq = 1", "entry 1 (issue"),
    ("DELETE FROM record_chain WHERE seq = 2", "entries 2..2 are missing"),
])
async def test_an_edit_after_the_fact_is_found_and_named(db_url, tamper: str, says: str) -> None:  # noqa: ANN001
    store, chain = await filled(db_url("c"))
    try:
        async with store.database.engine.begin() as conn:
            await conn.execute(sa.text(tamper))
        found = await chain.verify()
        assert not found.ok and any(says in p for p in found.problems), found.problems
    finally:
        await store.close()


async def test_a_signal_slipped_into_the_tables_is_not_in_the_chain(db_url) -> None:  # noqa: ANN001
    store, chain = await filled(db_url("c"))
    try:
        from storage.rows import signal_row

        late = replace(signal("NVDA-1d-20240301-L"), symbol="NVDA", issued_at=NOW - timedelta(days=30))
        async with store.database.engine.begin() as conn:
            await conn.execute(SIGNALS.insert(), [signal_row(late)])  # backdated, past the store
            await conn.execute(OUTCOMES.insert(), [dict(zip(("signal_id",), (late.id,))) | {
                "status": "target", "fill_price": 1.0, "fill_time": NOW, "exit_price": 2.0, "exit_time": NOW,
                "gross_return": 1.0, "net_return": 1.0, "mfe": 1.0, "mae": 0.0, "bars_held": 1}])
        problems = (await chain.verify()).problems
        assert any("NVDA-1d-20240301-L is in the record but not in the chain" in p for p in problems)
        assert any("outcome of NVDA-1d-20240301-L is in the record but not in the chain" in p for p in problems)
    finally:
        await store.close()


async def test_the_migration_chains_a_database_from_before_the_chain(db_url) -> None:  # noqa: ANN001
    url = db_url("m")
    db = Database(url)
    await upgrade_to(db, "0003")
    from storage.rows import outcome_row, signal_row

    a, b = signal("AAPL-1d-20240305-L"), replace(signal("BAC-1d-20240304-L"), symbol="BAC", issued_at=NOW - timedelta(days=1))
    async with db.engine.begin() as conn:
        await conn.execute(SIGNALS.insert(), [signal_row(a), signal_row(b)])
        await conn.execute(OUTCOMES.insert(), [outcome_row(outcome(b.id, 0.03))])
        assert CHAIN.name not in await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    await db.upgrade()
    chain = ChainStore(db)
    entries = await chain.entries()
    assert [(e.kind, e.signal_id) for e in entries] == [("issue", b.id), ("issue", a.id), ("exit", b.id)]
    assert (await chain.verify()).ok
    await db.close()
