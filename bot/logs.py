"""Logging set-up: secrets never reach the log, whatever the level or the library that logs.

`RedactSecrets` is a handler filter (a logger's filter would miss records propagated from libraries' loggers):
every record's message and traceback are rendered once, and each configured secret (tokens, API keys,
webhook secrets, passwords: the settings' SecretStr values) and anything shaped like a Telegram bot token is
replaced by a placeholder. PTB at DEBUG logs the Bot API URL, which carries the token
("https://api.telegram.org/bot<token>/getUpdates").
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, MutableMapping
from typing import Any

from pydantic import SecretStr

from bot.settings import Settings

_BOT_TOKEN = re.compile(r"(?<!\d)\d{5,}:[A-Za-z0-9_-]{30,}")  # Telegram's token shape: <bot id>:<35 characters>
_MIN_SECRET = 6  # shorter values would redact ordinary words


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)
        self._format = logging.Formatter()

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "<redacted>")
        return _BOT_TOKEN.sub("<token>", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._format.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold."""
    found = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
    return found


def install_redaction(settings: Settings, logger: logging.Logger | None = None) -> RedactSecrets:
    """Put the filter on every handler of `logger` (default: the root logger, after basicConfig)."""
    target = logger or logging.getLogger()
    redact = RedactSecrets(secrets_of(settings))
    for handler in target.handlers:
        handler.addFilter(redact)
    return redact


def json_formatter() -> logging.Formatter:
    """One JSON object per record (structlog's ProcessorFormatter over the standard library's records, so every
    library's log lines come out the same way): timestamp (ISO 8601, UTC), level, logger, event, process
    (host:pid, the same name /livez gives), and exception (the traceback) when there is one. The redaction filter
    runs on the record before this formats it."""
    import os
    import socket

    import structlog

    process = f"{socket.gethostname()}:{os.getpid()}"

    def add_process(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event["process"] = process
        return event

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"), add_process],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()])
