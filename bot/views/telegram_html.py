"""A Doc as Telegram HTML (parse_mode HTML): messages within Telegram's limits, and inline-keyboard data.

Layout: the heading in bold, the body, each field as "<b>name</b>: value", the table in <pre>, the note in
italics. Parts are split at line boundaries (a line longer than a whole message is cut between characters,
never inside a tag or an entity); a <pre> block that spans two messages is closed and reopened. Lengths are
counted in UTF-16 code units, as Telegram counts them, on the HTML source: the source is never shorter than
the text a person sees, so a part that fits here fits there.

No `telegram` import: the transport turns `keyboard()` rows into InlineKeyboardMarkup.
"""
from __future__ import annotations

import hashlib
import html
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from bot.views.doc import Doc
from bot.views.text import render_table

MAX_MESSAGE = 4096  # sendMessage text
MAX_CAPTION = 1024  # sendPhoto caption
MAX_CALLBACK_DATA = 64  # bytes of callback_data
BUTTONS_PER_ROW = 3

_OPEN_PRE, _CLOSE_PRE = "<pre>", "</pre>"


@dataclass(frozen=True, slots=True)
class Line:
    """One rendered line: its HTML, and whether it belongs to a <pre> block (the tags are added when packing)."""

    html: str
    pre: bool = False


@dataclass(frozen=True, slots=True)
class KeyboardButton:
    label: str
    callback_data: str


@dataclass(frozen=True, slots=True)
class Rendered:
    """What one Doc becomes: `caption` (only when the Doc has an image) and the text messages after it."""

    caption: str | None
    messages: tuple[str, ...]


# -- rendering ----------------------------------------------------------------------------------------
def escape(text: str) -> str:
    """Telegram HTML escaping (&, <, >); a lone surrogate, which Telegram rejects, becomes U+FFFD."""
    return html.escape(_clean(text), quote=False)


def doc_lines(doc: Doc) -> list[Line]:
    """The Doc as lines of Telegram HTML, in reading order, blank lines between sections."""
    sections: list[list[Line]] = []
    head: list[Line] = []
    if doc.heading.strip():
        head.extend(_styled("b", t) for t in _text_lines(doc.heading))
    if doc.image is not None and doc.image.caption.strip():
        head.extend(_styled("i", t) for t in _text_lines(doc.image.caption))
    sections.append(head)
    if doc.body.strip():
        sections.append([Line(escape(t)) for t in _text_lines(doc.body)])
    if doc.fields:
        sections.append([_field_line(name, value) for name, value in doc.fields])
    if doc.table is not None and (doc.table.headers or doc.table.rows):
        sections.append([Line(escape(t), pre=True) for t in render_table(doc.table)])
    if doc.note.strip():
        sections.append([_styled("i", t) for t in _text_lines(doc.note)])
    out: list[Line] = []
    for section in sections:
        if not section:
            continue
        if out:
            out.append(Line(""))
        out.extend(section)
    return out


def render_html(doc: Doc, limit: int = MAX_MESSAGE, first_limit: int | None = None) -> list[str]:
    """The Doc as Telegram HTML messages, each within `limit` UTF-16 units (the first within `first_limit`
    when given, e.g. a photo caption). Never empty: a Doc with no text renders as one "…"."""
    parts = pack(doc_lines(doc), limit, first_limit)
    return parts or ["…"]


def render_for_telegram(doc: Doc) -> Rendered:
    """Text messages; with an image, the first piece is its caption (at most 1,024) and the rest follow."""
    if doc.image is None:
        return Rendered(None, tuple(render_html(doc)))
    parts = pack(doc_lines(doc), MAX_MESSAGE, MAX_CAPTION)
    if not parts:
        return Rendered("", ())
    return Rendered(parts[0], tuple(parts[1:]))


def pack(lines: Sequence[Line], limit: int = MAX_MESSAGE, first_limit: int | None = None) -> list[str]:
    """Join lines into as few messages as fit; blank lines at a message's edges are dropped."""
    packer = _Packer(limit, first_limit)
    for line in lines:
        packer.add(line)
    return packer.finish()


class _Packer:
    def __init__(self, limit: int, first_limit: int | None) -> None:
        if limit < 64 or (first_limit is not None and first_limit < 64):
            raise ValueError("a message limit below 64 characters cannot hold a tag and some text")
        self.limit = limit
        self.first_limit = first_limit if first_limit is not None else limit
        self.parts: list[str] = []
        self.lines: list[Line] = []
        self.size = 0  # UTF-16 length of the current part, closing </pre> included

    @property
    def current_limit(self) -> int:
        return self.first_limit if not self.parts else self.limit

    def cost(self, line: Line) -> int:
        """What adding `line` to the current part costs: separator, <pre> tags when a block starts, the line."""
        extra = 1 if self.lines else 0
        if line.pre and not (self.lines and self.lines[-1].pre):
            extra += len(_OPEN_PRE) + len(_CLOSE_PRE)
        return extra + _units(line.html)

    def add(self, line: Line) -> None:
        if not line.html and not self.lines:
            return  # no blank line at the top of a message
        if self.size + self.cost(line) <= self.current_limit:
            self._append(line)
            return
        if self.lines:
            self.flush()
            if not line.html:
                return
            if self.cost(line) <= self.current_limit:
                self._append(line)
                return
        for piece in _cut(line, self.current_limit, self.limit):  # a line longer than a whole message
            if self.lines:
                self.flush()
            self._append(piece)

    def _append(self, line: Line) -> None:
        self.size += self.cost(line)
        self.lines.append(line)

    def flush(self) -> None:
        while self.lines and not self.lines[-1].html:
            self.lines.pop()
        if any(line.html.strip() for line in self.lines):  # Telegram refuses a message with no visible text
            self.parts.append(_join(self.lines))
        self.lines, self.size = [], 0

    def finish(self) -> list[str]:
        self.flush()
        return self.parts


def _join(lines: Sequence[Line]) -> str:
    out: list[str] = []
    in_pre = False
    for line in lines:
        text = line.html
        if line.pre and not in_pre:
            text = _OPEN_PRE + text
        if in_pre and not line.pre:
            out[-1] += _CLOSE_PRE
        in_pre = line.pre
        out.append(text)
    if in_pre:
        out[-1] += _CLOSE_PRE
    return "\n".join(out)


def _cut(line: Line, first_room: int, room: int) -> list[Line]:
    """Cut an over-long line into pieces that each fit a message alone. The line's HTML is a sequence of
    runs, each plain escaped text or one <b>/<i> element; pieces are cut from the unescaped text of a run and
    escaped again, so no tag or entity is ever split."""
    overhead = len(_OPEN_PRE) + len(_CLOSE_PRE) if line.pre else 0
    pieces: list[Line] = []
    current: list[str] = []
    used = 0
    budget = first_room - overhead
    for tag, text in _runs(line.html):
        wrap = len(f"<{tag}></{tag}>") if tag else 0
        while text:
            free = budget - used - wrap
            if free < 1:
                pieces.append(Line("".join(current), line.pre))
                current, used, budget = [], 0, room - overhead
                continue
            chunk = _fit(text, free)
            if not chunk:
                if current:  # one escaped character did not fit after what is there: next piece
                    pieces.append(Line("".join(current), line.pre))
                    current, used, budget = [], 0, room - overhead
                    continue
                chunk = text[:1]  # cannot happen with a room of 64+, but never loop forever
            html_chunk = escape(chunk)
            rendered = f"<{tag}>{html_chunk}</{tag}>" if tag else html_chunk
            current.append(rendered)
            used += _units(rendered)
            text = text[len(chunk):]
    if current:
        pieces.append(Line("".join(current), line.pre))
    return pieces


def _fit(text: str, room: int) -> str:
    """The longest prefix of `text` whose escaped form fits `room` UTF-16 units, cut after a space when one is
    in its second half."""
    used = 0
    end = 0
    for ch in text:
        cost = _escaped_units(ch)
        if used + cost > room:
            break
        used += cost
        end += 1
    if end == len(text):
        return text
    space = text.rfind(" ", 0, end)
    if space >= end // 2 and space > 0:
        return text[:space + 1]
    return text[:end]


def _runs(line_html: str) -> list[tuple[str | None, str]]:
    """Our own line HTML back into (tag, unescaped text) runs. Only the shapes doc_lines() writes occur:
    plain escaped text and non-nested <b>...</b> / <i>...</i>."""
    runs: list[tuple[str | None, str]] = []
    pos = 0
    while pos < len(line_html):
        start = line_html.find("<", pos)
        if start < 0:
            runs.append((None, html.unescape(line_html[pos:])))
            break
        if start > pos:
            runs.append((None, html.unescape(line_html[pos:start])))
        tag = line_html[start + 1:line_html.index(">", start)]
        close = f"</{tag}>"
        end = line_html.index(close, start)
        runs.append((tag, html.unescape(line_html[start + len(tag) + 2:end])))
        pos = end + len(close)
    return runs


def _styled(tag: str, text: str) -> Line:
    return Line(f"<{tag}>{escape(text)}</{tag}>" if text else "")


def _field_line(name: str, value: str) -> Line:
    name_html = escape(" ".join(name.split()))
    value_html = escape(" ".join(value.split()) if "\n" in value else value)
    return Line(f"<b>{name_html}</b>: {value_html}" if name_html else value_html)


def _text_lines(text: str) -> list[str]:
    """Lines without trailing blanks; a line of only blanks becomes an empty line."""
    return [t.rstrip() for t in text.strip("\n").splitlines()] or [""]


def _units(text: str) -> int:
    """Length in UTF-16 code units (an emoji outside the BMP counts two, as Telegram counts it)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _escaped_units(ch: str) -> int:
    if ch == "&":
        return 5
    if ch in "<>":
        return 4
    return 2 if ord(ch) > 0xFFFF else 1


def _clean(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


# -- buttons ------------------------------------------------------------------------------------------
class CallbackCommands:
    """callback_data for a button's command: the command itself when it fits Telegram's 64 bytes, otherwise
    "#" + a short digest remembered here (the most recent `capacity` of them; a press on a forgotten one,
    e.g. after a restart, decodes to None and the transport says the button expired)."""

    PREFIX = "#"

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._by_key: OrderedDict[str, str] = OrderedDict()

    def encode(self, command: str) -> str:
        command = command.strip()
        if command.startswith("/") and len(command.encode("utf-8")) <= MAX_CALLBACK_DATA:
            return command
        key = self.PREFIX + hashlib.blake2b(command.encode("utf-8", "replace"), digest_size=12).hexdigest()
        self._by_key[key] = command
        self._by_key.move_to_end(key)
        while len(self._by_key) > self.capacity:
            self._by_key.popitem(last=False)
        return key

    def decode(self, data: str | None) -> str | None:
        if not data:
            return None
        if data.startswith("/"):
            return data
        return self._by_key.get(data)


def keyboard(doc: Doc, codec: CallbackCommands, per_row: int = BUTTONS_PER_ROW) -> list[list[KeyboardButton]]:
    """Doc.buttons as rows of inline buttons (at most `per_row` a row)."""
    buttons = [KeyboardButton(_clean(b.label).strip()[:64] or b.command[:64], codec.encode(b.command))
               for b in doc.buttons]
    return [buttons[i:i + per_row] for i in range(0, len(buttons), per_row)]
