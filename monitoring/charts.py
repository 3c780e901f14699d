"""The per-job run timeline as data for an inline SVG drawn by the template (no JavaScript):
one bar per ledger row, height = duration, colour = outcome; missed, skipped, lost and expired
slots are full-height markers of their own colour. The template escapes every value."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT, GAP, FLOOR = 600, 120, 1, 3
MARKED = {"missed", "skipped", "lost", "expired"}


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


def outcome(row) -> str:
    if row.kind in ("missed", "skipped"):
        return row.kind
    return row.state


def duration(row) -> float | None:
    if row.started_at and row.finished_at:
        return max((row.finished_at - row.started_at).total_seconds(), 0.0)
    return None


def run_chart(rows) -> dict:
    """``rows``: ledger rows oldest first (at most 100)."""
    longest = max((d for d in map(duration, rows) if d is not None), default=0.0) or 1.0
    step = WIDTH / max(len(rows), 1)
    bars = []
    for i, row in enumerate(rows):
        kind, seconds = outcome(row), duration(row)
        if kind in MARKED:
            height = HEIGHT
        elif seconds is None:
            height = FLOOR  # not finished (yet): a stub at the floor
        else:
            height = max(FLOOR, HEIGHT * seconds / longest)
        took = f", {seconds:.2f} s" if seconds is not None else ""
        error = f": {row.error}" if getattr(row, "error", "") else ""
        bars.append(Bar(
            x=round(i * step, 2), y=round(HEIGHT - height, 2),
            width=round(max(step - GAP, 1), 2), height=round(height, 2), css=kind,
            title=f"{row.slot:%Y-%m-%d %H:%M:%S} UTC {kind}{took}{error}"))
    return {"width": WIDTH, "height": HEIGHT, "bars": bars, "longest": round(longest, 2),
            "count": len(rows)}
