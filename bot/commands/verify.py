"""/verify SIGNAL_ID: that a signal and its outcome are as they were recorded when issued and closed (the public
track record's hash chain, storage.chain), for anyone, subscribed or not. The same proof is served by the REST
API at /api/v1/signals/{id}/proof and on the public track record page."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.commands.registry import Command, CommandContext
from bot.views.doc import Doc
from core.errors import UserInputError
from core.ports import ChainCheck, ChainEntryView, StoreBundle

USAGE = "/verify SIGNAL_ID"


@dataclass(frozen=True, slots=True)
class Proof:
    signal_id: str
    entries: Sequence[ChainEntryView]  # this signal's: its issue, then its outcome(s)
    before: ChainEntryView | None  # the chain entry before its issue entry
    after: ChainEntryView | None  # ... and the one after
    check: ChainCheck  # the whole chain, verified now
    mine: Sequence[str]  # the problems that name this signal

    @property
    def issued(self) -> ChainEntryView | None:
        return next((e for e in self.entries if e.kind == "issue"), None)

    @property
    def intact(self) -> bool:
        return self.issued is not None and not self.mine and all(e.sound for e in self.entries)

    def as_json(self) -> dict[str, Any]:
        def entry(e: ChainEntryView | None) -> dict[str, Any] | None:
            if e is None:
                return None
            return {"seq": e.seq, "kind": e.kind, "signal_id": e.signal_id, "at": e.at.isoformat(),
                    "prev_hash": e.prev_hash, "hash": e.hash, "payload": json.loads(e.payload), "sound": e.sound}

        return {"signal_id": self.signal_id, "intact": self.intact, "entries": [entry(e) for e in self.entries],
                "previous": entry(self.before), "next": entry(self.after),
                "chain": {"ok": self.check.ok, "entries": self.check.entries, "signals": self.check.signals,
                          "head": self.check.head, "problems": list(self.check.problems)},
                "problems": list(self.mine),
                "how": "hash = sha256(f'{seq}|{kind}|{signal_id}|{prev_hash}|{payload}') over the payload's exact "
                       "text; each entry's prev_hash is the hash of the entry before (64 zeros for the first)"}


async def signal_proof(store: StoreBundle, signal_id: str, check: ChainCheck | None = None) -> Proof | None:
    """The proof of `signal_id`, or None when the chain has never held it (unknown, or a shadow). `check`: the
    whole chain's verification when the caller has a recent one (default: verified now)."""
    entries = await store.chain.entries(signal_id)
    if not entries:
        return None
    before, after = await store.chain.around(entries[0].seq)
    check = check if check is not None else await store.chain.verify()
    mine = [p for p in check.problems if signal_id in p]
    return Proof(signal_id, entries, before, after, check, mine)


def parse_verify(args: Sequence[str]) -> str:
    if len(args) != 1 or len(args[0]) > 80:
        raise UserInputError("Give one signal id, e.g. /verify AAPL-1d-20240305-L.")
    return args[0]


def proof_doc(proof: Proof) -> Doc:
    issued = proof.issued
    fields: list[tuple[str, str]] = []
    for e in proof.entries:
        what = "issued" if e.kind == "issue" else "closed"
        fields.append((f"{what.capitalize()} (entry {e.seq})", f"{e.at:%Y-%m-%d %H:%M} UTC, hash {e.hash[:16]}…"))
    if issued is not None:
        fields.append(("Follows", f"entry {proof.before.seq}, hash {proof.before.hash[:16]}…" if proof.before
                       else "the start of the chain"))
    whole = (f"whole: {proof.check.entries:,} entries, {proof.check.signals:,} signals, head "
             f"{proof.check.head[:16]}…" if proof.check.ok
             else f"BROKEN: {len(proof.check.problems)} problem(s): " + "; ".join(proof.check.problems[:3]))
    fields.append(("Chain", whole))
    if proof.intact:
        return Doc(heading=f"{proof.signal_id}: as recorded", tone="success", fields=tuple(fields),
                   body="This signal and its outcome are exactly as they were when they were recorded: nothing was "
                        "edited or removed since, and the chain they are part of is unbroken.",
                   note=f"Check it yourself: GET /api/v1/signals/{proof.signal_id}/proof")
    return Doc(heading=f"{proof.signal_id}: NOT as recorded", tone="error", fields=tuple(fields),
               body="; ".join(proof.mine) or "its entries in the chain were altered")


async def verify(ctx: CommandContext, signal_id: str) -> Doc:
    proof = await signal_proof(ctx.services.store, signal_id)
    if proof is None:
        return Doc.error(f"No issued signal {signal_id} in the track record.",
                         "Signal ids are in every signal message, /history and /signals.")
    return proof_doc(proof)


def verify_commands() -> list[Command[Any]]:
    return [Command("verify", "prove a signal and its outcome were not edited after the fact", USAGE, parse_verify,
                    verify, needs_user=False)]
