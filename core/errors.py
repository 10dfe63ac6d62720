"""The project's own exception tree. Adapters translate vendor errors into these at their edge."""
from __future__ import annotations


class SignalBotError(Exception):
    """Base of every error the service raises on purpose."""


class UserInputError(SignalBotError):
    """Something a person typed is wrong; the message is safe to show them."""


class TooManyWatched(UserInputError):
    """A watchlist is full."""


class UnknownSymbolError(UserInputError):
    def __init__(self, symbol: str, suggestions: list[str] | None = None) -> None:
        self.symbol = symbol
        self.suggestions = suggestions or []
        hint = f" Did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"Unknown symbol '{symbol}'.{hint}")


class MarketDataError(SignalBotError):
    """A market-data provider failed or returned unusable data."""


class NotEnoughDataError(MarketDataError):
    pass


class DataValidationError(MarketDataError):
    """Input data (a file, a payload) is malformed; nothing from it was stored."""


class PermissionDenied(UserInputError):
    pass


class QuotaExceeded(UserInputError):
    pass


class DeliveryError(SignalBotError):
    """Sending a message failed. `permanent` means retrying cannot help (user blocked the bot)."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        # a message sent in parts (a chart, then the text): how many parts went out before the failure (counting
        # those a resumed send skipped) and the platform's reference of the first; a retry sends only the rest
        self.parts_sent = 0
        self.first_ref: str | None = None
        self.layout = ""  # how the parts were split (bot.transports.base.Resume)


class SentimentDataError(SignalBotError, ValueError):
    """A labelled CSV is unusable (missing columns, unknown labels, empty); the message says where."""


class SentimentModelError(SignalBotError):
    """A model folder is missing, incomplete, or does not match the base weights it was trained on."""
