"""A local Discord (HTTP API v10 and gateway) on 127.0.0.1, for discord.py pointed at it.

HTTP (under /api/v10): GET /users/@me, GET /oauth2/applications/@me, GET /gateway/bot (names this fake's
gateway), PUT /applications/{app}/commands and /applications/{app}/guilds/{guild}/commands (slash commands),
POST /interactions/{id}/{token}/callback (with_response), POST /webhooks/{app}/{token} (followups),
POST /users/@me/channels (DM channels), POST /channels/{id}/messages (JSON or multipart with payload_json and
files[n]). Messages are checked against Discord's limits (embeds, components, attachments) and refused with
400 / 50035 "Invalid Form Body" as Discord does; attachment:// images are resolved to the uploaded file.

Gateway (ws://.../gateway, zlib-stream when asked): HELLO (op 10) -> IDENTIFY (op 2; a wrong token closes
with 4004, a privileged intent the app was not granted with 4014) -> READY; HEARTBEAT (op 1) is answered
with HEARTBEAT_ACK (op 11). `slash()` and `press()` dispatch INTERACTION_CREATE as a user would.

Faults: `fail(status, ...)` answers the next matching request(s) with that status (429 with retry_after and
Discord's headers, 403 with a JSON error code, 5xx); `block(user_id)` makes DMs to that user fail with 403 /
50007 "Cannot send messages to this user".
"""
from __future__ import annotations

import asyncio
import itertools
import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import WSMsgType, web

DEFAULT_TOKEN = "MTAw.fake.discord-token"
APP_ID = 1_200_000_000_000_000_001
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # members, presences, message content
EMBED_LIMITS = {"title": 256, "description": 4096, "fields": 25, "field_name": 256, "field_value": 1024,
                "footer": 2048, "author": 256, "total": 6000, "embeds": 10}
EPOCH_MS = 1420070400000


@dataclass
class SentMessage:
    """A message the bot created, as Discord stored it."""

    id: int
    channel_id: int
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    files: dict[str, bytes]  # filename -> bytes
    reference: dict[str, Any] | None
    via: str  # "channel" | "followup" | "callback"
    raw: dict[str, Any]  # the message object returned to the client

    @property
    def buttons(self) -> list[tuple[str, str]]:
        return [(c.get("label", ""), c.get("custom_id", ""))
                for row in self.components for c in row.get("components", [])]

    @property
    def title(self) -> str:
        return str(self.embeds[0].get("title", "")) if self.embeds else ""

    def text(self) -> str:
        """Every visible text of the embeds, in order."""
        out: list[str] = []
        for e in self.embeds:
            out.extend(str(e.get(k, "")) for k in ("title", "description"))
            for f in e.get("fields", []):
                out.extend((f["name"], f["value"]))
            out.append(e.get("footer", {}).get("text", ""))
        return "\n".join(t for t in out if t)


@dataclass
class Fault:
    status: int
    retry_after: float | None
    code: int
    message: str
    path: str | None
    method: str | None
    times: int | None
    is_global: bool = False


@dataclass
class Interaction:
    id: int
    token: str
    payload: dict[str, Any]
    responses: list[dict[str, Any]] = field(default_factory=list)


class FakeDiscord:
    def __init__(self, token: str = DEFAULT_TOKEN, *, granted_intents: int = 0) -> None:
        self.token = token
        self.granted_intents = granted_intents  # privileged intents enabled for the app in the portal
        self._ids = itertools.count(int((time.time() * 1000 - EPOCH_MS)) << 22)
        self.bot_user = {"id": str(APP_ID), "username": "signalbot", "discriminator": "0", "global_name": None,
                         "avatar": None, "bot": True, "flags": 0}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every HTTP request
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> published commands
        self.messages: list[SentMessage] = []
        self.interactions: dict[int, Interaction] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.blocked: set[int] = set()
        self.faults: list[Fault] = []
        self.identify: dict[str, Any] | None = None
        self.heartbeats = 0
        self.ready = asyncio.Event()
        self._sockets: list[_GatewaySocket] = []
        self._message_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- server lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=32 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        api = "/api/v10"
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_get(f"{api}/oauth2/applications/@me", self._application)
        app.router.add_get(f"{api}/gateway/bot", self._gateway_bot)
        app.router.add_put(f"{api}/applications/{{app}}/commands", self._put_commands)
        app.router.add_put(f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self._put_commands)
        app.router.add_post(f"{api}/interactions/{{id}}/{{token}}/callback", self._callback)
        app.router.add_post(f"{api}/webhooks/{{app}}/{{token}}", self._followup)
        app.router.add_post(f"{api}/users/@me/channels", self._create_dm)
        app.router.add_post(f"{api}/channels/{{channel}}/messages", self._channel_message)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            await ws.close(1001)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- test controls ------------------------------------------------------------------------------
    def fail(self, status: int, *, retry_after: float | None = None, code: int = 0, message: str | None = None,
             path: str | None = None, method: str | None = None, times: int | None = 1,
             is_global: bool = False) -> None:
        """Answer the next `times` requests whose path contains `path` (and method is `method`) with `status`."""
        default = {429: "You are being rate limited.", 403: "Missing Access", 404: "Unknown Channel",
                   500: "500: Internal Server Error", 502: "502: Bad Gateway"}
        self.faults.append(Fault(status, retry_after if status == 429 else None, code,
                                 message or default.get(status, f"{status}: error"), path, method, times, is_global))

    def block(self, user_id: int) -> None:
        self.blocked.add(user_id)

    def slash(self, name: str, args: str | None = None, *, user_id: int = 4242, username: str = "alice",
              global_name: str | None = None, guild_id: int | None = None) -> Interaction:
        """A user runs /name [args]: INTERACTION_CREATE (type 2) on the gateway."""
        scope = str(guild_id) if guild_id is not None else "global"
        command = next((c for c in [*self.commands.get(scope, []), *self.commands.get("global", [])]
                        if c["name"] == name), None)
        data: dict[str, Any] = {"id": command["id"] if command else str(self._id()), "name": name, "type": 1}
        if command is not None and "guild_id" in command:
            data["guild_id"] = command["guild_id"]  # Discord names the guild of a guild-registered command
        if args is not None:
            data["options"] = [{"name": "args", "type": 3, "value": args}]
        return self._interact(2, data, user_id, username, global_name, guild_id)

    def press(self, message: SentMessage, label: str, *, user_id: int = 4242, username: str = "alice",
              global_name: str | None = None) -> Interaction:
        """A user presses the button `label` under `message`: INTERACTION_CREATE (type 3)."""
        custom_id = next(cid for lab, cid in message.buttons if lab == label)
        data = {"custom_id": custom_id, "component_type": 2}
        return self._interact(3, data, user_id, username, global_name, None, message=message.raw)

    async def wait_for_messages(self, n: int, *, channel_id: int | None = None,
                                timeout: float = 10.0) -> list[SentMessage]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = self.messages_in(channel_id) if channel_id is not None else list(self.messages)
            if len(found) >= n:
                return found
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"{len(found)} of {n} messages after {timeout} s: {[m.title for m in found]}")
            self._message_event.clear()
            try:
                await asyncio.wait_for(self._message_event.wait(), remaining)
            except TimeoutError:
                pass

    def messages_in(self, channel_id: int) -> list[SentMessage]:
        return [m for m in self.messages if m.channel_id == channel_id]

    def dm_of(self, user_id: int) -> int:
        return self.dm_channels[user_id]

    def calls(self, method: str, path_part: str) -> int:
        return sum(1 for m, p in self.requests if m == method and path_part in p)

    # -- HTTP ---------------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/gateway":
            return await handler(request)
        self.requests.append((request.method, request.path))
        token_in_url = "/interactions/" in request.path or "/webhooks/" in request.path
        if not token_in_url and request.headers.get("Authorization") != f"Bot {self.token}":
            return _error(401, 0, "401: Unauthorized")
        fault = self._take_fault(request)
        if fault is not None:
            return _fault_response(fault)
        return await handler(request)

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.path is not None and fault.path not in request.path:
                continue
            if fault.method is not None and fault.method.upper() != request.method:
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot_user)

    async def _application(self, request: web.Request) -> web.Response:
        return _json({
            "id": str(APP_ID), "name": "signalbot", "icon": None, "description": "", "rpc_origins": [],
            "bot_public": True, "bot_require_code_grant": False, "owner": {**self.bot_user, "id": "1", "bot": False},
            "summary": "", "verify_key": "00" * 32, "flags": self.granted_intents_flags(), "team": None,
            "interactions_endpoint_url": None, "bot": self.bot_user})

    def granted_intents_flags(self) -> int:
        flags = 0
        if self.granted_intents & (1 << 15):
            flags |= 1 << 19  # GATEWAY_MESSAGE_CONTENT_LIMITED
        return flags

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": {
            "total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}})

    async def _put_commands(self, request: web.Request) -> web.Response:
        scope = request.match_info.get("guild", "global")
        if request.match_info["app"] != str(APP_ID):
            return _error(403, 50001, "Missing Access")
        body = await request.json()
        problems = [p for c in body for p in _command_problems(c)]
        if problems:
            return _invalid_form(problems)
        stored = []
        for c in body:
            stored.append({**c, "id": str(self._id()), "application_id": str(APP_ID), "version": str(self._id()),
                           "type": c.get("type", 1), "default_member_permissions": None, "nsfw": False,
                           **({"guild_id": scope} if scope != "global" else {})})
        self.commands[scope] = stored
        return _json(stored)

    async def _callback(self, request: web.Request) -> web.Response:
        interaction = self.interactions.get(int(request.match_info["id"]))
        if interaction is None or interaction.token != request.match_info["token"]:
            return _error(404, 10062, "Unknown interaction")
        if interaction.responses:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        payload, files = await _read_payload(request)
        interaction.responses.append(payload)
        kind = payload.get("type")
        result: dict[str, Any] = {"interaction": {
            "id": str(interaction.id), "type": interaction.payload["type"],
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool((payload.get("data") or {}).get("flags", 0) & 64)},
            "resource": {"type": kind}}
        if kind == 4:
            problems = _message_problems(payload.get("data") or {}, files)
            if problems:
                return _invalid_form(problems)
            message = self._store(int(interaction.payload["channel_id"]), payload["data"], files, "callback")
            result["interaction"]["response_message_id"] = str(message.id)
            result["resource"]["message"] = message.raw
        return _json(result)

    async def _followup(self, request: web.Request) -> web.Response:
        interaction = next((i for i in self.interactions.values() if i.token == request.match_info["token"]), None)
        if request.match_info["app"] != str(APP_ID) or interaction is None:
            return _error(404, 10015, "Unknown Webhook")
        if not interaction.responses:
            return _error(400, 40060, "The interaction has not been acknowledged.")  # a followup needs a response
        payload, files = await _read_payload(request)
        problems = _message_problems(payload, files)
        if problems:
            return _invalid_form(problems)
        message = self._store(int(interaction.payload["channel_id"]), payload, files, "followup", webhook=True)
        if request.query.get("wait", "false").lower() not in ("true", "1"):
            return web.Response(status=204)
        return _json(message.raw)

    async def _create_dm(self, request: web.Request) -> web.Response:
        body = await request.json()
        user_id = int(body["recipient_id"])
        channel_id = self.dm_channels.setdefault(user_id, self._id())
        return _json({"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0,
                                  "recipients": [_user(user_id, f"user{user_id}")]})

    async def _channel_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        recipient = next((u for u, c in self.dm_channels.items() if c == channel_id), None)
        if recipient is not None and recipient in self.blocked:
            return _error(403, 50007, "Cannot send messages to this user")
        payload, files = await _read_payload(request)
        problems = _message_problems(payload, files)
        if problems:
            return _invalid_form(problems)
        return _json(self._store(channel_id, payload, files, "channel").raw)

    def _store(self, channel_id: int, payload: dict[str, Any], files: dict[str, bytes], via: str, *,
               webhook: bool = False) -> SentMessage:
        message_id = self._id()
        attachments, urls = [], {}
        for i, (name, data) in enumerate(files.items()):
            url = f"http://127.0.0.1:{self.port}/attachments/{channel_id}/{message_id}/{name}"
            urls[name] = url
            width, height = _png_size(data)
            attachments.append({"id": str(self._id()), "filename": name, "size": len(data), "url": url,
                                "proxy_url": url, "content_type": "image/png" if width else "application/octet-stream",
                                **({"width": width, "height": height} if width else {})})
        embeds = []
        for e in payload.get("embeds") or []:
            shown = dict(e)
            image = e.get("image", {}).get("url", "")
            if image.startswith("attachment://"):
                name = image[len("attachment://"):]
                width, height = _png_size(files[name])
                shown["image"] = {"url": urls[name], "proxy_url": urls[name], "width": width, "height": height}
            embeds.append(shown)
        reference = payload.get("message_reference")
        raw: dict[str, Any] = {"id": str(message_id), "channel_id": str(channel_id), "type": 19 if reference else 0,
               "content": payload.get("content") or "", "author": self.bot_user,
               "timestamp": datetime.now(timezone.utc).isoformat(), "edited_timestamp": None, "tts": False,
               "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": attachments,
               "embeds": embeds, "pinned": False, "flags": payload.get("flags", 0) or 0,
               "components": payload.get("components") or []}
        if reference:
            raw["message_reference"] = {"type": 0, "message_id": str(reference["message_id"]),
                                        "channel_id": str(reference.get("channel_id", channel_id))}
        if webhook:
            raw["webhook_id"] = str(APP_ID)
            raw["application_id"] = str(APP_ID)
        message = SentMessage(message_id, channel_id, embeds, raw["components"], files, raw.get("message_reference"),
                              via, raw)
        self.messages.append(message)
        self._message_event.set()
        return message

    # -- gateway ------------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        socket = _GatewaySocket(ws, compress=request.query.get("compress") == "zlib-stream")
        self._sockets.append(socket)
        try:
            await socket.send({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                if op == 1:
                    self.heartbeats += 1
                    await socket.send({"op": 11})
                elif op == 2:
                    await self._on_identify(socket, frame["d"])
                elif op == 6:  # RESUME: this fake keeps no sessions
                    await socket.send({"op": 9, "d": False})
        finally:
            self._sockets.remove(socket)
        return ws

    async def _on_identify(self, socket: _GatewaySocket, data: dict[str, Any]) -> None:
        self.identify = data
        if data.get("token") != self.token:
            await socket.close(4004, "Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.granted_intents:
            await socket.close(4014, "Disallowed intent(s).")
            return
        ready = {"v": 10, "user": self.bot_user, "guilds": [], "session_id": f"session-{self._id()}",
                 "resume_gateway_url": self.gateway_url, "application": {"id": str(APP_ID), "flags": 0},
                 "private_channels": [], "relationships": [], "presences": [], "geo_ordered_rtc_regions": []}
        if "shard" in data:
            ready["shard"] = data["shard"]
        await socket.dispatch("READY", ready)
        self.ready.set()

    def _interact(self, kind: int, data: dict[str, Any], user_id: int, username: str, global_name: str | None,
                  guild_id: int | None, message: dict[str, Any] | None = None) -> Interaction:
        if not self._sockets:
            raise RuntimeError("no gateway connection")
        user = _user(user_id, username, global_name)
        interaction_id = self._id()
        payload: dict[str, Any] = {
            "id": str(interaction_id), "application_id": str(APP_ID), "type": kind, "data": data,
            "token": f"itok-{interaction_id}", "version": 1, "locale": "en-US", "app_permissions": "2248473465835073",
            "entitlements": [], "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild_id is not None:
            channel_id = message["channel_id"] if message else str(guild_id + 1)
            payload.update(guild_id=str(guild_id), context=0, guild_locale="en-US",
                           member={"user": user, "roles": [], "joined_at": datetime.now(timezone.utc).isoformat(),
                                   "deaf": False, "mute": False, "permissions": "0", "flags": 0},
                           channel={"id": channel_id, "type": 0, "guild_id": str(guild_id), "name": "general",
                                    "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None},
                           authorizing_integration_owners={"0": str(guild_id)})
        else:
            channel_id = message["channel_id"] if message else str(self.dm_channels.setdefault(user_id, self._id()))
            payload.update(user=user, context=1, channel={"id": channel_id, "type": 1, "recipients": [user]},
                           authorizing_integration_owners={"0": "0"})
        payload["channel_id"] = channel_id
        if message is not None:
            payload["message"] = message
        interaction = Interaction(interaction_id, payload["token"], payload)
        self.interactions[interaction_id] = interaction
        socket = self._sockets[-1]
        asyncio.get_running_loop().create_task(socket.dispatch("INTERACTION_CREATE", payload))
        return interaction

    def _id(self) -> int:
        return next(self._ids)


class _GatewaySocket:
    def __init__(self, ws: web.WebSocketResponse, compress: bool) -> None:
        self.ws = ws
        self.sequence = 0
        self._zlib = zlib.compressobj() if compress else None
        self._lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        data = json.dumps(frame)
        async with self._lock:
            if self._zlib is None:
                await self.ws.send_str(data)
            else:  # zlib-stream: one deflate stream per connection, each message ends with a sync flush
                await self.ws.send_bytes(self._zlib.compress(data.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.sequence += 1
        await self.send({"op": 0, "t": event, "s": self.sequence, "d": data})

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code=code, message=reason.encode())


# -- validation: Discord's limits -------------------------------------------------------------------
def _message_problems(payload: dict[str, Any], files: dict[str, bytes]) -> list[str]:
    """What Discord would refuse in a message payload (an empty list: it is valid)."""
    problems: list[str] = []
    embeds = payload.get("embeds") or []
    components = payload.get("components") or []
    if not (payload.get("content") or embeds or files or components or payload.get("sticker_ids")):
        problems.append("Cannot send an empty message")
    if len(payload.get("content") or "") > 2000:
        problems.append("content: Must be 2000 or fewer in length.")
    problems.extend(embed_problems(embeds, set(files)))
    problems.extend(_component_problems(components))
    return problems


def embed_problems(embeds: list[dict[str, Any]], filenames: set[str] | None = None) -> list[str]:
    """Discord's embed rules, counted in characters as Discord counts them."""
    problems: list[str] = []
    limit = EMBED_LIMITS
    if len(embeds) > limit["embeds"]:
        problems.append(f"embeds: Must be {limit['embeds']} or fewer in length.")
    total = 0
    for i, e in enumerate(embeds):
        title, description = e.get("title") or "", e.get("description") or ""
        footer = (e.get("footer") or {}).get("text") or ""
        author = (e.get("author") or {}).get("name") or ""
        fields = e.get("fields") or []
        if len(title) > limit["title"]:
            problems.append(f"embeds.{i}.title: Must be {limit['title']} or fewer in length.")
        if len(description) > limit["description"]:
            problems.append(f"embeds.{i}.description: Must be {limit['description']} or fewer in length.")
        if len(footer) > limit["footer"]:
            problems.append(f"embeds.{i}.footer.text: Must be {limit['footer']} or fewer in length.")
        if "footer" in e and not footer.strip():
            problems.append(f"embeds.{i}.footer.text: This field is required")
        if len(fields) > limit["fields"]:
            problems.append(f"embeds.{i}.fields: Must be {limit['fields']} or fewer in length.")
        for j, f in enumerate(fields):
            name, value = f.get("name") or "", f.get("value") or ""
            if not name.strip() or not value.strip():
                problems.append(f"embeds.{i}.fields.{j}: name and value are required")
            if len(name) > limit["field_name"]:
                problems.append(f"embeds.{i}.fields.{j}.name: Must be {limit['field_name']} or fewer in length.")
            if len(value) > limit["field_value"]:
                problems.append(f"embeds.{i}.fields.{j}.value: Must be {limit['field_value']} or fewer in length.")
        image = (e.get("image") or {}).get("url") or ""
        if image.startswith("attachment://") and filenames is not None and image[13:] not in filenames:
            problems.append(f"embeds.{i}.image.url: attachment {image[13:]!r} was not uploaded")
        if not (title or description or fields or footer or author or image):
            problems.append(f"embeds.{i}: an embed needs some content")
        total += len(title) + len(description) + len(footer) + len(author)
        total += sum(len(f.get("name") or "") + len(f.get("value") or "") for f in fields)
    if total > limit["total"]:
        problems.append(f"embeds: Embed size exceeds maximum size of {limit['total']}")
    return problems


def _component_problems(rows: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    if len(rows) > 5:
        problems.append("components: Must be 5 or fewer in length.")
    seen: set[str] = set()
    for i, row in enumerate(rows):
        items = row.get("components") or []
        if row.get("type") != 1 or not 1 <= len(items) <= 5:
            problems.append(f"components.{i}: an action row holds 1 to 5 buttons")
        for j, c in enumerate(items):
            custom_id, label = c.get("custom_id") or "", c.get("label") or ""
            if c.get("type") != 2:
                problems.append(f"components.{i}.components.{j}.type: expected a button")
            if not 1 <= len(custom_id) <= 100:
                problems.append(f"components.{i}.components.{j}.custom_id: Must be between 1 and 100 in length.")
            if len(label) > 80:
                problems.append(f"components.{i}.components.{j}.label: Must be 80 or fewer in length.")
            if custom_id in seen:
                problems.append(f"components.{i}.components.{j}.custom_id: Component custom id cannot be duplicated")
            seen.add(custom_id)
    return problems


def _command_problems(c: dict[str, Any]) -> list[str]:
    problems = []
    name, description = c.get("name", ""), c.get("description", "")
    if not (1 <= len(name) <= 32 and name == name.lower()):
        problems.append(f"name {name!r}: 1-32 lowercase characters")
    if not 1 <= len(description) <= 100:
        problems.append(f"{name}.description: Must be between 1 and 100 in length.")
    for o in c.get("options", []):
        if not 1 <= len(o.get("description", "")) <= 100:
            problems.append(f"{name}.options.{o.get('name')}.description: Must be between 1 and 100 in length.")
    return problems


# -- helpers ----------------------------------------------------------------------------------------
async def _read_payload(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        payload = json.loads(str(form.get("payload_json") or "{}"))
        files: dict[str, bytes] = {}
        for key, value in form.items():
            if key.startswith("files[") and isinstance(value, web.FileField):
                files[value.filename] = value.file.read()
        return payload, files
    text = await request.text()
    return (json.loads(text) if text else {}), {}


def _user(user_id: int, username: str, global_name: str | None = None) -> dict[str, Any]:
    return {"id": str(user_id), "username": username, "discriminator": "0", "global_name": global_name,
            "avatar": None, "public_flags": 0}


def _png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return 0, 0
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON as Discord sends it: Content-Type exactly application/json (discord.py compares it verbatim)."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={**(headers or {}), "Content-Type": "application/json"})


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status=status)


def _invalid_form(problems: list[str]) -> web.Response:
    return _json({"message": "Invalid Form Body", "code": 50035, "errors": problems}, status=400)


def _fault_response(fault: Fault) -> web.Response:
    if fault.status == 429:
        retry = fault.retry_after if fault.retry_after is not None else 1.0
        headers = {"Retry-After": str(max(1, round(retry))), "X-RateLimit-Limit": "5",
                   "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": f"{retry:.3f}",
                   "X-RateLimit-Bucket": "fake-bucket", "X-RateLimit-Scope": "global" if fault.is_global else "user",
                   "Via": "1.1 google"}  # discord.py treats a 429 without Via as a Cloudflare ban
        if fault.is_global:
            headers["X-RateLimit-Global"] = "true"
        return _json({"message": fault.message, "retry_after": retry, "global": fault.is_global,
                                  "code": fault.code}, status=429, headers=headers)
    return _error(fault.status, fault.code, fault.message)


__all__ = ["APP_ID", "DEFAULT_TOKEN", "FakeDiscord", "SentMessage", "embed_problems"]
