"""The public track record, without a key or a login: every signal ever issued, losers included, with its outcome,
as the hash chain holds it (storage.chain), so anyone can check that nothing was edited or removed afterwards.

    GET /track-record                     the page: summary, every signal and how it ended, the chain's state
    GET /api/v1/public/record             the chain itself, entry by entry (after_seq, limit): download and verify
    GET /api/v1/signals/{signal_id}/proof one signal's entries, its neighbours and the whole chain's check

Limited per client address (PUBLIC_PER_MINUTE, 429 with Retry-After); the whole-chain check is cached for a few
seconds (it reads every signal).
"""
import html
import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse

from bot.api.access import RateLimiter, too_many
from bot.api.routes import TtlCache
from bot.api.schemas import Error
from bot.commands.verify import signal_proof

if TYPE_CHECKING:
    from bot.services import Services

PUBLIC_PER_MINUTE = 120
MAX_SEQ = 2**62  # a database integer holds it (a larger one was a 500, found by schemathesis)
CHECK_SECONDS = 5.0


class PublicRecord:
    def __init__(self, services: "Services") -> None:
        self.services = services
        self.limiter = RateLimiter()
        self.checks = TtlCache(CHECK_SECONDS)
        self.router = APIRouter(responses={429: {"model": Error}})
        self._routes()

    def _limit(self, request: Request) -> None:
        client = request.client.host if request.client is not None else "?"
        wait = self.limiter.check(hash(client), PUBLIC_PER_MINUTE)
        if wait > 0:
            raise too_many(wait, PUBLIC_PER_MINUTE)

    def _routes(self) -> None:
        r, store = self.router, self.services.store

        @r.get("/api/v1/signals/{signal_id}/proof", summary="Proof that a signal and its outcome are as recorded",
               tags=["public"], responses={404: {"model": Error}})
        async def proof(request: Request, signal_id: Annotated[str, Path(max_length=80)]) -> dict[str, Any]:
            self._limit(request)
            found = await signal_proof(store, signal_id, await self.checks.get("chain", store.chain.verify))
            if found is None:
                raise HTTPException(404, f"no issued signal {signal_id} in the track record")
            return found.as_json()

        @r.get("/api/v1/public/record", summary="The track record's hash chain, entry by entry", tags=["public"])
        async def record(request: Request, after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                         limit: Annotated[int, Query(ge=1, le=5000)] = 1000) -> dict[str, Any]:
            self._limit(request)
            entries = await store.chain.entries_after(after_seq, limit)
            return {"entries": [{"seq": e.seq, "kind": e.kind, "signal_id": e.signal_id, "at": e.at.isoformat(),
                                 "prev_hash": e.prev_hash, "hash": e.hash, "payload": e.payload} for e in entries],
                    "next_after_seq": entries[-1].seq if entries else None}

        @r.get("/track-record", response_class=HTMLResponse, include_in_schema=False)
        async def page(request: Request) -> HTMLResponse:
            self._limit(request)
            check = await self.checks.get("chain", store.chain.verify)
            issued: dict[str, dict[str, Any]] = {}
            closed: dict[str, dict[str, Any]] = {}
            for e in await store.chain.entries():
                (issued if e.kind == "issue" else closed)[e.signal_id] = json.loads(e.payload)
            return HTMLResponse(_page(issued, closed, check))


def _pct(x: float) -> str:
    return f"{x * 100:+.2f} %"


def _page(issued: dict[str, dict[str, Any]], closed: dict[str, dict[str, Any]], check: Any) -> str:
    rets = [o["net_return"] for o in closed.values()]
    wins = sum(1 for x in rets if x > 0)
    summary = (f"{len(issued):,} signals issued, {len(rets):,} closed: {wins:,} won ({wins / len(rets):.0%}), "
               f"average {_pct(sum(rets) / len(rets))} per signal after costs" if rets else
               f"{len(issued):,} signals issued, none closed yet")
    state = (f"Chain whole: {check.entries:,} entries, head <code>{check.head[:16]}…</code>" if check.ok else
             "Chain BROKEN: " + html.escape("; ".join(check.problems[:5])))
    rows = []
    for sid, s in sorted(issued.items(), key=lambda kv: (kv[1]["issued_at"], kv[0]), reverse=True)[:1000]:
        o = closed.get(sid)
        outcome = f"{html.escape(o['status'])} {_pct(o['net_return'])}" if o else "open"
        cls = "" if o is None else ("win" if o["net_return"] > 0 else "loss")
        rows.append(f"<tr class='{cls}'><td><a href='/api/v1/signals/{html.escape(sid)}/proof'>{html.escape(sid)}</a>"
                    f"</td><td>{html.escape(s['direction'])}</td><td>{s['entry']:.6g}</td><td>{s['target']:.6g}</td>"
                    f"<td>{s['stop']:.6g}</td><td>{s['confidence']}</td><td>{html.escape(s['issued_at'][:16])}</td>"
                    f"<td>{outcome}</td></tr>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'><title>Track record</title><style>"
            "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60em;padding:1em}"
            "table{border-collapse:collapse;width:100%;font-size:.9em}td,th{padding:.3em;border-bottom:1px solid #ddd;"
            "text-align:left}tr.win td:last-child{color:#176}tr.loss td:last-child{color:#a22}"
            "@media(max-width:40em){td:nth-child(4),td:nth-child(5),th:nth-child(4),th:nth-child(5){display:none}}"
            "</style></head><body><h1>Track record</h1>"
            f"<p>{summary}. Every signal ever issued is here, losers included, as recorded when it was issued and "
            f"when it closed.</p><p>{state}. Download the chain at <a href='/api/v1/public/record'>"
            "/api/v1/public/record</a> and check it yourself; each id links to its proof.</p>"
            "<table><thead><tr><th>signal</th><th>side</th><th>entry</th><th>target</th><th>stop</th><th>conf.</th>"
            "<th>issued (UTC)</th><th>outcome</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            "<p><small>Not investment advice. Returns are after the costs the service assumes.</small></p>"
            "</body></html>")
