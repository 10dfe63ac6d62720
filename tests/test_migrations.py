"""Schema migrations (storage/migrate.py, Alembic) on SQLite and on a real PostgreSQL server, and backups with
their restore (storage/backup.py, `signalbot db`)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlmodel import SQLModel

from core.clock import FixedClock
from core.domain import DeliveryKind, DeliveryStatus
from storage import Database, Stores, backup, migrate
from storage.tables import DELIVERIES
from tests.conftest import utc

T0 = utc(2024, 1, 2, 12)


async def _seed(stores: Stores, n_users: int = 3) -> None:
    from tests.test_storage import make_signal

    await stores.signals.add_signal(make_signal("s1"))
    users = [await stores.users.upsert_user("telegram", str(i), f"c{i}", f"user {i}") for i in range(n_users)]
    await stores.outbox.enqueue([("s1", u.id, DeliveryKind.SIGNAL, "telegram", None, None) for u in users])


async def test_the_migrations_build_exactly_the_schema_of_storage_tables(db_url) -> None:  # noqa: ANN001
    db = Database(db_url("fresh"))
    try:
        assert await migrate.current(db) is None
        first = await migrate.upgrade(db)
        assert (first.before, first.after, first.adopted) == (None, migrate.head(), False)
        assert await migrate.schema_diff(db) == []  # a column added to tables.py without a revision fails here
        again = await migrate.upgrade(db)
        assert not again.changed and await migrate.current(db) == migrate.head()
    finally:
        await db.close()


async def test_every_revision_downgrades_and_upgrades_again(db_url) -> None:  # noqa: ANN001
    db = Database(db_url("roundtrip"))
    try:
        await db.upgrade()

        def down_and_up(connection: sa.Connection) -> list[str]:
            command.downgrade(migrate.config(connection), "base")
            left = [t for t in sa.inspect(connection).get_table_names() if t != "alembic_version"]
            command.upgrade(migrate.config(connection), "head")
            return left

        async with db.engine.begin() as conn:
            assert await conn.run_sync(down_and_up) == []
        assert await migrate.schema_diff(db) == []
    finally:
        await db.close()


@pytest.mark.parametrize("made_by", ["baseline", "create_all"])
async def test_a_database_from_before_migrations_is_adopted_with_its_rows(db_url, made_by: str) -> None:  # noqa: ANN001
    """A database from before migrations (the baseline schema, as start-up's create_all made it then; or
    create_all of today's models), then the service with migrations: adopted at the baseline, migrated to
    head, nothing lost."""
    db = Database(db_url("legacy"))
    try:
        async with db.engine.begin() as conn:
            if made_by == "create_all":
                await conn.run_sync(SQLModel.metadata.create_all)
            else:
                await conn.run_sync(lambda sync: command.upgrade(migrate.config(sync), migrate.BASELINE))
                await conn.execute(sa.text("DROP TABLE alembic_version"))
        async with db.engine.begin() as conn:  # rows as the old service wrote them (no claim columns named)
            await conn.execute(sa.text("INSERT INTO users (platform, platform_user_id, chat_id, display_name, "
                                       "tier, active, created_at) VALUES ('telegram', '1', 'c1', 'u', 'free', "
                                       "true, '2024-01-02 12:00:00')"))
        result = await migrate.upgrade(db)
        assert result.adopted and result.after == migrate.head()
        assert await migrate.schema_diff(db) == []
        stores = Stores.over(db, FixedClock(T0))
        assert (await stores.users.find_user("telegram", "1")) is not None
        await _seed(stores)
        assert await stores.outbox.count() == 3
    finally:
        await db.close()


async def test_a_dangling_delivery_parts_key_left_by_the_old_outbox_upgrade_is_repaired(tmp_path: Path) -> None:
    """Before migrations, the service rebuilt `deliveries` on SQLite with a modern RENAME, which re-pointed
    delivery_parts' foreign key at the renamed table and then dropped it. Adoption finds and repairs that."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'dangling.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)
            await conn.execute(sa.text("ALTER TABLE deliveries RENAME TO _deliveries_before_channels"))
            for index in DELIVERIES.indexes:
                await conn.execute(sa.text(f'DROP INDEX IF EXISTS "{index.name}"'))
            await conn.run_sync(lambda sync: DELIVERIES.create(sync))
            await conn.execute(sa.text("DROP TABLE _deliveries_before_channels"))
            fks = await conn.run_sync(lambda sync: sa.inspect(sync).get_foreign_keys("delivery_parts"))
            assert [fk["referred_table"] for fk in fks] == ["_deliveries_before_channels"]  # the damage
        assert await migrate.schema_diff(db) != []
        assert (await migrate.upgrade(db)).adopted
        async with db.engine.connect() as conn:
            fks = await conn.run_sync(lambda sync: sa.inspect(sync).get_foreign_keys("delivery_parts"))
        assert [fk["referred_table"] for fk in fks] == ["deliveries"]
        assert await migrate.schema_diff(db) == []
    finally:
        await db.close()


async def test_processes_starting_together_on_postgresql_migrate_once(pg_databases) -> None:  # noqa: ANN001
    """Three engines (three processes) upgrading one empty database at once: the advisory lock lets one create
    the schema; the others find it at head."""
    url = pg_databases("together")
    dbs = [Database(url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.upgrade(db) for db in dbs))
        assert sorted((r.before or "") for r in results) == ["", migrate.head(), migrate.head()]
        assert all(r.after == migrate.head() for r in results)
        assert await migrate.schema_diff(dbs[0]) == []
    finally:
        for db in dbs:
            await db.close()


async def test_backup_while_writing_and_restore_bring_back_exactly_the_backed_up_rows(
        db_url, tmp_path: Path) -> None:  # noqa: ANN001
    url = db_url("live")
    db = Database(url)
    await db.upgrade()
    stores = Stores.over(db, FixedClock(T0))
    await _seed(stores, n_users=50)
    before = await backup.row_counts(db)

    async def keep_writing() -> None:  # the service goes on while the backup is taken
        for i in range(30):
            await stores.users.upsert_user("discord", f"w{i}", f"d{i}", "writer")
            await asyncio.sleep(0)

    info, _ = await asyncio.gather(backup.backup(url, tmp_path / "copy.bak"), keep_writing())
    assert info.path.is_file() and info.bytes > 0 and info.revision == migrate.head()
    assert info.rows["deliveries"] == 50 and info.rows["signals"] == 1
    at_backup = info.rows["users"]
    assert before["users"] <= at_backup <= before["users"] + 30

    await stores.outbox.cancel_pending(1, "after the backup")  # later changes, which the restore must undo
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM deliveries WHERE user_id > 10"))
    await db.close()

    restored = await backup.restore(url, info.path)
    assert restored.rows == info.rows and restored.revision == migrate.head()
    db = Database(url)
    try:
        counts = await Stores.over(db, FixedClock(T0)).outbox.delivery_counts()
        assert sum(counts.values()) == 50 and set(counts) == {DeliveryStatus.PENDING}
    finally:
        await db.close()


async def test_a_broken_backup_is_refused_and_the_database_is_left_as_it_was(db_url, tmp_path: Path) -> None:  # noqa: ANN001
    url = db_url("kept")
    db = Database(url)
    await db.upgrade()
    await _seed(Stores.over(db, FixedClock(T0)))
    await db.close()
    junk = tmp_path / "junk.bak"
    junk.write_bytes(b"this is not a backup" * 100)
    with pytest.raises(backup.BackupError):
        await backup.restore(url, junk)
    with pytest.raises(backup.BackupError, match="no backup"):
        await backup.restore(url, tmp_path / "missing.bak")
    db = Database(url)
    try:
        assert (await backup.row_counts(db))["deliveries"] == 3
    finally:
        await db.close()


def _signalbot(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIGNALBOT_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_signalbot_db_commands(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    run = lambda *a: _signalbot(*a, url=url, cwd=tmp_path)  # noqa: E731
    assert "revision none" in run("db", "current").stdout
    up = run("db", "upgrade")
    assert up.returncode == 0 and f"revision {migrate.head()} (was empty)" in up.stdout
    assert "already at the newest revision" in run("db", "upgrade").stdout
    made = run("db", "backup")
    assert made.returncode == 0 and "backup written: backups/signalbot-" in made.stdout
    [written] = list((tmp_path / "backups").glob("signalbot-*.db"))
    restored = run("db", "restore", str(written))
    assert restored.returncode == 0 and f"revision {migrate.head()}" in restored.stdout
    missing = run("db", "restore", "nowhere.db")
    assert missing.returncode == 2 and "signalbot db: no backup at nowhere.db" in missing.stderr
