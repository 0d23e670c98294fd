"""Charts drawn on the server as inline SVG: no JavaScript, nothing fetched, readable without a network."""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def line_chart(title: str, series: dict[str, Sequence[tuple[float, float]]], unit: str = "B",
               width: int = 560, height: int = 160) -> str:
    """A line chart of ``{name: [(epoch seconds, value), ...]}``; unit ``B`` or ``B/s`` formats as bytes."""
    pad_l, pad_r, pad_t, pad_b = 70, 10, 22, 22
    points = [p for s in series.values() for p in s]
    head = f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">' \
           f'<text x="4" y="14" class="ctitle">{escape(title)}</text>'
    if not points:
        return head + f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" class="muted">' \
                      'no samples yet</text></svg>'
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    vmax = max(max(p[1] for p in points), 1e-9)
    span = max(t1 - t0, 1.0)
    iw, ih = width - pad_l - pad_r, height - pad_t - pad_b

    def xy(t: float, v: float) -> str:
        return f"{pad_l + (t - t0) / span * iw:.1f},{pad_t + ih - v / vmax * ih:.1f}"

    def label(v: float) -> str:
        return human_bytes(v) + ("/s" if unit == "B/s" else "") if unit.startswith("B") else f"{v:.2g}"

    parts = [head,
             f'<line x1="{pad_l}" y1="{pad_t + ih}" x2="{width - pad_r}" y2="{pad_t + ih}" class="axis"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ih}" class="axis"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" class="tick">{escape(label(vmax))}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + ih}" text-anchor="end" class="tick">0</text>',
             f'<text x="{pad_l}" y="{height - 6}" class="tick">{time.strftime("%H:%M", time.gmtime(t0))}</text>',
             f'<text x="{width - pad_r}" y="{height - 6}" text-anchor="end" class="tick">'
             f'{time.strftime("%H:%M UTC", time.gmtime(t1))}</text>']
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        if len(pts) == 1:
            x, y = xy(*pts[0]).split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{colour}"/>')
        else:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                         f'points="{" ".join(xy(t, v) for t, v in pts)}"/>')
        parts.append(f'<text x="{width - pad_r - 4}" y="{14 + 12 * i}" text-anchor="end" style="fill:{colour}" '
                     f'class="tick">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: Sequence[tuple[str, int]], width: int = 1100, height: int = 160) -> str:
    """Vertical bars of ``[(label, count)]`` (the records-per-hour histogram)."""
    pad_l, pad_b, pad_t = 50, 22, 22
    head = f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">' \
           f'<text x="4" y="14" class="ctitle">{escape(title)}</text>'
    if not bars:
        return head + "</svg>"
    vmax = max(n for _, n in bars) or 1
    iw, ih = width - pad_l - 10, height - pad_t - pad_b
    w = min(iw / len(bars), 40.0)
    parts = [head, f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" class="tick">{vmax}</text>']
    for i, (lab, n) in enumerate(bars):
        h = n / vmax * ih
        x = pad_l + i * w
        parts.append(f'<rect x="{x + 1:.1f}" y="{pad_t + ih - h:.1f}" width="{max(w - 2, 1):.1f}" height="{h:.1f}" '
                     f'class="bar"><title>{escape(lab)}: {n}</title></rect>')
    step = max(1, len(bars) // 6)
    for i in range(0, len(bars), step):
        parts.append(f'<text x="{pad_l + i * w:.1f}" y="{height - 6}" class="tick">{escape(bars[i][0])}</text>')
    parts.append("</svg>")
    return "".join(parts)
