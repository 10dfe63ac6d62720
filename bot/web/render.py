"""A command's Doc as a fragment of HTML for the dashboard: the same view the chat shows, in semantic markup
(heading, paragraphs, a field list, a table, the chart inline, the buttons as links to the same commands)."""
from __future__ import annotations

import base64
from html import escape
from urllib.parse import quote

from bot.views.doc import Doc

READ_COMMANDS = frozenset({"signals", "signal", "similar", "performance", "history", "instruments", "subscription",
                           "account", "apikey", "verify", "prefs", "help", "portfolio", "watchlist", "screener"})
WRITES_WITH_ARGUMENTS = frozenset({"apikey", "prefs", "watchlist"})  # read-only without arguments: a link may not
# change them
FORM_COMMANDS = frozenset({"feedback", "watchlist"})  # writes a button may make, by POST only (the session cookie is
# SameSite=Lax: another site's form cannot carry it)


def runs_by_link(command: str) -> bool:
    """Whether a GET may run `command`: a read command, and never one that writes when given arguments
    (a link from another site opened with the session cookie must not change anything)."""
    name, _, args = command.strip().lstrip("/").partition(" ")
    name = name.lower()
    return name in READ_COMMANDS and not (name in WRITES_WITH_ARGUMENTS and args.strip())


def runs_by_form(command: str) -> bool:
    """Whether a POST from the dashboard's own page may run `command` (a button's write)."""
    name = command.strip().lstrip("/").partition(" ")[0].lower()
    return name in FORM_COMMANDS


def command_link(command: str) -> str | None:
    """The dashboard URL that runs `command` (a read command only), or None."""
    if not runs_by_link(command):
        return None
    return "/web/run?text=" + quote(command, safe="")


def doc_html(doc: Doc) -> str:
    out = [f"<section class='doc {escape(doc.tone)}'>"]
    if doc.heading.strip():
        out.append(f"<h2>{escape(doc.heading)}</h2>")
    if doc.image is not None:
        data = base64.b64encode(doc.image.data).decode()
        alt = escape(doc.image.caption or doc.heading)
        out.append(f"<img class='chart' alt='{alt}' src='data:image/png;base64,{data}'>")
    for para in (p for p in doc.body.split("\n\n") if p.strip()):
        out.append("<p>" + "<br>".join(escape(line) for line in para.splitlines()) + "</p>")
    if doc.fields:
        out.append("<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in doc.fields) + "</dl>")
    if doc.table is not None:
        head = "".join(f"<th>{escape(h)}</th>" for h in doc.table.headers)
        rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in doc.table.rows)
        out.append(f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")
    buttons = []
    for b in doc.buttons:
        url = command_link(b.command)
        if url:
            buttons.append(f"<a class='button' href='{escape(url)}'>{escape(b.label)}</a>")
        elif runs_by_form(b.command):
            buttons.append("<form method='post' action='/web/run' class='inline'><input type='hidden' name='text' "
                           f"value='{escape(b.command)}'><button type='submit' class='button'>{escape(b.label)}"
                           "</button></form>")
    if buttons:
        out.append("<nav class='buttons'>" + "".join(buttons) + "</nav>")
    if doc.note.strip():
        out.append("<p class='note'>" + "<br>".join(escape(line) for line in doc.note.splitlines()) + "</p>")
    out.append("</section>")
    return "".join(out)
