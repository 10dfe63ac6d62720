"""Plain-text rendering of a Doc (the console; also the fallback of other transports)."""
from __future__ import annotations

from bot.views.doc import Doc, Table


def render_text(doc: Doc) -> str:
    lines = [doc.heading]
    if doc.body:
        lines.append(doc.body)
    if doc.fields:
        width = max(len(k) for k, _ in doc.fields)
        lines.extend(f"  {k.ljust(width)}  {v}" for k, v in doc.fields)
    if doc.table is not None:
        lines.extend(render_table(doc.table))
    if doc.image is not None:
        lines.append(f"  [image: {doc.image.filename}, {len(doc.image.data):,} bytes]")
    if doc.buttons:
        lines.append("  " + "  ".join(f"[{b.label}: {b.command}]" for b in doc.buttons))
    if doc.note:
        lines.append(doc.note)
    return "\n".join(lines)


def render_table(table: Table) -> list[str]:
    cols = list(zip(table.headers, *table.rows)) if table.rows else [(h,) for h in table.headers]
    widths = [max(len(str(c)) for c in col) for col in cols]
    def fmt(row: tuple[str, ...]) -> str:
        return "  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
    out = [fmt(table.headers), "  " + "  ".join("-" * w for w in widths)]
    out.extend(fmt(r) for r in table.rows)
    return out
