"""`signalbot db`: the database's schema and backups. `upgrade` migrates to the newest revision (the service also
does it on start), `current` prints the revision, `backup` writes a consistent copy while the service runs,
`restore` puts one back (stop the service first) and migrates it, `revision -m TEXT` autogenerates a migration
after storage/tables.py changed (for developers)."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.settings import Settings

NAME = "db"
HELP = "database schema migrations (upgrade, current, revision) and backups (backup, restore)"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    for action, help_text in (("upgrade", "migrate the schema to the newest revision"),
                              ("current", "print the schema's revision and the newest one")):
        sp = sub.add_parser(action, help=help_text)
        sp.add_argument("--db", help="database URL (default: SIGNALBOT_DATABASE_URL)")
    sp = sub.add_parser("backup", help="write a consistent copy of the database (while the service runs)")
    sp.add_argument("--db", help="database URL (default: SIGNALBOT_DATABASE_URL)")
    sp.add_argument("--out", type=Path, help="backup file (default: backups/signalbot-<UTC time>.db or .dump)")
    sp = sub.add_parser("restore", help="replace the database by a backup, then migrate it (stop the service first)")
    sp.add_argument("backup", type=Path, help="a file written by `signalbot db backup`")
    sp.add_argument("--db", help="database URL (default: SIGNALBOT_DATABASE_URL)")
    sp = sub.add_parser("revision", help="autogenerate a migration from storage/tables.py (developers)")
    sp.add_argument("-m", "--message", required=True, help="what changed")
    sp.add_argument("--db", help="a scratch database URL (default: an in-memory SQLite)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from storage import backup, migrate
    from storage.database import Database

    url = settings.database_url
    if args.action == "backup":
        info = await backup.backup(url, args.out or backup.default_path(url))
        print(f"backup written: {info.summary()}")
        return 0
    if args.action == "restore":
        info = await backup.restore(url, args.backup)
        print(f"restored from {info.path}: revision {info.revision}, {sum(info.rows.values()):,} rows in "
              f"{len(info.rows)} tables")
        return 0
    if args.action == "revision":
        db = Database(args.db or "sqlite+aiosqlite:///:memory:")
        try:
            await migrate.upgrade(db)
            print(f"written: {await migrate.new_revision(db, args.message)} (read it before committing)")
        finally:
            await db.close()
        return 0
    db = Database(url)
    try:
        if args.action == "upgrade":
            result = await migrate.upgrade(db)
            how = " (adopted a database from before migrations)" if result.adopted else ""
            print(f"database at revision {result.after} (was {result.before or 'empty'}){how}"
                  if result.changed else f"database already at the newest revision {result.after}")
        else:
            print(f"revision {await migrate.current(db) or 'none'} (newest {migrate.head()})")
    finally:
        await db.close()
    return 0
