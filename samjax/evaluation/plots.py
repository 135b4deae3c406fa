"""Charts of evaluation results drawn with matplotlib: box plots of scores per class, curves, bars and grouped bars.

Every function draws on its own ``Figure`` with the Agg canvas (never pyplot's global state), so it is
thread-safe and needs no display, and returns an ``(height, width, 3)`` uint8 RGB picture of exactly the
asked size, to save with ``samjax.utils.overlay.save_png`` like the overlays. Series take the colours of
``samjax.utils.overlay.PALETTE`` so a class looks the same in a chart and an overlay. matplotlib is imported on
first use: this module is imported by the report writers, and ``import samjax`` should stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from samjax.utils.overlay import PALETTE

_DPI = 100
_CHAR_PX = 6.5  # about the width of one character of a 9 pt tick label at 100 dpi


def _color(i: int) -> tuple[float, float, float]:
    return tuple(float(c) / 255.0 for c in PALETTE[i % len(PALETTE)])


def _finite(v) -> bool:
    return v is not None and bool(np.isfinite(v))


def _axes(width: int, height: int, title: str, x_label: str = "", y_label: str = ""):
    """A figure of ``width x height`` pixels with one axes, a grid behind the data, title and labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(x_label, fontsize=9)
    ax.set_ylabel(y_label, fontsize=9)
    ax.tick_params(labelsize=9)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _x_labels(ax, labels: Sequence[str], axes_width: float) -> None:
    """Category labels under the x axis, slanted when they would overlap side by side."""
    ax.set_xticks(range(len(labels)))
    slot = axes_width / max(1, len(labels))
    slant = max([len(t) for t in labels] + [0]) * _CHAR_PX > 0.9 * slot
    ax.set_xticklabels(labels, rotation=30 if slant else 0, ha="right" if slant else "center",
                       rotation_mode="anchor" if slant else "default")


def _picture(fig, width: int, height: int) -> np.ndarray:
    """The rendered figure as RGB uint8, cropped or padded with white to exactly ``height x width``."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    out = np.full((height, width, 3), 255, np.uint8)
    h, w = min(height, rgb.shape[0]), min(width, rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def box_plot(groups: Mapping[str, Sequence[float]], title: str, y_label: str, low: float = 0.0,
             high: float | None = None, width: int = 640, height: int = 400) -> np.ndarray:
    """One box per group: quartiles, median (thick line), mean (diamond), whiskers to the furthest value
    within 1.5 IQR, points beyond them. None and non-finite values are skipped; an empty group keeps its
    labelled slot. ``high`` defaults to the largest value (1.0 suits Dice)."""
    clean = {k: np.asarray([v for v in vals if _finite(v)], float) for k, vals in groups.items()}
    top = high if high is not None else max([v.max() for v in clean.values() if v.size] + [low + 1.0])
    fig, ax = _axes(width, height, title, y_label=y_label)
    ax.grid(axis="y", color="0.88")
    filled = [(i, v) for i, v in enumerate(clean.values()) if v.size]
    if filled:
        parts = ax.boxplot([v for _, v in filled], positions=[i for i, _ in filled], whis=1.5, widths=0.5,
                           showmeans=True, patch_artist=True,
                           medianprops=dict(color="0.15", linewidth=2.5),
                           meanprops=dict(marker="D", markerfacecolor="white", markeredgecolor="0.15", markersize=6),
                           flierprops=dict(marker="o", markerfacecolor="none", markeredgecolor="0.15", markersize=4))
        for (i, _), box in zip(filled, parts["boxes"]):
            box.set(facecolor=_color(i), edgecolor="0.15")
    _x_labels(ax, [f"{name} (n={v.size})" for name, v in clean.items()], width - 80)
    ax.set_xlim(-0.6, max(1, len(clean)) - 0.4)
    ax.set_ylim(low, top if top > low else low + 1.0)
    return _picture(fig, width, height)


def line_plot(x: Sequence[float], series: Mapping[str, Sequence[float]], title: str, x_label: str, y_label: str,
              low: float = 0.0, high: float = 1.0, width: int = 640, height: int = 400) -> np.ndarray:
    """Curves sharing the x values ``x``, each marked at every point (None values leave a gap), a legend
    where it hides the fewest points, the y axis from ``low`` to ``high``."""
    x = np.asarray(list(x), float)
    fig, ax = _axes(width, height, title, x_label, y_label)
    ax.grid(color="0.88")
    for i, (name, ys) in enumerate(series.items()):
        y = np.array([v if _finite(v) else np.nan for v in ys], float)
        ax.plot(x[: len(y)], y, marker="o", markersize=4, linewidth=2, color=_color(i), label=name)
    if len(x) and len(x) <= 20:
        ax.set_xticks(x)
    ax.set_ylim(low, high if high > low else low + 1.0)
    if series:
        ax.legend(loc="best", fontsize=9, framealpha=0.9)
    return _picture(fig, width, height)


def bar_plot(labels: Sequence[str], values: Sequence[float | None], errors: Sequence[float | None] | None = None,
             title: str = "", x_label: str = "", high: float = 1.0, width: int = 720) -> np.ndarray:
    """Horizontal bars (one per label, top to bottom) from 0 to ``high``, an error bar of +-``errors``, the
    value written beside each bar; a missing value leaves its row empty but for a grey "no value". The
    height grows with the number of labels (24 pixels a row)."""
    errors = list(errors) if errors is not None else [None] * len(labels)
    height = 96 + 24 * max(1, len(labels))
    fig, ax = _axes(width, height, title, x_label=x_label)
    ax.grid(axis="x", color="0.88")
    right = high
    for i, (value, err) in enumerate(zip(values, errors)):
        if not _finite(value):
            ax.text(0.01 * high, i, "no value", va="center", fontsize=8, color="0.55", style="italic")
            continue
        xerr = err if _finite(err) and err else None
        ax.barh(i, value, height=0.7, color=_color(i), edgecolor="0.15", linewidth=0.6,
                xerr=xerr, error_kw=dict(ecolor="0.15", capsize=3, linewidth=1.2))
        end = value + (xerr or 0.0)
        ax.text(end + 0.01 * high, i, f"{value:.3f}", va="center", fontsize=8)
        right = max(right, end)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # the first label on top
    ax.set_xlim(0, right + 0.1 * high)  # room for the value written beside the longest bar
    ax.set_xticks(np.linspace(0, high, 6))
    return _picture(fig, width, height)


def grouped_bar_plot(groups: Sequence[str], series: Sequence[str], values: Mapping[str, Sequence[float | None]],
                     errors: Mapping[str, Sequence[float | None]] | None = None, title: str = "", y_label: str = "",
                     low: float = 0.0, high: float | None = None, width: int = 960, height: int = 440) -> np.ndarray:
    """Vertical bars in groups: one group per entry of ``groups`` (G names along the x axis), inside it one
    bar per entry of ``series`` (S names, in the legend and a colour each).

    ``values[s]`` is a sequence of G heights for series ``s`` (None or missing: no bar); ``errors[s]``
    alike, standard deviations drawn as +-error bars. The y axis runs from ``low`` to ``high`` (default the
    largest value plus its error). Returns an ``(height, width, 3)`` uint8 picture.
    """
    errors = errors or {}
    fig, ax = _axes(width, height, title, y_label=y_label)
    ax.grid(axis="y", color="0.88")
    step = 0.8 / max(1, len(series))
    tallest = low
    for j, name in enumerate(series):
        vals, errs = list(values.get(name, [])), list(errors.get(name) or [])
        xs, hs, es = [], [], []
        for i in range(len(groups)):
            v = vals[i] if i < len(vals) else None
            if not _finite(v):
                continue
            e = errs[i] if i < len(errs) and _finite(errs[i]) else 0.0
            xs.append(i - 0.4 + step * (j + 0.5))
            hs.append(v)
            es.append(e)
            tallest = max(tallest, v + e)
        ax.bar(xs, hs, width=step * 0.92, color=_color(j), edgecolor="0.15", linewidth=0.6,
               yerr=es if any(es) else None, error_kw=dict(ecolor="0.15", capsize=2, linewidth=1))
    _x_labels(ax, list(groups), width - 160)
    ax.set_xlim(-0.6, max(1, len(groups)) - 0.4)
    top = high if high is not None else tallest
    ax.set_ylim(low, top if top > low else low + 1.0)
    if series:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=_color(j), edgecolor="0.15", linewidth=0.6, label=n) for j, n in enumerate(series)]
        fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    return _picture(fig, width, height)
