"""Discord through discord.py: the one module that imports `discord`.

`DiscordTransport` serves the command registry as slash commands (one optional string option "args" each)
and the buttons under its messages, by calling the transport-neutral `handle(caller, text) -> Doc`, and
delivers the outbox's messages through `send()`. It runs inside the service's event loop: `start()` logs in
(HTTP), publishes the slash commands and runs the gateway connection as a task (`Client.connect`, never
`Client.run`); `stop()` closes it. Intents: `guilds` only. Slash commands and buttons arrive as interactions,
so the privileged message-content intent is not needed.

An interaction is acknowledged at once with a deferred ("thinking") response and answered by a followup, so a
slow command (a first /signal) never misses Discord's 3-second window. Buttons carry their command in the
custom_id (`cmd:<i>:<command or key>`) and are routed by a DynamicItem, so they keep working after a restart
and no view is kept in memory per message sent.

chat_id of a Discord user is their user id: signals go to their DMs (a DM channel is created, or found in the
cache). `channel:<id>` delivers to a channel instead. send() returns "<channel_id>/<message_id>"; given as
`reply_to`, an exit is posted as a reply (message_reference) to that message.

Discord errors become core.errors.DeliveryError at this edge:
  429 longer than `max_ratelimit_wait` -> retry_after = the seconds Discord asked for (shorter ones discord.py
                                          waits out and retries by itself: the SDK's retry, not stacked)
  403 Forbidden (DMs closed, blocked, no access) / 404 (unknown user or channel) -> permanent
  5xx (after discord.py's own retries), network errors, timeouts -> transient
  any other 4xx -> transient (our bug, not the user's); embeds refused with 400 / 50035 "Invalid Form Body"
                   are sent once more as plain text (like Telegram's HTML fallback)
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.commands.registry import Caller
from bot.transports.base import Progress, Resume
from bot.views.discord_embed import DiscordMessage, attachment_name, button_rows, render_embeds
from bot.views.doc import Doc
from bot.views.telegram_html import CallbackCommands
from bot.views.text import render_text
from core.errors import DeliveryError

if TYPE_CHECKING:
    from bot.services import Services
    from bot.settings import Settings

log = logging.getLogger(__name__)

Handle = Callable[[Caller, str], Awaitable[Doc]]

_COMMAND_NAME = re.compile(r"[-_a-z0-9]{1,32}")
_BUTTON_ID = re.compile(r"cmd:(?P<index>\d{1,2}):(?P<key>.+)")
_MAX_DESCRIPTION = 100  # slash command and option descriptions
_MAX_SLASH_COMMANDS = 100
_CHANNEL_PREFIX = "channel:"
_MAX_CONTENT = 2000  # characters of a message's content
_INVALID_FORM_BODY = 50035
# DMs closed / blocked / no access / the bot lacks permission / unknown channel / unknown user / unknown message
_UNREACHABLE_CODES = {50007, 50001, 50013, 10003, 10013, 10008}


@dataclass(frozen=True, slots=True)
class SlashCommand:
    name: str
    summary: str
    usage: str


class DiscordTransport:
    name = "discord"

    def __init__(
        self,
        token: str,
        *,
        api_base: str | None = None,  # e.g. "http://127.0.0.1:8082/api/v10" (a test fake); None: discord.com
        guild_id: int | None = None,  # publish the slash commands to this guild only (instant); None: global
        commands: Sequence[SlashCommand] = (),
        max_ratelimit_wait: float = 30.0,  # longer 429s become DeliveryError(retry_after); discord.py's minimum
        ready_timeout: float = 30.0,
        guild_ready_timeout: float = 2.0,  # how long READY waits for the guilds' GUILD_CREATE (discord.py's)
        callback_commands: CallbackCommands | None = None,
    ) -> None:
        self._token = token
        self._api_base = api_base.rstrip("/") if api_base else None
        self._guild_id = guild_id
        self._commands = [c for c in commands if _COMMAND_NAME.fullmatch(c.name)][:_MAX_SLASH_COMMANDS]
        self._ready_timeout = ready_timeout
        self._codes = callback_commands or CallbackCommands()
        self._handle: Handle | None = None
        self._client = _Client(self, intents=discord.Intents(guilds=True), max_ratelimit_timeout=max_ratelimit_wait,
                               guild_ready_timeout=guild_ready_timeout)
        self._connection: asyncio.Task[None] | None = None
        self._logged_in = False
        self._saved_endpoints: tuple[str, yarl.URL] | None = None
        self._user_locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self.published: list[dict[str, Any]] = []  # the slash commands as Discord stored them

    # -- lifecycle -----------------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Log in over HTTP (checks the token). Enough for send()."""
        if self._logged_in:
            return
        self._point_at_api()
        try:
            await self._client.login(self._token)
        except discord.LoginFailure as exc:
            await self._close_client()
            raise DeliveryError("discord: the token was rejected (check DISCORD_TOKEN)", permanent=True) from exc
        except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._close_client()
            raise self._error(exc) from exc
        self._logged_in = True

    async def start(self, handle: Handle) -> None:
        """Serve the slash commands and buttons through `handle`; returns once the gateway session is READY."""
        self._handle = handle
        await self.initialize()
        try:
            await self._publish_commands()
            if self._api_base is not None:  # the gateway the API names (a local one in tests)
                _, url, _ = await self._client.http.get_bot_gateway()
                DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        except (discord.HTTPException, discord.GatewayNotFound, aiohttp.ClientError, OSError) as exc:
            await self.stop()
            raise self._error(exc) from exc
        self._connection = asyncio.create_task(self._client.connect(reconnect=True), name="discord-gateway")
        self._connection.add_done_callback(_log_gateway_end)
        ready = asyncio.create_task(self._client.wait_until_ready())
        done, _ = await asyncio.wait({ready, self._connection}, timeout=self._ready_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            failure = self._connection.exception() if self._connection in done else None
            await self.stop()
            if isinstance(failure, discord.PrivilegedIntentsRequired):
                raise DeliveryError("discord: the gateway asked for a privileged intent", permanent=True)
            raise DeliveryError(f"discord: the gateway did not become ready ({failure or 'timed out'})")
        log.info("discord: serving as %s", self._client.user)

    def connection(self) -> tuple[bool, str]:
        """(connected, detail) for health checks: the gateway session is open and READY."""
        if self._client.is_closed():
            return False, "closed"
        if not self._client.is_ready() or self._client.ws is None:
            return False, "gateway not ready (reconnecting)"
        return True, f"gateway ready, latency {self._client.latency * 1000:.0f} ms"

    async def stop(self) -> None:
        """Close the gateway and the HTTP session. Safe to call twice or after a failed start."""
        await self._close_client()
        if self._connection is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._connection, timeout=10)
            self._connection = None
        self._restore_endpoints()
        log.info("discord: stopped")

    async def _close_client(self) -> None:
        if not self._client.is_closed():
            with contextlib.suppress(Exception):
                await self._client.close()
        self._logged_in = False

    def _point_at_api(self) -> None:
        """discord.py reads its API base and gateway from class attributes: set them for this process (one
        Discord client per process) and put them back on stop."""
        if self._api_base is None or self._saved_endpoints is not None:
            return
        self._saved_endpoints = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        Route.BASE = self._api_base

    def _restore_endpoints(self) -> None:
        if self._saved_endpoints is not None:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._saved_endpoints
            self._saved_endpoints = None

    async def _publish_commands(self) -> None:
        tree = self._client.tree
        guild = discord.Object(id=self._guild_id) if self._guild_id is not None else None
        for spec in self._commands:
            tree.add_command(_slash_command(spec, self._on_slash, guild is None), guild=guild)
        if not self._commands:
            return
        published = await tree.sync(guild=guild)
        self.published = [dict(c.to_dict()) for c in published]

    # -- delivery ------------------------------------------------------------------------------------
    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None, *, resume: Resume | None = None) -> str:
        """Deliver `doc`; "<channel_id>/<message_id>" of its first message. Raises DeliveryError, which says how
        many of the Doc's messages went out before it; `resume` skips those."""
        if not self._logged_in:
            raise DeliveryError("discord transport is not started")
        progress = Progress.of(resume)
        try:
            channel = await self._channel(chat_id)
            await self._post(channel, doc, _reference(reply_to), progress)
        except DeliveryError as exc:
            raise progress.attach(exc)
        except (discord.DiscordException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise progress.attach(self._error(exc)) from exc
        assert progress.first_ref is not None
        return progress.first_ref

    async def _channel(self, chat_id: str) -> discord.abc.Messageable:
        text = chat_id.strip()
        if text.startswith(_CHANNEL_PREFIX):
            return self._client.get_partial_messageable(_snowflake(text[len(_CHANNEL_PREFIX):], chat_id))
        return await self._client.create_dm(discord.Object(id=_snowflake(text, chat_id)))

    async def _post(self, target: discord.abc.Messageable | discord.Webhook, doc: Doc,
                    reference: discord.MessageReference | None, progress: Progress | None = None) -> discord.Message:
        """Each rendered message in turn: the image with the embed that shows it, the buttons under the last,
        the reply reference on the first. Returns the first message sent now (`progress` counts every part and
        skips those an earlier attempt sent). If Discord refuses the first message's embeds (400 / 50035
        "Invalid Form Body": a rendering bug of ours), the Doc goes as plain text instead."""
        progress = progress or Progress()
        parts = _render(doc)
        progress.begin(doc.image is not None, len(parts))
        if progress.skip:
            reference = None  # the reply reference went on the first part, sent before
        first: discord.Message | None = None
        for i, part in enumerate(parts):
            if not progress.pending(i):
                continue
            kwargs: dict[str, Any] = {"embeds": [discord.Embed.from_dict(e) for e in part.embeds]}
            if part.carries_image and doc.image is not None:
                kwargs["file"] = discord.File(io.BytesIO(doc.image.data), filename=attachment_name(doc.image))
            if i == len(parts) - 1 and doc.buttons:
                kwargs["view"] = self._view(doc)
            try:
                message = await self._send_one(target, kwargs, reference if first is None else None)
            except discord.HTTPException as exc:
                if first is not None or progress.skip or exc.status != 400 or exc.code != _INVALID_FORM_BODY:
                    raise
                log.error("discord refused our embeds (%s); sending plain text", exc.text[:300])
                plain = await self._post_plain(target, doc, reference)
                progress.done(f"{plain.channel.id}/{plain.id}")
                return plain
            progress.done(f"{message.channel.id}/{message.id}")
            first = first or message
        assert first is not None, "render_embeds never returns an empty list"
        return first

    async def _post_plain(self, target: discord.abc.Messageable | discord.Webhook, doc: Doc,
                          reference: discord.MessageReference | None) -> discord.Message:
        text = discord.utils.escape_mentions(render_text(doc))
        chunks = [text[i:i + _MAX_CONTENT] for i in range(0, len(text), _MAX_CONTENT)] or ["…"]
        first: discord.Message | None = None
        for i, chunk in enumerate(chunks):
            kwargs: dict[str, Any] = {"content": chunk}
            if i == len(chunks) - 1 and doc.buttons:
                kwargs["view"] = self._view(doc)
            message = await self._send_one(target, kwargs, reference if first is None else None)
            first = first or message
        assert first is not None
        return first

    async def _send_one(self, target: discord.abc.Messageable | discord.Webhook, kwargs: dict[str, Any],
                        reference: discord.MessageReference | None) -> discord.Message:
        if isinstance(target, discord.Webhook):
            sent: discord.Message = await target.send(wait=True, **kwargs)
            return sent
        if reference is not None:
            kwargs = {**kwargs, "reference": reference, "mention_author": False}
        return await target.send(**kwargs)

    def _view(self, doc: Doc) -> discord.ui.View:
        view = discord.ui.View(timeout=None)
        index = 0
        for row, buttons in enumerate(button_rows(doc.buttons)):
            for b in buttons:
                view.add_item(discord.ui.Button(label=b.label, style=discord.ButtonStyle.secondary, row=row,
                                                custom_id=f"cmd:{index}:{self._codes.encode(b.command)}"))
                index += 1
        # A finished view is not stored per message by discord.py: presses are routed by CommandButton
        # (a DynamicItem matching every "cmd:" custom_id), also after a restart.
        view.stop()
        return view

    # -- serving -------------------------------------------------------------------------------------
    async def _on_slash(self, interaction: discord.Interaction[Any], args: str | None) -> None:
        name = interaction.command.name if interaction.command is not None else ""
        await self._serve(interaction, f"/{name} {args or ''}".strip())

    async def on_button(self, interaction: discord.Interaction[Any], key: str) -> None:
        command = self._codes.decode(key)
        if command is None:
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.send_message("This button has expired; send the command again.",
                                                        ephemeral=True)
            return
        await self._serve(interaction, command)

    async def _serve(self, interaction: discord.Interaction[Any], text: str) -> None:
        if self._handle is None:
            return
        user = interaction.user
        try:
            await interaction.response.defer(thinking=True)  # within Discord's 3 s; the answer follows
        except discord.HTTPException as exc:  # e.g. 10062 unknown interaction: it expired before we saw it
            log.warning("discord: could not acknowledge an interaction of %s: %s", user.id, exc)
            return
        async with self._user_lock(user.id):  # one user's commands run in the order they were sent
            caller = Caller("discord", str(user.id), str(user.id), user.display_name)
            doc = await self._handle(caller, text)
            try:
                await self._post(interaction.followup, doc, None)
            except (discord.DiscordException, aiohttp.ClientError, OSError, TimeoutError) as exc:
                err = self._error(exc)
                log.warning("discord: answer to %s failed (%s, permanent=%s)", user.id, err, err.permanent)

    @contextlib.asynccontextmanager
    async def _user_lock(self, user_id: int) -> Any:
        lock, users = self._user_locks.get(user_id, (asyncio.Lock(), 0))
        self._user_locks[user_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._user_locks[user_id]
            if users <= 1:
                del self._user_locks[user_id]
            else:
                self._user_locks[user_id] = (lock, users - 1)

    def _error(self, exc: BaseException) -> DeliveryError:
        error = _delivery_error(exc)
        if self._token and self._token in str(error):
            return DeliveryError(str(error).replace(self._token, "<token>"), permanent=error.permanent,
                                 retry_after=error.retry_after)
        return error

    @property
    def client(self) -> discord.Client:
        return self._client


class _Client(discord.Client):
    def __init__(self, transport: DiscordTransport, **kwargs: Any) -> None:
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice here: no warning about it
        super().__init__(**kwargs)
        self.transport = transport
        self.tree: app_commands.CommandTree[_Client] = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(CommandButton)


class CommandButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=_BUTTON_ID):
    """A button that runs the command it carries: `cmd:<index>:<command>` (or a key for a long command)."""

    def __init__(self, index: int, key: str, label: str = "…") -> None:
        super().__init__(discord.ui.Button(label=label, custom_id=f"cmd:{index}:{key}"))
        self.key = key

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> CommandButton:
        label = getattr(item, "label", None) or "…"
        return cls(int(match["index"]), match["key"], label)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, _Client):
            await client.transport.on_button(interaction, self.key)


# -- helpers ------------------------------------------------------------------------------------------
def _log_gateway_end(task: asyncio.Task[None]) -> None:
    """discord.py reconnects by itself; the connection ends for good only on close or an unrecoverable error."""
    if not task.cancelled() and task.exception() is not None:
        log.error("discord: the gateway connection ended: %s (slash commands are not served until a restart)",
                  task.exception())


def _slash_command(spec: SlashCommand, run: Callable[[discord.Interaction[Any], str | None], Awaitable[None]],
                   global_scope: bool) -> app_commands.Command[Any, Any, None]:
    async def callback(interaction: discord.Interaction[Any], args: str | None = None) -> None:
        await run(interaction, args)

    callback.__name__ = f"slash_{spec.name.replace('-', '_')}"
    described = app_commands.describe(args=_short(spec.usage or f"/{spec.name}"))(callback)
    return app_commands.Command(
        name=spec.name, description=_short(spec.summary or spec.name), callback=described,
        allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True) if global_scope else None)


def _short(text: str, limit: int = _MAX_DESCRIPTION) -> str:
    text = " ".join(text.split()) or "…"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _snowflake(text: str, chat_id: str) -> int:
    if not text.isdigit():
        raise DeliveryError(f"discord: {chat_id!r} is not a user id or channel:<id>", permanent=True)
    return int(text)


def _reference(reply_to: str | None) -> discord.MessageReference | None:
    if reply_to is None:
        return None
    channel, _, message = reply_to.partition("/")
    if not (channel.isdigit() and message.isdigit()):
        log.warning("discord: cannot reply to %r (not <channel_id>/<message_id>); sending without reply", reply_to)
        return None
    return discord.MessageReference(message_id=int(message), channel_id=int(channel), fail_if_not_exists=False)


@functools.lru_cache(maxsize=256)
def _render_cached(doc: Doc) -> tuple[DiscordMessage, ...]:
    return tuple(render_embeds(doc))


def _render(doc: Doc) -> tuple[DiscordMessage, ...]:
    """A fan-out renders the same Doc for many recipients: render it once."""
    try:
        return _render_cached(doc)
    except TypeError:  # a Doc holding something unhashable
        return tuple(render_embeds(doc))


def _delivery_error(exc: BaseException) -> DeliveryError:
    """Discord's error -> ours (see the module docstring)."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, discord.RateLimited):
        return DeliveryError(f"discord: rate limited, retry in {exc.retry_after:.1f} s", retry_after=exc.retry_after)
    if isinstance(exc, discord.HTTPException):
        text = f"discord: {exc.status} {exc.text or exc.response.reason} (code {exc.code})"
        if exc.status == 429:  # discord.py's retries ran out
            return DeliveryError(text, retry_after=_retry_after(exc))
        if isinstance(exc, (discord.Forbidden, discord.NotFound)) or exc.code in _UNREACHABLE_CODES:
            return DeliveryError(text, permanent=True)
        return DeliveryError(text)
    if isinstance(exc, TimeoutError):
        return DeliveryError("discord: timed out (the message may have been delivered)")
    return DeliveryError(f"discord: {type(exc).__name__}: {exc}")


def _retry_after(exc: discord.HTTPException) -> float | None:
    value = exc.response.headers.get("Retry-After") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None




async def start_discord(settings: Settings, services: Services, handle: Handle) -> DiscordTransport | None:
    """Discord beside the console when DISCORD_TOKEN is set. If it cannot start (token rejected, gateway
    unreachable) the service runs without it and nothing is queued for its users."""
    if settings.discord_token is None:
        return None
    transport = DiscordTransport(
        settings.discord_token.get_secret_value(), api_base=settings.discord_api_base,
        guild_id=settings.discord_guild_id,
        commands=[SlashCommand(c.name, c.summary, c.usage) for c in services.registry.visible(False)])
    try:
        await transport.start(handle)
    except DeliveryError as exc:
        log.error("discord did not start, running without it: %s", exc)
        await transport.stop()
        return None
    return transport


__all__ = ["CommandButton", "DiscordTransport", "SlashCommand", "start_discord"]
