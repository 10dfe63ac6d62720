"""What the delivery layer needs from a chat platform."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.views.doc import Doc
from core.errors import DeliveryError


@dataclass(frozen=True, slots=True)
class Resume:
    """Where an earlier attempt at a message in parts stopped: `parts_sent` parts went out (the first is
    `first_ref`); a resumed send starts after them and returns `first_ref`. `layout` names how that attempt
    split the Doc ("photo+2": a photo and two texts); a retry whose Doc splits differently (its chart could not
    be had this time) cannot skip by count and sends every part."""

    parts_sent: int
    first_ref: str
    layout: str = ""


@dataclass(slots=True)
class Progress:
    """A send in parts as it goes: parts to skip (already sent), parts sent so far, the first's reference."""

    skip: int = 0
    sent: int = 0
    first_ref: str | None = None
    layout: str = ""
    resumed_layout: str | None = None

    @classmethod
    def of(cls, resume: Resume | None) -> Progress:
        if resume is None:
            return cls()
        return cls(resume.parts_sent, resume.parts_sent, resume.first_ref, resumed_layout=resume.layout)

    def begin(self, has_image: bool, texts: int) -> None:
        """The Doc as this attempt splits it; a resume recorded for another split starts from the first part."""
        self.layout = f"{'photo' if has_image else 'text'}+{texts}"
        if self.resumed_layout and self.resumed_layout != self.layout:  # "": not recorded, the count stands
            self.skip, self.sent, self.first_ref = 0, 0, None
        self.resumed_layout = None

    def pending(self, index: int) -> bool:
        """Whether part `index` (0-based) still has to be sent."""
        return index >= self.skip

    def done(self, ref: str) -> None:
        self.sent += 1
        self.first_ref = self.first_ref or ref

    def attach(self, error: DeliveryError) -> DeliveryError:
        """The error, carrying how far this message got (the worker records it; the retry resumes there)."""
        if self.sent and self.first_ref is not None:
            error.parts_sent, error.first_ref, error.layout = self.sent, self.first_ref, self.layout
        return error


class Transport(Protocol):
    name: str  # the platform: "console", "telegram", "discord"

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        """Deliver `doc`; return the platform's message reference. Raises core.errors.DeliveryError.
        Transports that send a Doc in parts (Telegram, Discord) also take `resume: Resume | None` (only passed
        when an earlier attempt stopped part-way) and report their progress on the error they raise."""
        ...
