"""A local Telegram Bot API on 127.0.0.1 for tests: the real wire format, faults on demand, every message recorded.

python-telegram-bot (or any client) points its `base_url` at `fake.base_url` ("http://127.0.0.1:PORT/bot").
Requests may come as query strings, `application/x-www-form-urlencoded` (what PTB sends: objects as JSON
strings), `multipart/form-data` (uploads) or `application/json`; answers are `{"ok": true, "result": ...}`
or `{"ok": false, "error_code": ..., "description": ..., "parameters": {...}}` as Telegram writes them.

What it checks like Telegram does: Telegram-HTML is parsed (unsupported or unbalanced tags are a 400
"can't parse entities"), text at most 4,096 and captions at most 1,024 characters after parsing (UTF-16
code units), callback_data at most 64 bytes, a reply to a missing message needs allow_sending_without_reply.

    async with FakeBotApi() as fake:
        fake.command("/start", user_id=1001)                    # an update for getUpdates
        fake.fail(status=429, retry_after=3, chat_id=1001)      # the next send to that chat gets a 429
        msgs = await fake.wait_for_messages(1, chat_id=1001)    # what the bot sent

Run alone (for benchmarks, so the server's CPU is not the client's): `python -m tests.fakes.telegram_bot_api
[--port 0] [--no-validate]` prints `PORT <n>` once it listens.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

DEFAULT_TOKEN = "123456789:TEST-token_for-the-fake-bot-api"
T = TypeVar("T")
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
# parameters that arrive JSON-encoded inside form fields
_JSON_PARAMS = frozenset({"reply_markup", "reply_parameters", "entities", "caption_entities", "commands", "scope",
                          "allowed_updates", "link_preview_options", "media", "results", "prices"})
_INT_PARAMS = frozenset({"offset", "limit", "message_id", "reply_to_message_id", "message_thread_id", "user_id",
                         "subscription_period", "max_tip_amount"})
_BOOL_PARAMS = frozenset({"disable_notification", "protect_content", "allow_sending_without_reply",
                          "drop_pending_updates", "show_alert", "disable_web_page_preview", "allow_paid_broadcast",
                          "ok", "is_canceled", "need_name", "need_email", "need_phone_number", "is_flexible"})
STARS_SUBSCRIPTION_PERIOD = 2592000  # the only period Telegram accepts for Stars subscriptions
MAX_STARS_SUBSCRIPTION_PRICE = 10000


class ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass
class Fault:
    """An injected failure. `status` 0 means no error: only the delay (a slow server, for client timeouts)."""

    status: int
    description: str = ""
    retry_after: int | None = None
    delay: float = 0.0
    method: str | None = None  # lower-case Bot API method; None: every send* method
    chat_id: int | str | None = None  # None: every chat
    times: int | None = 1  # how many requests it hits; None: until clear_faults()
    probability: float = 1.0

    def matches(self, method: str, chat_id: int | str | None) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method is None:
            if not method.startswith("send"):
                return False
        elif self.method != method:
            return False
        return self.chat_id is None or _same_chat(self.chat_id, chat_id)


@dataclass
class SentMessage:
    """One message the bot sent (or edited: `edits` counts the edits)."""

    method: str  # sendmessage, sendphoto, senddocument
    chat_id: int | str
    message_id: int
    text: str  # what a person sees: the text or caption with the markup parsed away
    raw: str  # as sent, with its markup
    parse_mode: str | None
    entities: list[dict[str, Any]]
    reply_to_message_id: int | None
    allow_sending_without_reply: bool | None
    reply_markup: dict[str, Any] | None
    photo: bytes | None = None
    photo_filename: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    edits: int = 0

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(label, callback_data) of an inline keyboard, row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [(b.get("text", ""), b.get("callback_data", "")) for row in rows for b in row]


@dataclass
class IssuedInvoice:
    """An invoice the bot made (createInvoiceLink or sendInvoice)."""

    method: str  # createinvoicelink | sendinvoice
    title: str
    description: str
    payload: str
    currency: str
    prices: list[dict[str, Any]]
    subscription_period: int | None
    link: str | None = None
    chat_id: int | str | None = None
    message_id: int | None = None

    @property
    def total_amount(self) -> int:
        return sum(int(p["amount"]) for p in self.prices)


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int
    at: float


class FakeBotApi:
    def __init__(self, token: str = DEFAULT_TOKEN, *, bot_id: int | None = None, username: str = "signal_test_bot",
                 first_name: str = "Signal Test Bot", validate: bool = True, seed: int = 0,
                 record_calls: bool = True) -> None:
        """validate=False skips HTML parsing and the limits (a faster server); record_calls=False keeps no
        `sent`/`calls` lists (a long benchmark). Message ids per chat are kept either way."""
        self.token = token
        self.bot_user = {"id": bot_id or int(token.split(":", 1)[0]), "is_bot": True, "first_name": first_name,
                         "username": username, "can_join_groups": True, "can_read_all_group_messages": False,
                         "supports_inline_queries": False}
        self.validate = validate
        self.record_calls = record_calls
        self.sent: list[SentMessage] = []
        self.calls: list[Call] = []
        self._sent_by_chat: dict[str, list[SentMessage]] = defaultdict(list)
        self._calls_by_method: dict[str, list[Call]] = defaultdict(list)
        self.callback_answers: list[dict[str, Any]] = []
        self.invoices: list[IssuedInvoice] = []
        self.pre_checkout_answers: dict[str, dict[str, Any]] = {}  # query id -> {"ok": ..., "error_message": ...}
        self._pre_checkout_ids = itertools.count(1)
        self._open_pre_checkouts: set[str] = set()
        self._charge_ids = itertools.count(1)
        self.commands: list[dict[str, str]] = []
        self.faults: list[Fault] = []
        self.webhook_url = ""
        self.request_count = 0
        self.polls = self.polls_in_flight = self.max_polls_in_flight = 0
        self._random = random.Random(seed)
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._message_ids: dict[int | str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._messages: dict[tuple[int | str, int], SentMessage] = {}
        self._user_messages: set[tuple[int | str, int]] = set()
        self._chats: dict[int | str, dict[str, Any]] = {}
        self._update_event = asyncio.Event()
        self._record_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0
        self._handlers: dict[str, Callable[[dict[str, Any], dict[str, bytes]], Any]] = {
            "getme": self._get_me, "getupdates": self._get_updates, "deletewebhook": self._delete_webhook,
            "setwebhook": self._set_webhook, "getwebhookinfo": self._get_webhook_info,
            "sendmessage": self._send_message, "sendphoto": self._send_photo, "senddocument": self._send_document,
            "editmessagetext": self._edit_message_text, "editmessagereplymarkup": self._edit_reply_markup,
            "deletemessage": self._true, "sendchataction": self._true, "answercallbackquery": self._answer_callback,
            "setmycommands": self._set_my_commands, "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands, "getchat": self._get_chat, "close": self._true,
            "logout": self._true, "setmydescription": self._true, "setmyshortdescription": self._true,
            "createinvoicelink": self._create_invoice_link, "sendinvoice": self._send_invoice,
            "answerprecheckoutquery": self._answer_pre_checkout,
        }

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    @property
    def api_url(self) -> str:
        """The URL prefix of this bot's methods: api_url + "/sendMessage"."""
        return f"{self.base_url}{self.token}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        return app

    async def start(self, port: int = 0) -> FakeBotApi:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await self._site.start()
        self.port = int(self._runner.addresses[0][1])  # port 0 asked for a free one
        return self

    async def close(self) -> None:
        self._update_event.set()  # release long polls
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotApi:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- updates a test injects ----------------------------------------------------------------------
    def push_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update (its update_id is assigned here); returns the update_id."""
        update = {"update_id": next(self._update_ids), **{k: v for k, v in update.items() if k != "update_id"}}
        self._updates.append(update)
        self._notify_updates()
        return int(update["update_id"])

    def text_message(self, text: str, *, user_id: int = 1001, chat_id: int | None = None, first_name: str = "Alice",
                     last_name: str | None = None, username: str | None = None, chat_type: str | None = None,
                     entities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Queue a message a person sends the bot; returns the Message object."""
        chat_id = user_id if chat_id is None else chat_id
        user = {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        chat = self._chat(chat_id, chat_type=chat_type, user=user)
        message_id = next(self._message_ids[chat_id])
        self._user_messages.add((chat_id, message_id))
        message: dict[str, Any] = {"message_id": message_id, "from": user, "chat": chat, "date": int(time.time()),
                                   "text": text}
        if entities:
            message["entities"] = entities
        self.push_update({"message": message})
        return message

    def command(self, text: str, **kwargs: Any) -> dict[str, Any]:
        """Queue a command message ("/signal AAPL") with its bot_command entity, as a Telegram client sends it."""
        head = text.split(maxsplit=1)[0] if text.strip() else text
        entity = {"type": "bot_command", "offset": 0, "length": _utf16_len(head)}
        return self.text_message(text, entities=[entity] if text.startswith("/") else None, **kwargs)

    def callback(self, data: str, *, user_id: int = 1001, chat_id: int | None = None, message_id: int | None = None,
                 first_name: str = "Alice", last_name: str | None = None) -> str:
        """Queue a press on an inline button of a message the bot sent (the last one to that chat by default).
        Returns the callback query id (answerCallbackQuery reports it)."""
        chat_id = user_id if chat_id is None else chat_id
        if message_id is None:
            mine = self._sent_by_chat.get(str(chat_id))
            if not mine:
                raise LookupError(f"the bot sent nothing to chat {chat_id} yet")
            message_id = mine[-1].message_id
        user = {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}
        if last_name:
            user["last_name"] = last_name
        sent = self._messages.get((chat_id, message_id))
        message = self._message_json(sent) if sent else {
            "message_id": message_id, "date": int(time.time()), "chat": self._chat(chat_id, user=user),
            "from": self.bot_user, "text": "?"}
        query_id = str(next(self._callback_ids) + 7_000_000_000)
        self.push_update({"callback_query": {"id": query_id, "from": user, "message": message,
                                             "chat_instance": f"ci{chat_id}", "data": data}})
        return query_id

    # -- payments (Telegram Stars) ------------------------------------------------------------------
    def invoice_by_link(self, link: str) -> IssuedInvoice:
        for invoice in self.invoices:
            if invoice.link == link:
                return invoice
        raise LookupError(f"no invoice with link {link!r}")

    def pre_checkout(self, invoice_payload: str, *, user_id: int = 1001, total_amount: int, currency: str = "XTR",
                     first_name: str = "Alice") -> str:
        """Queue the pre_checkout_query Telegram sends when a person presses Pay; returns its id (the bot must
        answer it with answerPreCheckoutQuery within 10 seconds)."""
        query_id = str(8_000_000_000 + next(self._pre_checkout_ids))
        user = {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}
        self._open_pre_checkouts.add(query_id)
        self.push_update({"pre_checkout_query": {"id": query_id, "from": user, "currency": currency,
                                                 "total_amount": total_amount, "invoice_payload": invoice_payload}})
        return query_id

    def successful_payment(self, invoice_payload: str, *, user_id: int = 1001, total_amount: int,
                           currency: str = "XTR", charge_id: str | None = None, is_recurring: bool = False,
                           is_first_recurring: bool = False, subscription_expiration_date: int | None = None,
                           first_name: str = "Alice") -> dict[str, Any]:
        """Queue the service message with `successful_payment` Telegram sends after the payment went through
        (a renewal of a subscription comes the same way, with is_recurring). Returns the message."""
        chat = self._chat(user_id, user={"first_name": first_name})
        user = {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}
        payment: dict[str, Any] = {
            "currency": currency, "total_amount": total_amount, "invoice_payload": invoice_payload,
            "telegram_payment_charge_id": charge_id or f"stxTESTcharge{next(self._charge_ids):06d}",
            "provider_payment_charge_id": ""}
        if is_recurring:
            payment["is_recurring"] = True
        if is_first_recurring:
            payment["is_first_recurring"] = True
        if subscription_expiration_date is not None:
            payment["subscription_expiration_date"] = subscription_expiration_date
        message_id = next(self._message_ids[user_id])
        self._user_messages.add((user_id, message_id))
        message = {"message_id": message_id, "from": user, "chat": chat, "date": int(time.time()),
                   "successful_payment": payment}
        self.push_update({"message": message})
        return message

    async def pay(self, invoice: IssuedInvoice, *, user_id: int = 1001, total_amount: int | None = None,
                  payload: str | None = None, timeout: float = 10.0) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """What Telegram does when the person pays: a pre-checkout query, and only if the bot answers ok, the
        successful payment (with a 30-day expiration for a subscription). Returns (the bot's answer, the payment
        message or None)."""
        amount = invoice.total_amount if total_amount is None else total_amount
        query_id = self.pre_checkout(payload or invoice.payload, user_id=user_id, total_amount=amount,
                                     currency=invoice.currency)
        answer = await self.wait_for_pre_checkout_answer(query_id, timeout=timeout)
        if not answer.get("ok"):
            return answer, None
        expires = int(time.time()) + invoice.subscription_period if invoice.subscription_period else None
        message = self.successful_payment(payload or invoice.payload, user_id=user_id, total_amount=amount,
                                          currency=invoice.currency, is_recurring=expires is not None,
                                          is_first_recurring=expires is not None,
                                          subscription_expiration_date=expires)
        return answer, message

    async def wait_for_pre_checkout_answer(self, query_id: str, timeout: float = 10.0) -> dict[str, Any]:
        return await self._wait(lambda: self.pre_checkout_answers.get(query_id), timeout,
                                f"the answer to pre-checkout query {query_id}")

    @property
    def pending_updates(self) -> int:
        return len(self._updates)

    # -- faults --------------------------------------------------------------------------------------
    def fail(self, status: int = 500, description: str | None = None, *, retry_after: int | None = None,
             delay: float = 0.0, method: str | None = None, chat_id: int | str | None = None,
             times: int | None = 1, probability: float = 1.0) -> Fault:
        """The next `times` matching requests fail (None: until clear_faults). method None = every send*."""
        if description is None:
            description = {
                400: "Bad Request: chat not found", 403: "Forbidden: bot was blocked by the user",
                429: f"Too Many Requests: retry after {retry_after or 1}", 500: "Internal Server Error",
                502: "Bad Gateway", 0: ""}.get(status, "Error")
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = Fault(status, description, retry_after, delay, method.lower() if method else None, chat_id, times,
                      probability)
        self.faults.append(fault)
        return fault

    def rate_limit(self, retry_after: int = 1, **kwargs: Any) -> Fault:
        return self.fail(429, retry_after=retry_after, **kwargs)

    def block(self, chat_id: int | str, **kwargs: Any) -> Fault:
        """The user blocked the bot: every send to the chat gets 403 until clear_faults()."""
        kwargs.setdefault("times", None)
        return self.fail(403, chat_id=chat_id, **kwargs)

    def slow(self, seconds: float, **kwargs: Any) -> Fault:
        """Answer the next matching requests late (a client with a shorter read timeout times out)."""
        return self.fail(0, delay=seconds, **kwargs)

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset_records(self) -> None:
        """Forget what was sent and called (faults, updates and message ids stay)."""
        self.sent.clear()
        self.calls.clear()
        self._sent_by_chat.clear()
        self._calls_by_method.clear()
        self.callback_answers.clear()

    # -- what the bot did ----------------------------------------------------------------------------
    def messages_to(self, chat_id: int | str) -> list[SentMessage]:
        return list(self._sent_by_chat.get(str(chat_id), ()))

    def calls_to(self, method: str) -> list[Call]:
        return list(self._calls_by_method.get(method.lower(), ()))

    async def wait_for_messages(self, count: int, *, chat_id: int | str | None = None,
                                timeout: float = 10.0) -> list[SentMessage]:
        """At least `count` messages sent (to `chat_id` if given); returns them. TimeoutError otherwise."""
        def ready() -> list[SentMessage] | None:
            msgs = self.sent if chat_id is None else self._sent_by_chat.get(str(chat_id), [])
            return list(msgs) if len(msgs) >= count else None
        return await self._wait(ready, timeout, f"{count} message(s) to chat {chat_id}")

    async def wait_for_calls(self, method: str, count: int = 1, *, timeout: float = 10.0) -> list[Call]:
        def ready() -> list[Call] | None:
            calls = self._calls_by_method.get(method.lower(), [])
            return list(calls) if len(calls) >= count else None
        return await self._wait(ready, timeout, f"{count} call(s) of {method}")

    async def wait_until_consumed(self, timeout: float = 10.0) -> None:
        """Every queued update was fetched and confirmed by the client."""
        await self._wait(lambda: True if not self._updates else None, timeout, "updates to be confirmed")

    async def _wait(self, ready: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = asyncio.get_running_loop().time() + timeout
        while (result := ready()) is None:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"fake Bot API: waited {timeout}s for {what}")
            event = self._record_event
            try:
                await asyncio.wait_for(event.wait(), timeout=remaining)
            except TimeoutError:
                pass
        return result

    def _notify_records(self) -> None:
        self._record_event.set()
        self._record_event = asyncio.Event()

    def _notify_updates(self) -> None:
        self._update_event.set()
        self._update_event = asyncio.Event()
        self._notify_records()

    # -- HTTP ----------------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.Response:
        self.request_count += 1
        method = request.match_info["method"].lower()
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        try:
            params, files = await _read_params(request)
        except ApiError as exc:
            return _error(exc.status, exc.description)
        handler = self._handlers.get(method)
        if handler is None:
            return _error(404, "Not Found")
        status = 200
        try:
            await self._apply_faults(method, params.get("chat_id"))
            result = handler(params, files)
            if asyncio.iscoroutine(result):
                result = await result
            response = _ok(result)
        except ApiError as exc:
            status = exc.status
            response = _error(exc.status, exc.description, exc.parameters)
        if self.record_calls and method != "getupdates":
            call = Call(method, params, status, time.time())
            self.calls.append(call)
            self._calls_by_method[method].append(call)
            self._notify_records()
        return response

    async def _apply_faults(self, method: str, chat_id: Any) -> None:
        for fault in self.faults:
            if not fault.matches(method, chat_id):
                continue
            if fault.probability < 1.0 and self._random.random() >= fault.probability:
                continue
            if fault.times is not None:
                fault.times -= 1
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status:
                params = {"retry_after": fault.retry_after} if fault.retry_after is not None else None
                raise ApiError(fault.status, fault.description, params)
            return

    # -- methods -------------------------------------------------------------------------------------
    def _true(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        return True

    def _get_me(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return self.bot_user

    async def _get_updates(self, params: dict[str, Any], files: dict[str, bytes]) -> list[dict[str, Any]]:
        if self.webhook_url:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
                                "to delete the webhook first")
        offset = int(params.get("offset") or 0)
        limit = min(100, max(1, int(params.get("limit") or 100)))
        timeout = float(params.get("timeout") or 0)
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self._notify_records()
        self.polls += 1
        self.polls_in_flight += 1  # two at once: two bot instances polling (Telegram answers one of them 409)
        self.max_polls_in_flight = max(self.max_polls_in_flight, self.polls_in_flight)
        try:
            if not self._updates and timeout > 0:
                event = self._update_event
                try:
                    await asyncio.wait_for(event.wait(), timeout=timeout)
                except TimeoutError:
                    pass
        finally:
            self.polls_in_flight -= 1
        allowed = params.get("allowed_updates")
        updates = [u for u in self._updates if not allowed or any(k in u for k in allowed)]
        return updates[:limit]

    def _delete_webhook(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        self.webhook_url = ""
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _set_webhook(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        self.webhook_url = str(params.get("url") or "")
        return True

    def _get_webhook_info(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return {"url": self.webhook_url, "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    def _get_chat(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        return {**self._chat(chat_id), "accent_color_id": 0, "max_reaction_count": 11}

    def _send_message(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        raw = str(params.get("text") or "")
        text, entities = self._parse_text(raw, params.get("parse_mode"), MAX_TEXT, "message is too long")
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        return self._message_json(self._record("sendmessage", chat_id, raw, text, entities, params))

    def _send_photo(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return self._send_media("sendphoto", "photo", params, files)

    def _send_document(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return self._send_media("senddocument", "document", params, files)

    def _send_media(self, method: str, kind: str, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        ref = params.get(kind)
        if isinstance(ref, str) and ref.startswith("attach://"):
            ref = ref.removeprefix("attach://")
            data = files.get(ref)
        else:
            data = files.get(kind)
        if data is None and not (isinstance(ref, str) and ref):
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        if data is not None and not data:
            raise ApiError(400, "Bad Request: file must be non-empty")
        raw = str(params.get("caption") or "")
        text, entities = self._parse_text(raw, params.get("parse_mode"), MAX_CAPTION, "message caption is too long")
        msg = self._record(method, chat_id, raw, text, entities, params)
        msg.photo = data
        msg.photo_filename = params.get(f"_{kind}_filename")
        return self._message_json(msg)

    def _edit_message_text(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        msg = self._messages.get((chat_id, int(params.get("message_id") or 0)))
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        raw = str(params.get("text") or "")
        text, entities = self._parse_text(raw, params.get("parse_mode"), MAX_TEXT, "message is too long")
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        markup = params.get("reply_markup")
        self._check_markup(markup)
        if raw == msg.raw and markup == msg.reply_markup:
            raise ApiError(400, "Bad Request: message is not modified: specified new message content and reply "
                                "markup are exactly the same as a current content and reply markup of the message")
        msg.raw, msg.text, msg.entities, msg.reply_markup = raw, text, entities, markup
        msg.parse_mode = params.get("parse_mode")
        msg.edits += 1
        self._notify_records()
        return {**self._message_json(msg), "edit_date": int(time.time())}

    def _edit_reply_markup(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        msg = self._messages.get((chat_id, int(params.get("message_id") or 0)))
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        self._check_markup(params.get("reply_markup"))
        msg.reply_markup = params.get("reply_markup")
        msg.edits += 1
        return {**self._message_json(msg), "edit_date": int(time.time())}

    def _answer_callback(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        if not params.get("callback_query_id"):
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self.callback_answers.append(params)
        self._notify_records()
        return True

    def _invoice(self, method: str, params: dict[str, Any]) -> IssuedInvoice:
        title, description = str(params.get("title") or ""), str(params.get("description") or "")
        payload, currency = str(params.get("payload") or ""), str(params.get("currency") or "")
        if not 1 <= len(title) <= 32:
            raise ApiError(400, "Bad Request: INVOICE_TITLE_INVALID" if title else "Bad Request: title is empty")
        if not 1 <= len(description) <= 255:
            raise ApiError(400, "Bad Request: INVOICE_DESCRIPTION_INVALID")
        if not 1 <= len(payload.encode()) <= 128:
            raise ApiError(400, "Bad Request: INVOICE_PAYLOAD_INVALID")
        prices = params.get("prices")
        if not isinstance(prices, list) or not prices:
            raise ApiError(400, "Bad Request: can't parse prices JSON object")
        for p in prices:
            if not isinstance(p, dict) or not p.get("label") or not isinstance(p.get("amount"), int):
                raise ApiError(400, "Bad Request: can't parse prices JSON object")
        period = params.get("subscription_period")
        if currency == "XTR":
            if params.get("provider_token"):
                raise ApiError(400, "Bad Request: PAYMENT_PROVIDER_INVALID")
            if len(prices) != 1:
                raise ApiError(400, "Bad Request: STARS_INVOICE_INVALID: exactly one price is allowed")
        elif currency == "" or len(currency) != 3:
            raise ApiError(400, "Bad Request: CURRENCY_INVALID")
        if period is not None:
            if currency != "XTR":
                raise ApiError(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID: subscriptions need Telegram Stars")
            if period != STARS_SUBSCRIPTION_PERIOD:
                raise ApiError(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID")
            if sum(p["amount"] for p in prices) > MAX_STARS_SUBSCRIPTION_PRICE:
                raise ApiError(400, "Bad Request: SUBSCRIPTION_PRICE_INVALID")
        return IssuedInvoice(method, title, description, payload, currency, prices, period)

    def _create_invoice_link(self, params: dict[str, Any], files: dict[str, bytes]) -> str:
        invoice = self._invoice("createinvoicelink", params)
        invoice.link = f"https://t.me/$TestInvoice{len(self.invoices) + 1:04d}"
        self.invoices.append(invoice)
        self._notify_records()
        return invoice.link

    def _send_invoice(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        if params.get("subscription_period") is not None:
            raise ApiError(400, "Bad Request: subscription_period is only accepted by createInvoiceLink")
        invoice = self._invoice("sendinvoice", params)
        msg = self._record("sendinvoice", chat_id, invoice.title, invoice.title, [], params)
        invoice.chat_id, invoice.message_id = chat_id, msg.message_id
        self.invoices.append(invoice)
        out = self._message_json(msg)
        out.pop("text", None)
        out["invoice"] = {"title": invoice.title, "description": invoice.description, "start_parameter": "",
                          "currency": invoice.currency, "total_amount": invoice.total_amount}
        return out

    def _answer_pre_checkout(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        query_id = str(params.get("pre_checkout_query_id") or "")
        if query_id not in self._open_pre_checkouts:
            raise ApiError(400, "Bad Request: QUERY_ID_INVALID")
        ok = params.get("ok")
        if not isinstance(ok, bool):
            raise ApiError(400, "Bad Request: ok is required")
        if not ok and not params.get("error_message"):
            raise ApiError(400, "Bad Request: ERROR_MESSAGE_EMPTY")
        self._open_pre_checkouts.discard(query_id)
        self.pre_checkout_answers[query_id] = {"ok": ok, "error_message": params.get("error_message")}
        self._notify_records()
        return True

    def _set_my_commands(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        commands = params.get("commands") or []
        for c in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(c.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(c.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        if len(commands) > 100:
            raise ApiError(400, "Bad Request: too many commands")
        self.commands = [{"command": c["command"], "description": c["description"]} for c in commands]
        return True

    def _get_my_commands(self, params: dict[str, Any], files: dict[str, bytes]) -> list[dict[str, str]]:
        return list(self.commands)

    def _delete_my_commands(self, params: dict[str, Any], files: dict[str, bytes]) -> bool:
        self.commands = []
        return True

    # -- helpers -------------------------------------------------------------------------------------
    def _parse_text(self, raw: str, parse_mode: Any, limit: int, too_long: str) -> tuple[str, list[dict[str, Any]]]:
        if not self.validate:
            return raw, []
        mode = (parse_mode or "").lower()
        if mode == "html":
            try:
                text, entities = parse_telegram_html(raw)
            except HtmlEntityError as exc:
                raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        elif mode in ("", "none"):
            text, entities = raw, []
        else:  # MarkdownV2 and Markdown are not spoken here
            raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r} in this fake")
        text = text.strip()
        if _utf16_len(text) > limit:
            raise ApiError(400, f"Bad Request: {too_long}")
        return text, entities

    def _check_markup(self, markup: Any) -> None:
        if markup is None or not self.validate:
            return
        if not isinstance(markup, dict):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return
        for row in rows:
            for button in row:
                if not button.get("text"):
                    raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode("utf-8")) <= MAX_CALLBACK_DATA:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")

    def _record(self, method: str, chat_id: int | str, raw: str, text: str, entities: list[dict[str, Any]],
                params: dict[str, Any]) -> SentMessage:
        markup = params.get("reply_markup")
        self._check_markup(markup)
        reply = params.get("reply_parameters") or {}
        reply_to = reply.get("message_id") if isinstance(reply, dict) else None
        allow_without = reply.get("allow_sending_without_reply") if isinstance(reply, dict) else None
        if reply_to is None and params.get("reply_to_message_id") is not None:
            reply_to = int(params["reply_to_message_id"])
            allow_without = params.get("allow_sending_without_reply")
        if reply_to is not None and self.validate:
            exists = (chat_id, int(reply_to)) in self._messages or (chat_id, int(reply_to)) in self._user_messages
            if not exists and not allow_without:
                raise ApiError(400, "Bad Request: message to be replied not found")
        message_id = next(self._message_ids[chat_id])
        msg = SentMessage(method, chat_id, message_id, text, raw, params.get("parse_mode"), entities,
                          int(reply_to) if reply_to is not None else None, allow_without, markup, params=params)
        if self.record_calls:
            self.sent.append(msg)
            self._sent_by_chat[str(chat_id)].append(msg)
        self._messages[(chat_id, message_id)] = msg
        self._notify_records()
        return msg

    def _message_json(self, msg: SentMessage) -> dict[str, Any]:
        out: dict[str, Any] = {"message_id": msg.message_id, "from": self.bot_user, "chat": self._chat(msg.chat_id),
                               "date": int(time.time())}
        key = "text" if msg.method == "sendmessage" else "caption"
        if msg.text or key == "text":
            out[key] = msg.text
        if msg.entities:
            out["entities" if key == "text" else "caption_entities"] = msg.entities
        if msg.method == "sendphoto":
            size = len(msg.photo or b"")
            out["photo"] = [{"file_id": f"AgAC{msg.chat_id}_{msg.message_id}_{w}", "file_unique_id": f"u{msg.message_id}{w}",
                             "width": w, "height": w * 3 // 4, "file_size": size * w // 1280 or 1}
                            for w in (90, 320, 800, 1280)]
        elif msg.method == "senddocument":
            out["document"] = {"file_id": f"BQAC{msg.chat_id}_{msg.message_id}", "file_unique_id": f"d{msg.message_id}",
                               "file_name": msg.photo_filename or "file", "file_size": len(msg.photo or b"")}
        if msg.reply_markup and msg.reply_markup.get("inline_keyboard"):
            out["reply_markup"] = msg.reply_markup
        if msg.reply_to_message_id is not None and (msg.chat_id, msg.reply_to_message_id) in self._messages:
            original = self._messages[(msg.chat_id, msg.reply_to_message_id)]
            out["reply_to_message"] = {"message_id": original.message_id, "from": self.bot_user,
                                       "chat": self._chat(msg.chat_id), "date": int(time.time()),
                                       "text": original.text}
        return out

    def _chat(self, chat_id: int | str, *, chat_type: str | None = None, user: dict[str, Any] | None = None
              ) -> dict[str, Any]:
        known = self._chats.get(chat_id)
        if known is not None and chat_type is None:
            return known
        if isinstance(chat_id, int) and chat_id > 0 and chat_type in (None, "private"):
            chat: dict[str, Any] = {"id": chat_id, "type": "private",
                                    "first_name": (user or {}).get("first_name", "User")}
            if user and user.get("username"):
                chat["username"] = user["username"]
        else:
            kind = chat_type or ("supergroup" if isinstance(chat_id, int) and chat_id < -1_000_000_000_000 else "group")
            chat = {"id": chat_id, "type": kind, "title": f"Group {chat_id}"}
        self._chats[chat_id] = chat
        return chat


# -- wire format --------------------------------------------------------------------------------------
def _ok(result: Any) -> web.Response:
    return web.Response(body=json.dumps({"ok": True, "result": result}, ensure_ascii=False).encode(),
                        content_type="application/json")


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Query string, urlencoded or multipart form, or a JSON body -> (params, uploaded files by field name)."""
    params: dict[str, Any] = dict(request.query)
    files: dict[str, bytes] = {}
    if request.method == "POST" and request.can_read_body:
        ctype = request.content_type
        if ctype == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON object") from None
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: JSON object expected")
            params.update(body)
            return _coerce(params, from_text=False), files
        if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                    params[f"_{key}_filename"] = value.filename
                else:
                    params[key] = value
    return _coerce(params, from_text=True), files


def _coerce(params: dict[str, Any], *, from_text: bool) -> dict[str, Any]:
    for key, value in params.items():
        if not isinstance(value, str):
            continue
        if key in _JSON_PARAMS:
            try:
                params[key] = json.loads(value)
            except ValueError:
                raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
        elif key in _INT_PARAMS or key == "timeout":
            try:
                params[key] = float(value) if key == "timeout" else int(value)
            except ValueError:
                raise ApiError(400, f"Bad Request: invalid {key} specified") from None
        elif key in _BOOL_PARAMS:
            params[key] = value.lower() in ("true", "1")
    return params


def _chat_id(params: dict[str, Any]) -> int | str:
    raw = params.get("chat_id")
    if raw is None or raw == "":
        raise ApiError(400, "Bad Request: chat_id is empty")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.startswith("@"):
        return text
    raise ApiError(400, "Bad Request: chat not found")


def _same_chat(a: int | str | None, b: int | str | None) -> bool:
    return a is not None and b is not None and str(a) == str(b)


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# -- Telegram HTML ------------------------------------------------------------------------------------
class HtmlEntityError(ValueError):
    pass


_TAGS = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
         "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
         "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre", "blockquote": "blockquote",
         "tg-emoji": "custom_emoji"}
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]*))*)\s*>")
_ENTITY_RE = re.compile(r"&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|[a-zA-Z]+);")


def parse_telegram_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode: the plain text and its entities (offsets in UTF-16 code units).
    Raises HtmlEntityError where Telegram answers "can't parse entities"."""
    out: list[str] = []
    length = 0  # UTF-16 code units written so far
    stack: list[tuple[str, int, dict[str, Any]]] = []
    entities: list[dict[str, Any]] = []
    pos = 0
    while pos < len(source):
        lt = source.find("<", pos)
        chunk = source[pos:] if lt < 0 else source[pos:lt]
        if chunk:
            text = _decode_entities(chunk)
            out.append(text)
            length += _utf16_len(text)
        if lt < 0:
            break
        m = _TAG_RE.match(source, lt)
        if m is None:
            raise HtmlEntityError(f"Unsupported start tag at byte offset {len(source[:lt].encode())}")
        closing, name, attrs = m.group(1) == "/", m.group(2).lower(), m.group(3)
        if name not in _TAGS:
            raise HtmlEntityError(f'Unsupported start tag "{name}" at byte offset {len(source[:lt].encode())}')
        if closing:
            if not stack or stack[-1][0] != name:
                raise HtmlEntityError(f'Unmatched end tag at byte offset {len(source[:lt].encode())}, expected '
                                      f'"</{stack[-1][0] if stack else ""}>", found "</{name}>"')
            tag, start, details = stack.pop()
            if length > start:
                entities.append({"type": _TAGS[tag], "offset": start, "length": length - start, **details})
        else:
            extra: dict[str, Any] = {}
            if name == "a":
                href = re.search(r"href\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]*)", attrs)
                if href is None:
                    raise HtmlEntityError("Can't find href attribute of a link")
                extra["url"] = _decode_entities(href.group(1).strip("\"'"))
            elif name == "span" and "tg-spoiler" not in attrs:
                raise HtmlEntityError('Tag "span" must have class "tg-spoiler"')
            elif name == "code" and stack and stack[-1][0] == "pre":
                lang = re.search(r"class\s*=\s*[\"']?language-([^\"'\s>]+)", attrs)
                if lang:
                    stack[-1][2]["language"] = lang.group(1)
            stack.append((name, length, extra))
        pos = m.end()
    if stack:
        raise HtmlEntityError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _decode_entities(chunk: str) -> str:
    if "&" not in chunk:
        return chunk

    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.startswith("#x"):
            return chr(int(ref[2:], 16))
        if ref.startswith("#"):
            return chr(int(ref[1:]))
        return _NAMED.get(ref, m.group(0))  # other named entities stay as written
    return _ENTITY_RE.sub(one, chunk)


# -- run alone ----------------------------------------------------------------------------------------
async def _serve(port: int, validate: bool, token: str) -> None:
    fake = FakeBotApi(token, validate=validate, record_calls=False)
    await fake.start(port)
    print(f"PORT {fake.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.close()


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--no-validate", action="store_true", help="skip HTML parsing and limit checks (faster)")
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop when it is installed")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(_serve(args.port, not args.no_validate, args.token))
            return
    asyncio.run(_serve(args.port, not args.no_validate, args.token))


if __name__ == "__main__":
    main()
