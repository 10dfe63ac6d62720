"""The `signalbot` command line: one module per subcommand (bot/cli/<name>.py declares its arguments once in
`add_arguments(parser)` and does its work in `run(args, settings) -> exit status`); this module builds the parser
from them and does what every command shares: settings with the `--db` / `--market` overrides, logging with
secrets redacted, an error as `signalbot <command>: <message>` on standard error with exit status 2, Ctrl-C as 130.
The options several commands share are in bot/cli/options.py; the computation is core's."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Collection
from types import ModuleType

from bot.cli import backfill, backtest, bench, db, run, scan, sentiment_eval, train

COMMANDS: tuple[ModuleType, ...] = (run, backfill, scan, backtest, train, bench, sentiment_eval, db)
NOISY = ("apscheduler", "aiosqlite", "sqlalchemy", "httpx", "numba", "alembic")


def parser(declared: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `declared`, only those subcommands get their arguments (main declares the one
    it runs: a command's options may import much of core, which `signalbot --help` or `run` need not wait for)."""
    p = argparse.ArgumentParser(prog="signalbot", description="Chat-bot-first trading-signal service")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sp = sub.add_parser(command.NAME, help=command.HELP, description=getattr(command, "DESCRIPTION", None))
        if declared is None or command.NAME in declared:
            command.add_arguments(sp)
        sp.set_defaults(handler=command)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(declared=argv[:1]).parse_args(argv)
    from bot.settings import Settings
    from core.errors import SignalBotError

    settings = Settings()
    if getattr(args, "db", None):
        settings = settings.model_copy(update={"database_url": args.db})
    if getattr(args, "market", None):
        settings = settings.model_copy(update={"market": args.market})
    _logging(settings, tool=getattr(args.handler, "TOOL_LOGGING", False))
    try:
        return int(args.handler.run(args, settings))
    except (ValueError, OSError, SignalBotError) as exc:
        print(f"signalbot {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _logging(settings, tool: bool) -> None:  # noqa: ANN001 - bot.settings.Settings, imported late
    """The service's logging (its level, timestamps), or a tool's (warnings and up, short lines beside a progress
    line); secrets redacted in both."""
    if tool:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from bot.logs import install_redaction, json_formatter

    if settings.log_format == "json" and not tool:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(json_formatter())
    install_redaction(settings)  # no secret in the log at any level (PTB's DEBUG names the token in its URLs)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)  # "skipped: still running" is by design

