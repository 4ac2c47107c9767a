"""Server-side SVG charts for the operators' dashboard: no JavaScript, no CDN, readable by screen readers.

Each function returns SVG markup (every label escaped) with a `<title>` and `role="img"`; the
dashboard also shows the same figures in a table beside each chart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from markupsafe import Markup

WIDTH = 640
BAR_COLOR = "#2f6f4f"
MUTED = "#5b6770"


def _svg(title: str, height: int, body: list[str]) -> Markup:
    label = escape(title)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" role="img"'
        f' aria-label="{label}" font-family="system-ui, sans-serif" font-size="12"><title>{label}</title>'
        + "".join(body)
        + "</svg>"
    )


def column_chart(
    title: str,
    points: Sequence[tuple[str, float]],
    *,
    top: float | None = None,
    label: Callable[[float], str] = lambda v: f"{v:g}",
    height: int = 220,
) -> Markup:
    """Vertical bars, one per point (e.g. a week's recovery rate), each labelled with its value."""
    if not points:
        return _svg(title, 40, [f'<text x="8" y="24" fill="{MUTED}">No cases in this period.</text>'])
    top = top or max((v for _, v in points), default=0) or 1
    left, bottom, plot = 8, 36, height - 60
    step = (WIDTH - left * 2) / len(points)
    bar = max(step * 0.7, 2)
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{WIDTH - left}" y2="{height - bottom}" stroke="{MUTED}"/>']
    for index, (name, value) in enumerate(points):
        h = plot * min(value / top, 1)
        x = left + index * step + (step - bar) / 2
        y = height - bottom - h
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{BAR_COLOR}"/>')
        body.append(f'<text x="{x + bar / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle">{escape(label(value))}</text>')
        body.append(
            f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="{MUTED}">{escape(name)}</text>'
        )
    return _svg(title, height, body)


def bar_chart(
    title: str,
    rows: Sequence[tuple[str, float, str]],
    *,
    top: float | None = None,
) -> Markup:
    """Horizontal bars: (label, value, text shown after the bar), e.g. recovery rate by trigger."""
    if not rows:
        return _svg(title, 40, [f'<text x="8" y="24" fill="{MUTED}">No cases in this period.</text>'])
    top = top or max((v for _, v, _ in rows), default=0) or 1
    line, name_width, text_width = 26, 170, 150
    plot = WIDTH - name_width - text_width
    body = []
    for index, (name, value, text) in enumerate(rows):
        y = 8 + index * line
        w = plot * min(value / top, 1)
        body.append(f'<text x="{name_width - 8}" y="{y + 15}" text-anchor="end">{escape(name)}</text>')
        body.append(f'<rect x="{name_width}" y="{y + 3}" width="{w:.1f}" height="{line - 8}" fill="{BAR_COLOR}"/>')
        body.append(f'<text x="{name_width + w + 6:.1f}" y="{y + 15}" fill="{MUTED}">{escape(text)}</text>')
    return _svg(title, 16 + len(rows) * line, body)
