"""Number and time formatting shared by the views."""
from __future__ import annotations

from datetime import datetime


def price(x: float) -> str:
    if x >= 1000:
        return f"{x:,.2f}"
    if x >= 1:
        return f"{x:.2f}" if x >= 10 else f"{x:.4f}"
    return f"{x:.6f}"


def pct(x: float, signed: bool = True) -> str:
    return f"{x * 100:+.2f}%" if signed else f"{x * 100:.1f}%"


def when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")
