"""Telegram through python-telegram-bot v22: the one module that imports `telegram`.

`TelegramTransport` serves commands (every /command, plain text in private chats, inline-button presses) by
calling the transport-neutral `handle(caller, text) -> Doc` and sending the Doc back, and delivers the
outbox's messages through `send()`. It runs inside the service's event loop: `start()` is
initialize/start/updater.start_polling (never run_polling), `stop()` undoes it.

Telegram errors become core.errors.DeliveryError at this edge:
  RetryAfter                          -> retry_after = the seconds Telegram asked for
  Forbidden (blocked, kicked, ...)    -> permanent
  BadRequest "chat not found" & co    -> permanent; any other BadRequest -> transient (our bug, not the user's)
  TimedOut / NetworkError / 5xx       -> transient (after a timeout the message may have arrived anyway)

Telegram Stars (with `payments`, a StarsCheckout): a Doc carrying an `Invoice` gets a "Pay" button that opens a
Stars invoice link (createInvoiceLink: the only Bot API call that makes subscription invoices, 30-day period);
a pre_checkout_query is answered at once with the StarsCheckout's verdict; a message with successful_payment is
handed to it (retried a few times: Telegram does not send the update again) and its Doc is the reply.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Literal, Protocol

from telegram import BotCommand, InlineKeyboardMarkup, InputFile, LabeledPrice, ReplyParameters, Update
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut,
)
from telegram.ext import (
    AIORateLimiter, Application, BaseUpdateProcessor, CallbackQueryHandler, ContextTypes, MessageHandler,
    PreCheckoutQueryHandler, filters,
)
from telegram.request import BaseRequest, HTTPXRequest, RequestData
from telegram.warnings import PTBDeprecationWarning

from bot.commands.registry import Caller
from bot.transports.base import Progress, Resume
from bot.transports.telegram_request import AiohttpBotClient, HttpFailure, HttpTimeout, Timeouts
from bot.views.doc import Doc, Invoice
from bot.views.telegram_html import CallbackCommands, Rendered, keyboard, render_for_telegram
from bot.views.text import render_text
from core.billing import StarsPayment
from core.errors import DeliveryError

log = logging.getLogger(__name__)


class _OutboxRetries(logging.Filter):
    """With no retries in PTB's rate limiter, it logs every 429 at ERROR with a traceback before raising it; the
    outbox handles the 429 (the worker pauses the channel for the time asked and logs that at WARNING), so those
    records are dropped: a flood-control answer is not an error of the service."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.msg == "Rate limit hit after maximum of %d retries"
                    and record.args == (0,))


_NO_RETRY_ERRORS = _OutboxRetries()

Handle = Callable[[Caller, str], Awaitable[Doc]]
HttpClient = Literal["aiohttp", "httpx"]

# BadRequest descriptions that mean this chat cannot be written to, now or later
_UNREACHABLE = ("chat not found", "user not found", "peer_id_invalid", "user is deactivated", "bot was kicked",
                "chat_write_forbidden", "have no rights to send", "bot is not a member", "group chat was deactivated",
                "need administrator rights")
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
_NO_PREVIEW = {"is_disabled": True}
# send() posts sendMessage through Bot.do_api_request to keep the answer as JSON (see _send_text). Bot API
# method names are case-insensitive; this spelling is not a Bot attribute, so PTB does not warn on each call
# that Bot.send_message exists (which is what we deliberately avoid).
_SEND_MESSAGE = "SendMessage"
_PAYMENT_ATTEMPTS = 3
POLL_ERROR_WINDOW = 90.0  # seconds a failed getUpdates counts against the connection (PTB retries it)


class StarsCheckout(Protocol):
    """What the transport asks about Stars payments (bot.payments.Payments implements it)."""

    async def check_stars_checkout(self, caller: Caller, payload: str, currency: str, amount: int) -> str | None:
        """None: accept the pre-checkout; else the reason shown to the person."""
        ...

    async def stars_paid(self, caller: Caller, payment: StarsPayment) -> Doc | None:
        """Record a successful payment (idempotent by charge id); the reply, or None for a duplicate."""
        ...


class TelegramTransport:
    name = "telegram"

    def __init__(
        self,
        token: str,
        *,
        base_url: str | None = None,  # e.g. "http://127.0.0.1:8081/bot" (a local Bot API); None: api.telegram.org
        base_file_url: str | None = None,
        commands: Sequence[tuple[str, str]] = (),  # the menu: (name, summary), from the registry's visible commands
        messages_per_second: float = 30.0,  # PTB's AIORateLimiter, bot-wide; 0 turns rate limiting off
        group_messages_per_minute: float = 20.0,
        rate_limit_retries: int = 0,  # 0: a 429 becomes DeliveryError(retry_after) at once, the outbox waits
        http: HttpClient = "aiohttp",
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        write_timeout: float = 10.0,
        media_write_timeout: float = 30.0,
        pool_timeout: float = 5.0,
        connection_pool_size: int = 64,
        poll_timeout: float = 10.0,  # long-poll seconds of getUpdates
        concurrent_updates: int = 32,  # updates handled at once across chats; one at a time, in order, per chat
        callback_commands: CallbackCommands | None = None,
        payments: StarsCheckout | None = None,  # Telegram Stars; None: invoices are not offered
    ) -> None:
        self._token = token
        self._commands = list(commands)
        self._poll_timeout = poll_timeout
        self._callbacks = callback_commands or CallbackCommands()
        self._handle: Handle | None = None
        self._payments = payments
        self._initialized = False
        self.polling_elsewhere = False  # started with poll=False, or stopped: another process holds the poller lock
        self._poll_error: tuple[float, str] | None = None  # (monotonic time, what) of the last failed getUpdates
        timeouts = Timeouts(connect=connect_timeout, read=read_timeout, write=write_timeout,
                            media_write=media_write_timeout, pool=pool_timeout)
        if rate_limit_retries == 0:
            logging.getLogger("telegram.ext.AIORateLimiter").addFilter(_NO_RETRY_ERRORS)
        builder = (Application.builder().token(token)
                   .request(_request(http, timeouts, connection_pool_size))
                   .get_updates_request(_request(http, timeouts, 2))
                   .rate_limiter(AIORateLimiter(overall_max_rate=messages_per_second,
                                                group_max_rate=group_messages_per_minute,
                                                max_retries=rate_limit_retries))
                   .concurrent_updates(_ChatOrderedUpdates(concurrent_updates))
                   .job_queue(None))
        if base_url:
            builder = builder.base_url(base_url)
        if base_file_url:
            builder = builder.base_file_url(base_file_url)
        self._app = builder.build()
        self._app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.COMMAND, self._on_command))
        self._app.add_handler(MessageHandler(
            filters.UpdateType.MESSAGE & filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND, self._on_text))
        self._app.add_handler(CallbackQueryHandler(self._on_button))
        self._app.add_handler(PreCheckoutQueryHandler(self._on_pre_checkout))
        self._app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.SUCCESSFUL_PAYMENT,
                                             self._on_successful_payment))
        self._app.add_error_handler(self._on_error)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Open the HTTP sessions, check the token (getMe) and publish the command menu. Enough for send()."""
        if self._initialized:
            return
        try:
            await self._app.initialize()
        except TelegramError as exc:
            with contextlib.suppress(Exception):
                await self._app.bot.shutdown()  # close the HTTP sessions the failed getMe opened
            raise self._error(exc) from exc
        self._initialized = True
        await self._register_commands()

    async def start(self, handle: Handle, *, poll: bool = True) -> None:
        """Serve commands through `handle` and allow send(); with `poll`, long polling starts now in this event
        loop, else when `start_polling()` is called (the process that holds the bot's poller lock polls)."""
        self._handle = handle
        await self.initialize()
        try:
            await self._app.start()
        except TelegramError as exc:
            await self.stop()
            raise self._error(exc) from exc
        if poll:
            await self.start_polling()
        else:
            self.polling_elsewhere = True

    async def start_polling(self) -> None:
        """getUpdates from now on (one process per bot token may: Telegram refuses a second poller with 409)."""
        assert self._app.updater is not None
        if self._app.updater.running:
            return
        try:
            await self._app.updater.start_polling(
                poll_interval=0.0, timeout=timedelta(seconds=self._poll_timeout),
                allowed_updates=[Update.MESSAGE, Update.CALLBACK_QUERY, Update.PRE_CHECKOUT_QUERY],
                drop_pending_updates=False, error_callback=self._on_poll_error)
        except TelegramError as exc:  # e.g. deleteWebhook failed
            await self.stop()
            raise self._error(exc) from exc
        self.polling_elsewhere = False
        log.info("telegram: serving as @%s", self._app.bot.username)

    async def stop_polling(self) -> None:
        """Stop getUpdates (another process took the bot's poller lock); sending goes on."""
        updater = self._app.updater
        with contextlib.suppress(RuntimeError):
            if updater is not None and updater.running:
                await updater.stop()
        self.polling_elsewhere = True
        log.info("telegram: polling stopped here; another process polls")

    async def stop(self) -> None:
        """Stop polling, let running handlers finish, close the sessions. Safe to call twice or after a failed start."""
        updater = self._app.updater
        with contextlib.suppress(RuntimeError):
            if updater is not None and updater.running:
                await updater.stop()
        with contextlib.suppress(RuntimeError):
            if self._app.running:
                await self._app.stop()
        if self._initialized:
            await self._app.shutdown()
            self._initialized = False
        log.info("telegram: stopped")

    def connection(self, within: float = POLL_ERROR_WINDOW) -> tuple[bool, str]:
        """(connected, detail) for health checks: polling runs and no getUpdates failed in the last `within` s."""
        updater = self._app.updater
        if self._initialized and self.polling_elsewhere:
            return True, "sending; another process polls"
        if not self._initialized or updater is None or not updater.running:
            return False, "not polling"
        if self._poll_error is not None and time.monotonic() - self._poll_error[0] < within:
            return False, f"getUpdates failing: {self._poll_error[1]}"
        return True, "polling"

    def _on_poll_error(self, exc: TelegramError) -> None:
        self._poll_error = (time.monotonic(), f"{type(exc).__name__}: {exc}"[:200])
        log.warning("telegram: getUpdates failed (%s); PTB retries", self._poll_error[1])

    @property
    def bot_username(self) -> str:
        return self._app.bot.username

    # -- delivery ------------------------------------------------------------------------------------
    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None, *, resume: Resume | None = None) -> str:
        """Deliver `doc`; the id of its first message (what a later reply refers to). Raises DeliveryError, which
        says how many parts (the chart, then each text message) went out before it; `resume` skips those."""
        if not self._initialized:
            raise DeliveryError("telegram transport is not started")
        progress = Progress.of(resume)
        try:
            return await self._send_doc(_chat(chat_id), doc, reply_to, progress)
        except TelegramError as exc:
            raise progress.attach(self._error(exc)) from exc

    async def _send_doc(self, chat_id: int | str, doc: Doc, reply_to: str | int | None,
                        progress: Progress | None = None) -> str:
        progress = progress or Progress()
        try:
            return await self._send_rendered(chat_id, doc, _render(doc), reply_to, progress)
        except ChatMigrated as exc:  # a group became a supergroup: its new id takes the message
            log.warning("telegram: chat %s migrated to %s; store the new id", chat_id, exc.new_chat_id)
            return await self._send_rendered(exc.new_chat_id, doc, _render(doc), reply_to, progress)

    async def _send_rendered(self, chat_id: int | str, doc: Doc, rendered: Rendered, reply_to: str | int | None,
                             progress: Progress) -> str:
        """The parts in order: the photo (when the Doc has an image), then each text message; parts an earlier
        attempt sent (progress.skip) are not sent again, and the reply reference goes on the first part sent."""
        markup = self._markup(doc)
        if doc.invoice is not None:
            try:
                markup = await self._with_pay_button(doc.invoice, markup)
            except TelegramError as exc:  # without its Pay button the offer is useless: say so instead
                log.error("telegram: createInvoiceLink failed: %s", exc)
                failed = Doc.error("Telegram could not create the invoice just now.", "Please try again in a minute.")
                return await self._send_rendered(chat_id, failed, _render(failed), reply_to, progress)
        progress.begin(doc.image is not None, len(rendered.messages))
        reply = _reply_parameters(reply_to) if progress.skip == 0 else None
        index = 0
        if doc.image is not None:
            if progress.pending(index):
                photo = await self._app.bot.send_photo(
                    chat_id, InputFile(doc.image.data, filename=doc.image.filename),
                    caption=rendered.caption or None, parse_mode=ParseMode.HTML if rendered.caption else None,
                    reply_parameters=ReplyParameters.de_json(reply, None) if reply else None,
                    reply_markup=InlineKeyboardMarkup.de_json(markup, None) if markup and not rendered.messages
                    else None)
                progress.done(str(photo.message_id))
                reply = None
            index += 1
        for i, text in enumerate(rendered.messages):
            last = i == len(rendered.messages) - 1
            if not progress.pending(index + i):
                continue
            try:
                sent = await self._send_text(chat_id, text, ParseMode.HTML, reply, markup if last else None)
            except BadRequest as exc:
                if "can't parse entities" not in exc.message.lower():
                    raise
                log.error("telegram refused our HTML (%s); sending plain text", exc.message)
                progress.done(await self._send_plain(chat_id, doc, reply, markup))
                break
            progress.done(sent)
            reply = None
        assert progress.first_ref is not None, "render_for_telegram always yields a caption slot or a message"
        return progress.first_ref

    async def _send_text(self, chat_id: int | str, text: str, parse_mode: str | None, reply: dict[str, Any] | None,
                         markup: dict[str, Any] | None) -> str:
        """sendMessage through PTB's rate limiter and request, keeping the answer as JSON: building a
        telegram.Message from it (which we would only read message_id from) was a quarter of the CPU per send."""
        params: dict[str, Any] = {"chat_id": chat_id, "text": text, "link_preview_options": _NO_PREVIEW}
        if parse_mode:
            params["parse_mode"] = parse_mode
        if reply:
            params["reply_parameters"] = reply
        if markup:
            params["reply_markup"] = markup
        result = await self._app.bot.do_api_request(_SEND_MESSAGE, api_kwargs=params)
        return str(result["message_id"])

    async def _send_plain(self, chat_id: int | str, doc: Doc, reply: dict[str, Any] | None,
                          markup: dict[str, Any] | None) -> str:
        text = render_text(doc)
        chunks = [text[i:i + 4000] for i in range(0, len(text), 4000)] or ["…"]
        first: str | None = None
        for i, chunk in enumerate(chunks):
            sent = await self._send_text(chat_id, chunk, None, reply if i == 0 else None,
                                         markup if i == len(chunks) - 1 else None)
            first = first or sent
        assert first is not None
        return first

    async def _with_pay_button(self, invoice: Invoice, markup: dict[str, Any] | None) -> dict[str, Any]:
        """A first keyboard row with the URL button that opens the Stars invoice."""
        link = await self._app.bot.create_invoice_link(
            title=invoice.title, description=invoice.description, payload=invoice.payload, currency=invoice.currency,
            prices=[LabeledPrice(invoice.label, invoice.amount)], subscription_period=invoice.subscription_period)
        rows = (markup or {}).get("inline_keyboard", [])
        return {"inline_keyboard": [[{"text": invoice.pay_label, "url": link}], *rows]}

    def _markup(self, doc: Doc) -> dict[str, Any] | None:
        """The inline keyboard as Bot API JSON."""
        if not doc.buttons:
            return None
        return {"inline_keyboard": [[{"text": b.label, "callback_data": b.callback_data} for b in row]
                                    for row in keyboard(doc, self._callbacks)]}

    # -- serving commands ----------------------------------------------------------------------------
    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text or not self._addressed_to_me(message.text):
            return
        await self._serve(update, message.text, reply_to=message.message_id)

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        await self._serve(update, message.text, reply_to=None)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        command = self._callbacks.decode(query.data)
        try:
            await query.answer("This button has expired; send the command again." if command is None else None)
        except TelegramError as exc:  # too old to answer: run the command anyway
            log.info("telegram: could not answer callback query: %s", exc)
        if command is not None:
            await self._serve(update, command, reply_to=None)

    async def _serve(self, update: Update, text: str, reply_to: int | None) -> None:
        user, chat = update.effective_user, update.effective_chat
        if user is None or self._handle is None:
            return
        chat_id = chat.id if chat is not None else user.id
        caller = Caller("telegram", str(user.id), str(chat_id), user.full_name)
        doc = await self._handle(caller, text)
        in_group = chat is not None and chat.type != "private"
        if in_group and doc.private:  # operator figures never go into a group: to the asker, privately
            doc = await self._answer_privately(user.id, doc)
        try:
            await self._send_doc(chat_id, doc, reply_to if in_group else None)
        except TelegramError as exc:
            err = self._error(exc)
            log.warning("telegram: reply to %s in chat %s failed (%s, permanent=%s)", user.id, chat_id, err,
                        err.permanent)

    async def _answer_privately(self, user_id: int, doc: Doc) -> Doc:
        """Send `doc` to the user's private chat with the bot; what the group is told instead."""
        try:
            await self._send_doc(user_id, doc, None)
        except TelegramError as exc:
            log.warning("telegram: private answer to %s failed: %s", user_id, self._error(exc))
            return Doc(heading="Answered in private only",
                       body=f"Open a private chat with @{self.bot_username} and send /start, then ask again there.",
                       tone="warning")
        return Doc(heading="Sent to you in private", body="Operator figures are answered in a private chat.")

    # -- Telegram Stars ------------------------------------------------------------------------------
    async def _on_pre_checkout(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.pre_checkout_query
        if query is None:
            return
        user = query.from_user
        caller = Caller("telegram", str(user.id), str(user.id), user.full_name)
        error: str | None = "Payments are not available right now."
        if self._payments is not None:
            try:
                error = await self._payments.check_stars_checkout(caller, query.invoice_payload, query.currency,
                                                                  query.total_amount)
            except Exception:
                log.exception("telegram: checking pre-checkout %s failed", query.id)
                error = "We could not check this payment; please try again in a minute."
        try:
            await query.answer(ok=error is None, error_message=error)
        except TelegramError as exc:
            log.error("telegram: could not answer pre-checkout %s: %s", query.id, exc)

    async def _on_successful_payment(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or message.successful_payment is None:
            return
        paid = message.successful_payment
        payment = StarsPayment(
            telegram_payment_charge_id=paid.telegram_payment_charge_id,
            provider_payment_charge_id=paid.provider_payment_charge_id, invoice_payload=paid.invoice_payload,
            currency=paid.currency, total_amount=paid.total_amount, is_recurring=bool(paid.is_recurring),
            is_first_recurring=bool(paid.is_first_recurring),
            subscription_expiration_date=paid.subscription_expiration_date)
        caller = Caller("telegram", str(user.id), str(message.chat_id), user.full_name)
        if self._payments is None:
            log.error("telegram: payment %s arrived but payments are off; refund it by hand",
                      payment.telegram_payment_charge_id)
            return
        doc: Doc | None = None
        for attempt in range(1, _PAYMENT_ATTEMPTS + 1):
            try:
                doc = await self._payments.stars_paid(caller, payment)
                break
            except Exception:
                log.exception("telegram: recording payment %s failed (attempt %d of %d)",
                              payment.telegram_payment_charge_id, attempt, _PAYMENT_ATTEMPTS)
                if attempt == _PAYMENT_ATTEMPTS:
                    doc = Doc.error("Your payment arrived but we could not record it yet.",
                                    f"Please contact support with this reference: {payment.telegram_payment_charge_id}")
                else:
                    await asyncio.sleep(attempt)
        if doc is None:
            return
        try:
            await self._send_doc(message.chat_id, doc, None)
        except TelegramError as exc:
            log.warning("telegram: payment confirmation to %s failed: %s", user.id, exc)

    def _error(self, exc: TelegramError) -> DeliveryError:
        error = _delivery_error(exc)
        if self._token and self._token in str(error):  # PTB names the token when it is rejected
            return DeliveryError(str(error).replace(self._token, "<token>"), permanent=error.permanent,
                                 retry_after=error.retry_after)
        return error

    def _addressed_to_me(self, text: str) -> bool:
        """'/signal@OtherBot' in a group is for another bot."""
        head = text.split(maxsplit=1)[0]
        if "@" not in head:
            return True
        return head.split("@", 1)[1].lower() == (self._app.bot.username or "").lower()

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram: error while handling an update", exc_info=context.error)

    async def _register_commands(self) -> None:
        menu = [BotCommand(name, (summary.strip() or name)[:256]) for name, summary in self._commands
                if _COMMAND_NAME.fullmatch(name)][:100]
        if not menu:
            return
        try:
            await self._app.bot.set_my_commands(menu)
        except TelegramError as exc:
            log.warning("telegram: could not set the command menu: %s", exc)


# -- helpers ------------------------------------------------------------------------------------------
def _chat(chat_id: str | int) -> int | str:
    if isinstance(chat_id, int):
        return chat_id
    text = chat_id.strip()
    return int(text) if text.lstrip("-").isdigit() else text  # "@channelname" stays a string


def _reply_parameters(reply_to: str | int | None) -> dict[str, Any] | None:
    if reply_to is None:
        return None
    try:
        message_id = int(reply_to)
    except (TypeError, ValueError):
        log.warning("telegram: cannot reply to %r (not a Telegram message id); sending without reply", reply_to)
        return None
    return {"message_id": message_id, "allow_sending_without_reply": True}


@functools.lru_cache(maxsize=256)
def _render_cached(doc: Doc) -> Rendered:
    return render_for_telegram(doc)


def _render(doc: Doc) -> Rendered:
    """A fan-out renders the same Doc for many recipients: render it once."""
    try:
        return _render_cached(doc)
    except TypeError:  # a Doc holding something unhashable
        return render_for_telegram(doc)


def _retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # v22 warns that retry_after becomes a timedelta; accept both
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: Any = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _delivery_error(exc: TelegramError) -> DeliveryError:
    """Telegram's error -> ours (see the module docstring)."""
    text = f"telegram: {exc.message}"
    if isinstance(exc, RetryAfter):
        return DeliveryError(text, retry_after=_retry_seconds(exc))
    if isinstance(exc, Forbidden):
        return DeliveryError(text, permanent=True)
    if isinstance(exc, BadRequest):
        return DeliveryError(text, permanent=any(s in exc.message.lower() for s in _UNREACHABLE))
    if isinstance(exc, ChatMigrated):
        return DeliveryError(f"{text} (new chat id {exc.new_chat_id})", permanent=True)
    if isinstance(exc, TimedOut):
        return DeliveryError(f"{text} (the message may have been delivered)")
    if isinstance(exc, InvalidToken):
        return DeliveryError(f"{text} (check TELEGRAM_TOKEN)")
    return DeliveryError(text)  # NetworkError (5xx, connection), anything else: transient


class _ChatOrderedUpdates(BaseUpdateProcessor):
    """Updates of different chats run concurrently; those of one chat run one at a time, in arrival order
    (PTB's own concurrent processing could answer a quick "/prefs" before the "/start" sent just before it)."""

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}  # chat id -> (lock, updates holding or waiting)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = _chat_key(update)
        if key is None:
            await coroutine
            return
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                await coroutine
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def _chat_key(update: object) -> int | None:
    if not isinstance(update, Update):
        return None
    if update.effective_chat is not None:
        return update.effective_chat.id
    return update.effective_user.id if update.effective_user is not None else None


def _request(http: HttpClient, timeouts: Timeouts, pool_size: int) -> BaseRequest:
    if http == "httpx":
        return HTTPXRequest(connection_pool_size=pool_size, read_timeout=timeouts.read, write_timeout=timeouts.write,
                            connect_timeout=timeouts.connect, pool_timeout=timeouts.pool,
                            media_write_timeout=timeouts.media_write)
    return AiohttpRequest(AiohttpBotClient(timeouts, connection_limit=pool_size))


class AiohttpRequest(BaseRequest):
    """PTB's request interface over telegram_request.AiohttpBotClient (aiohttp), cheaper per call than httpx."""

    __slots__ = ("_client",)

    def __init__(self, client: AiohttpBotClient) -> None:
        self._client = client

    @property
    def read_timeout(self) -> float | None:
        return self._client.timeouts.read

    async def initialize(self) -> None:
        await self._client.open()

    async def shutdown(self) -> None:
        await self._client.close()

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout: Any = BaseRequest.DEFAULT_NONE, write_timeout: Any = BaseRequest.DEFAULT_NONE,
                         connect_timeout: Any = BaseRequest.DEFAULT_NONE,
                         pool_timeout: Any = BaseRequest.DEFAULT_NONE) -> tuple[int, bytes]:
        files = request_data.multipart_data if request_data is not None and request_data.contains_files else None
        try:
            if files:
                return await self._client.request(
                    method, url, fields=request_data.json_parameters if request_data else None, files=files,
                    read=_given(read_timeout), write=_given(write_timeout), connect=_given(connect_timeout),
                    pool=_given(pool_timeout), media=True)
            return await self._client.request(
                method, url, json_body=request_data.json_payload if request_data is not None else None,
                read=_given(read_timeout), write=_given(write_timeout), connect=_given(connect_timeout),
                pool=_given(pool_timeout))
        except HttpTimeout as exc:
            raise TimedOut(str(exc) or "Timed out") from exc
        except HttpFailure as exc:
            raise NetworkError(f"aiohttp: {exc}") from exc


def _given(value: Any) -> Any:
    """PTB's DEFAULT_NONE ("not passed") -> Ellipsis, our client's "use the default"."""
    return ... if value is BaseRequest.DEFAULT_NONE else value


__all__ = ["AiohttpRequest", "TelegramTransport"]
