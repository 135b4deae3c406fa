"""Small charts drawn with Pillow (no plotting library needed): box plots of scores per class, and curves.

Both return an ``(H, W, 3)`` uint8 picture to save with ``samjax.overlay.save_png``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from samjax.overlay import PALETTE

_INK, _GRID, _PAPER = (40, 40, 40), (225, 225, 225), (255, 255, 255)


class _Axes:
    """A plot area with a y axis from ``low`` to ``high``, gridlines, a title and a y label."""

    def __init__(self, width: int, height: int, low: float, high: float, title: str, y_label: str):
        self.image = Image.new("RGB", (width, height), _PAPER)
        self.draw = ImageDraw.Draw(self.image)
        self.font = ImageFont.load_default()
        self.left, self.right, self.top, self.bottom = 64, width - 16, 36, height - 48
        self.low, self.high = float(low), float(high) if high > low else float(low) + 1.0
        self.draw.text((self.left, 10), title, fill=_INK, font=self.font)
        self.draw.text((6, self.top - 24), y_label, fill=_INK, font=self.font)
        for tick in np.linspace(self.low, self.high, 6):
            y = self.y(tick)
            self.draw.line([(self.left, y), (self.right, y)], fill=_GRID)
            self.draw.text((8, y - 6), f"{tick:.3g}", fill=_INK, font=self.font)
        self.draw.line([(self.left, self.top), (self.left, self.bottom), (self.right, self.bottom)], fill=_INK)

    def y(self, value: float) -> float:
        frac = (min(max(value, self.low), self.high) - self.low) / (self.high - self.low)
        return self.bottom - frac * (self.bottom - self.top)

    def label_below(self, x: float, text: str) -> None:
        width = self.draw.textlength(text, font=self.font)
        self.draw.text((x - width / 2, self.bottom + 8), text, fill=_INK, font=self.font)

    def picture(self) -> np.ndarray:
        return np.asarray(self.image)


def box_plot(groups: Mapping[str, Sequence[float]], title: str, y_label: str, low: float = 0.0,
             high: float | None = None, width: int = 640, height: int = 400) -> np.ndarray:
    """One box per group: quartiles, median (thick line), mean (diamond), whiskers to the furthest value
    within 1.5 IQR, points beyond them. ``high`` defaults to the largest value (1.0 suits Dice)."""
    clean = {k: np.asarray([v for v in vals if v is not None and np.isfinite(v)], float) for k, vals in groups.items()}
    top = high if high is not None else max([v.max() for v in clean.values() if v.size] + [low + 1.0])
    ax = _Axes(width, height, low, top, title, y_label)
    slot = (ax.right - ax.left) / max(1, len(clean))
    for i, (name, v) in enumerate(clean.items()):
        x = ax.left + slot * (i + 0.5)
        half = min(28.0, slot * 0.3)
        color = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        ax.label_below(x, f"{name} (n={v.size})")
        if not v.size:
            continue
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        iqr = q3 - q1
        inside = v[(v >= q1 - 1.5 * iqr) & (v <= q3 + 1.5 * iqr)]
        lo, hi = inside.min(), inside.max()
        ax.draw.line([(x, ax.y(lo)), (x, ax.y(q1))], fill=_INK)
        ax.draw.line([(x, ax.y(q3)), (x, ax.y(hi))], fill=_INK)
        for end in (lo, hi):
            ax.draw.line([(x - half / 2, ax.y(end)), (x + half / 2, ax.y(end))], fill=_INK)
        ax.draw.rectangle([x - half, ax.y(q3), x + half, ax.y(q1)], fill=color, outline=_INK)
        ax.draw.line([(x - half, ax.y(med)), (x + half, ax.y(med))], fill=_INK, width=3)
        m = ax.y(float(v.mean()))
        ax.draw.polygon([(x, m - 4), (x + 4, m), (x, m + 4), (x - 4, m)], fill=_PAPER, outline=_INK)
        for out in v[(v < lo) | (v > hi)]:
            ax.draw.ellipse([x - 2, ax.y(out) - 2, x + 2, ax.y(out) + 2], outline=_INK)
    return ax.picture()


def line_plot(x: Sequence[float], series: Mapping[str, Sequence[float]], title: str, x_label: str, y_label: str,
              low: float = 0.0, high: float = 1.0, width: int = 640, height: int = 400) -> np.ndarray:
    """Curves sharing the x values ``x`` (marked at each point), a legend in the top-left corner, or the
    bottom-left one when the curves start in the upper half."""
    ax = _Axes(width, height, low, high, title, y_label)
    x = np.asarray(x, float)
    span = (x.max() - x.min()) or 1.0

    def px(v):
        return ax.left + 12 + (v - x.min()) / span * (ax.right - ax.left - 24)

    for v in x:
        ax.label_below(px(v), f"{v:g}")
    ax.draw.text(((ax.left + ax.right) / 2 - 20, ax.bottom + 26), x_label, fill=_INK, font=ax.font)
    head = [b for ys in series.values() for b in list(ys)[: max(1, len(x) // 3)] if b is not None and np.isfinite(b)]
    legend_top = ax.top + 4 if not head or max(head) < (low + high) / 2 else ax.bottom - 8 - 14 * len(series)
    for i, (name, ys) in enumerate(series.items()):
        color = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        points = [(px(a), ax.y(b)) for a, b in zip(x, ys) if b is not None and np.isfinite(b)]
        if len(points) > 1:
            ax.draw.line(points, fill=color, width=2)
        for p in points:
            ax.draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=color)
        ax.draw.text((ax.left + 10, legend_top + 14 * i), name, fill=color, font=ax.font)
    return ax.picture()


def bar_plot(labels: Sequence[str], values: Sequence[float | None], errors: Sequence[float | None] | None = None,
             title: str = "", x_label: str = "", high: float = 1.0, width: int = 720) -> np.ndarray:
    """Horizontal bars (one per label, top to bottom) from 0 to ``high``, an error whisker of +-``errors``,
    the value written beside each bar; missing values leave an empty row."""
    errors = errors if errors is not None else [None] * len(labels)
    font = ImageFont.load_default()
    row, top, left = 22, 36, 16 + max([int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font))
                                        for t in labels] + [40])
    height = top + row * len(labels) + 40
    image = Image.new("RGB", (width, height), _PAPER)
    draw = ImageDraw.Draw(image)
    right = width - 70
    draw.text((left, 10), title, fill=_INK, font=font)

    def x(v):
        return left + max(0.0, min(v, high)) / high * (right - left)

    for tick in np.linspace(0, high, 6):
        draw.line([(x(tick), top - 4), (x(tick), top + row * len(labels))], fill=_GRID)
        draw.text((x(tick) - 8, top + row * len(labels) + 6), f"{tick:.3g}", fill=_INK, font=font)
    draw.text(((left + right) / 2 - 20, top + row * len(labels) + 22), x_label, fill=_INK, font=font)
    for i, (label, value, err) in enumerate(zip(labels, values, errors)):
        y = top + row * i
        draw.text((8, y + 5), label, fill=_INK, font=font)
        if value is None or not np.isfinite(value):
            continue
        color = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        draw.rectangle([x(0), y + 3, x(value), y + row - 3], fill=color, outline=_INK)
        if err:
            mid = y + row / 2
            draw.line([(x(value - err), mid), (x(value + err), mid)], fill=_INK, width=2)
        draw.text((x(min(high, value + (err or 0))) + 6, y + 5), f"{value:.3f}", fill=_INK, font=font)
    return np.asarray(image)
