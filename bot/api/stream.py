"""The live stream: WebSocket `/api/v1/stream` for API keys (the same keys, tier check and entitlements as the REST
routes), pushing every signal issued and every exit as it is recorded.

It is fed by the track record's hash chain (storage.chain), not by per-connection outbox rows: the chain is the
ordered, append-only log of exactly those events, written in the transaction that stores each, by whichever
process leads; any process serving a connection reads it from the database. Each event carries the chain's
`seq`; a client that reconnects with `?after_seq=N` (the last one it saw) gets every event after it, in order,
once, then the live ones (no gap, no repeat within a session). Without `after_seq` the stream starts at the head.

    -> {"type": "hello", "after_seq": N, "head_seq": H}
    -> {"type": "signal.issued" | "signal.exit", "seq": ..., "signal_id": ..., "hash": ..., "data": {...}}
    -> {"type": "ping"} every PING_SECONDS without events
    close 4401 (no or bad key), 4403 (the tier has no API), 4429 (over the key's rate), 1011 (the server failed)
"""
import asyncio
import json
import logging
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect

from bot.api.access import Principal, entitled
from core.domain import AssetClass, Timeframe

if TYPE_CHECKING:
    from bot.api.routes import Api

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
PING_SECONDS = 20.0
BATCH = 500


class Stream:
    def __init__(self, api: "Api") -> None:
        self.api = api
        self.router = APIRouter()
        self.connections = 0
        self.router.add_api_websocket_route("/api/v1/stream", self.serve)

    async def serve(self, websocket: WebSocket) -> None:
        key = (websocket.headers.get("Authorization", "")[7:].strip()
               if websocket.headers.get("Authorization", "")[:7].lower() == "bearer " else
               websocket.headers.get("X-API-Key") or websocket.query_params.get("key"))
        await websocket.accept()  # first: a refusal is then a close code and a reason the client can read
        if not key:
            await websocket.close(code=4401, reason="an API key is required")
            return
        try:
            principal = await self.api.authorize(key)
        except HTTPException as exc:
            await websocket.close(code=4000 + exc.status_code, reason=str(exc.detail)[:120])
            return
        chain = self.api.services.store.chain
        head = await chain.head_seq()
        raw = websocket.query_params.get("after_seq")
        after = min(int(raw), 2**62) if raw is not None and raw.isdigit() and len(raw) < 30 else head
        self.connections += 1
        kinds: dict[str, tuple[str, str]] = {}  # signal id -> (asset class, timeframe), for exits' entitlement
        gone = asyncio.Event()

        async def read() -> None:  # what the client sends is ignored; its close (or the server's shutdown) ends us
            try:
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass
            finally:
                gone.set()

        reader = asyncio.create_task(read())
        try:
            await websocket.send_json({"type": "hello", "after_seq": after, "head_seq": head})
            idle = 0.0
            while not gone.is_set():
                entries = await chain.entries_after(after, BATCH)
                for e in entries:
                    data = json.loads(e.payload)
                    if e.kind == "issue":
                        kinds[e.signal_id] = (data["asset_class"], data["timeframe"])
                    elif e.signal_id not in kinds:
                        s = await self.api.services.store.signals.get_signal(e.signal_id)
                        if s is not None:
                            kinds[e.signal_id] = (s.asset_class.value, s.timeframe.value)
                    after = e.seq
                    if not self._entitled(principal, kinds.get(e.signal_id)):
                        continue
                    await websocket.send_json({"type": "signal.issued" if e.kind == "issue" else "signal.exit",
                                               "seq": e.seq, "signal_id": e.signal_id, "hash": e.hash, "data": data})
                if entries:
                    idle = 0.0
                    continue
                try:
                    await asyncio.wait_for(gone.wait(), POLL_SECONDS)
                except TimeoutError:
                    idle += POLL_SECONDS
                if idle >= PING_SECONDS:
                    await websocket.send_json({"type": "ping"})
                    idle = 0.0
        except (WebSocketDisconnect, RuntimeError):  # the client went away mid-send
            pass
        except Exception:
            log.exception("api: the stream of key %s failed", principal.key.id)
            await websocket.close(code=1011)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self.connections -= 1

    def _entitled(self, principal: Principal, kind: tuple[str, str] | None) -> bool:
        return kind is not None and entitled(principal, AssetClass(kind[0]), Timeframe(kind[1]))
