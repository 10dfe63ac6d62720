"""A Doc as Discord embeds (JSON, the API's own shape) within Discord's limits, and its buttons as rows.

Layout, in the Doc's reading order: the heading is the first embed's title; the image caption and the body
are its description; each field is an embed field (inline when short); the table is a code block in the
description of the embeds after it; the note is the last embed's footer. The image is shown inside the first
embed (`attachment://<filename>`, the transport attaches the file to the message carrying that embed).

Limits (Discord's): title 256, description 4,096, 25 fields, field name 256, field value 1,024, footer 2,048,
6,000 characters over all embeds of a message, 10 embeds per message. Lengths are counted in UTF-16 code
units, never fewer than the characters Discord counts, so a part that fits here fits there. Nothing is
dropped: an over-long title continues in the description, an over-long field or footer becomes description
text, a long description continues in the next embed, and embeds beyond a message's limits go to the next
message. Text is markdown-escaped everywhere markdown is rendered (title, description, fields); the footer
is shown as plain text and kept as it is.

No `discord` import: the transport turns these dicts into discord.Embed (Embed.from_dict).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.views.doc import Button, Doc, Image
from bot.views.text import render_table

MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER = 2048
MAX_TOTAL = 6000  # over all embeds of one message
MAX_EMBEDS = 10  # per message
MAX_BUTTON_LABEL = 80
BUTTONS_PER_ROW = 5
MAX_BUTTON_ROWS = 5
INLINE_FIELD = 40  # a field whose name and value are this short sits beside others

EMPTY = "\u200b"  # Discord rejects empty field names and values; a zero-width space stands in
TONE_COLOURS = {"info": 0x3498DB, "success": 0x2ECC71, "warning": 0xF1C40F, "error": 0xE74C3C}
_FENCE_OPEN, _FENCE_CLOSE = "```\n", "\n```"
_MARKDOWN = re.compile(r"([\\*_~`|\[\]<>])")
_LINE_START = re.compile(r"^(\s*)(?:([#>])|([-+])(?=\s)|(\d+)\.(?=\s))", re.MULTILINE)
_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class DiscordMessage:
    """One message of a rendered Doc: its embeds (API JSON) and whether it carries the Doc's image."""

    embeds: tuple[dict[str, Any], ...]
    carries_image: bool = False


# -- rendering ----------------------------------------------------------------------------------------
def render_embeds(doc: Doc) -> list[DiscordMessage]:
    """The Doc as one message or more, each within Discord's limits. Never empty."""
    builder = _Builder(TONE_COLOURS.get(doc.tone, TONE_COLOURS["info"]))
    title, rest = _title(doc.heading)
    builder.title(title)
    if doc.image is not None:
        builder.image(attachment_name(doc.image))
    intro = [*rest]
    if doc.image is not None and doc.image.caption.strip():
        intro.extend(escape_markdown(line) for line in _lines(doc.image.caption))
    if doc.body.strip():
        if intro:
            intro.append("")
        intro.extend(escape_markdown(line) for line in _lines(doc.body))
    builder.text(intro)
    for name, value in doc.fields:
        builder.field(name, value)
    if doc.table is not None and (doc.table.headers or doc.table.rows):
        builder.text([_code_safe(line) for line in render_table(doc.table)], code=True)
    if doc.note.strip():
        builder.footer(doc.note)
    return _messages(builder.finish())


def embed_length(embed: dict[str, Any]) -> int:
    """What Discord counts toward the 6,000 of a message: title, description, field names and values,
    footer text and author name."""
    total = units(embed.get("title", "")) + units(embed.get("description", ""))
    total += sum(units(f["name"]) + units(f["value"]) for f in embed.get("fields", ()))
    total += units(embed.get("footer", {}).get("text", "")) + units(embed.get("author", {}).get("name", ""))
    return total


def button_rows(buttons: Sequence[Button]) -> list[list[Button]]:
    """Buttons in rows of five, at most five rows (Discord's limit; further buttons are left out), labels cut
    to 80 characters."""
    usable = [Button(_cut_label(b.label), b.command) for b in buttons[:BUTTONS_PER_ROW * MAX_BUTTON_ROWS]]
    return [usable[i:i + BUTTONS_PER_ROW] for i in range(0, len(usable), BUTTONS_PER_ROW)]


def attachment_name(image: Image) -> str:
    """A file name Discord accepts in `attachment://` (letters, digits, dot, dash, underscore)."""
    name = _FILENAME.sub("_", image.filename.strip()).strip("._") or "chart.png"
    if "." not in name:
        name += ".png"
    return name[-64:]


def escape_markdown(text: str) -> str:
    """Backslash-escape what Discord's markdown would render: emphasis, code, spoilers, links, mentions,
    and headings, quotes and list markers at the start of a line."""
    text = _MARKDOWN.sub(r"\\\1", _clean(text))
    return _LINE_START.sub(_escape_line_start, text)


def _escape_line_start(m: re.Match[str]) -> str:
    indent, marker, bullet, number = m.groups()
    if number is not None:
        return f"{indent}{number}\\."  # "1. " starts an ordered list; "1\. " does not
    return f"{indent}\\{marker or bullet}"


def units(text: str) -> int:
    """Length in UTF-16 code units."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


# -- building -----------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, colour: int) -> None:
        self.colour = colour
        self.embeds: list[dict[str, Any]] = []
        self.current = self._new()

    def _new(self) -> dict[str, Any]:
        embed: dict[str, Any] = {"type": "rich", "color": self.colour}
        self.embeds.append(embed)
        self.current = embed
        return embed

    def title(self, title: str) -> None:
        if title:
            self.current["title"] = title

    def image(self, filename: str) -> None:
        self.current["image"] = {"url": f"attachment://{filename}"}

    def _room(self) -> int:
        """Characters the current embed's description can still take."""
        e = self.current
        if "fields" in e or "footer" in e:  # text after fields would be shown above them: a new embed
            return 0
        return min(MAX_DESCRIPTION - units(e.get("description", "")), MAX_TOTAL - embed_length(e))

    def _append(self, block: str) -> None:
        desc = self.current.get("description", "")
        self.current["description"] = f"{desc}\n\n{block}" if desc else block

    def _separator(self) -> int:
        return 2 if self.current.get("description") else 0

    def text(self, lines: Sequence[str], code: bool = False) -> None:
        """Lines into descriptions, continuing in new embeds; a code block is closed and reopened there."""
        lines = list(lines)
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            return
        overhead = units(_FENCE_OPEN) + units(_FENCE_CLOSE) if code else 0
        pending: list[str] = []
        used = 0

        def flush() -> None:
            nonlocal pending, used
            if pending:
                body = "\n".join(pending)
                self._append(f"{_FENCE_OPEN}{body}{_FENCE_CLOSE}" if code else body)
            pending, used = [], 0

        queue = list(lines)
        while queue:
            line = queue.pop(0)
            room = self._room() - self._separator() - overhead - used - (1 if pending else 0)
            if units(line) <= room:
                used += units(line) + (1 if pending else 0)
                pending.append(line)
                continue
            fresh = not pending and not self.current.get("description") and self._room() > 0
            if not fresh:  # the line may fit in a new embed
                flush()
                self._new()
                queue.insert(0, line)
                continue
            head, tail = _split(line, room)  # longer than a whole description: cut it
            pending.append(head)
            flush()
            self._new()
            queue.insert(0, tail)
        flush()

    def field(self, name: str, value: str) -> None:
        shown_name = escape_markdown(" ".join(_lines(name))).strip() or EMPTY
        shown_value = escape_markdown(value).strip() or EMPTY
        if units(shown_name) > MAX_FIELD_NAME or units(shown_value) > MAX_FIELD_VALUE:
            # too long for a field: description text in a new embed (after the fields shown so far)
            if "fields" in self.current or "footer" in self.current:
                self._new()
            head = f"**{shown_name}**" if shown_name != EMPTY else ""
            self.text([head, *(escape_markdown(line) for line in _lines(value))] if head else
                      [escape_markdown(line) for line in _lines(value)])
            return
        e = self.current
        size = units(shown_name) + units(shown_value)
        if "footer" in e or len(e.get("fields", ())) >= MAX_FIELDS or embed_length(e) + size > MAX_TOTAL:
            e = self._new()
        inline = units(shown_name) <= INLINE_FIELD and units(shown_value) <= INLINE_FIELD and "\n" not in shown_value
        e.setdefault("fields", []).append({"name": shown_name, "value": shown_value, "inline": inline})

    def footer(self, note: str) -> None:
        text = _clean(note).strip()
        if units(text) > MAX_FOOTER:  # too long for a footer: description text at the end
            if "fields" in self.current or "footer" in self.current:
                self._new()
            self.text([escape_markdown(line) for line in _lines(text)])
            return
        if embed_length(self.current) + units(text) > MAX_TOTAL or "footer" in self.current:
            self._new()
        self.current["footer"] = {"text": text}

    def finish(self) -> list[dict[str, Any]]:
        embeds = [e for e in self.embeds if _has_content(e)]
        if not embeds:
            first = self.embeds[0]
            first["description"] = "…"
            embeds = [first]
        return embeds


def _messages(embeds: Iterable[dict[str, Any]]) -> list[DiscordMessage]:
    groups: list[list[dict[str, Any]]] = [[]]
    size = 0
    for e in embeds:
        n = embed_length(e)
        if groups[-1] and (len(groups[-1]) >= MAX_EMBEDS or size + n > MAX_TOTAL):
            groups.append([])
            size = 0
        groups[-1].append(e)
        size += n
    return [DiscordMessage(tuple(g), any("image" in e for e in g)) for g in groups]


def _has_content(e: dict[str, Any]) -> bool:
    return any(k in e for k in ("title", "description", "fields", "footer", "image"))


# -- text helpers -------------------------------------------------------------------------------------
def _title(heading: str) -> tuple[str, list[str]]:
    """(title, description lines it did not fit into)."""
    text = escape_markdown(" ".join(t.strip() for t in _lines(heading) if t.strip()))
    if units(text) <= MAX_TITLE:
        return text, []
    head, tail = _split(text, MAX_TITLE)
    return head, [tail]


def _split(text: str, room: int) -> tuple[str, str]:
    """A head of at most `room` UTF-16 units, cut at a space in its second half when there is one, never
    between a backslash and the character it escapes; and the rest."""
    room = max(room, 2)
    end, size = 0, 0
    for ch in text:
        n = 2 if ord(ch) > 0xFFFF else 1
        if size + n > room:
            break
        size += n
        end += 1
    space = text.rfind(" ", 0, end)
    if end < len(text) and space > end // 2:
        end = space + 1
    slashes = len(text[:end]) - len(text[:end].rstrip("\\"))
    if slashes % 2 == 1:  # do not separate an escape from its character
        end -= 1
    end = max(end, 1)
    return text[:end], text[end:]


def _lines(text: str) -> list[str]:
    return _clean(text).split("\n")


def _clean(text: str) -> str:
    """Newlines normalised; lone surrogates (not valid in JSON) become U+FFFD."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _code_safe(line: str) -> str:
    """A table line inside ``` fences: a backtick is followed by a zero-width space, so no fence can close."""
    return _clean(line).replace("`", "`" + EMPTY)


def _cut_label(label: str) -> str:
    label = " ".join(_clean(label).split()) or "…"
    return label if len(label) <= MAX_BUTTON_LABEL else label[:MAX_BUTTON_LABEL - 1] + "…"


__all__ = ["DiscordMessage", "attachment_name", "button_rows", "embed_length", "escape_markdown", "render_embeds",
           "units"]
