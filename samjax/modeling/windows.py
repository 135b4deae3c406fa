"""Windowed attention's geometry: cutting a token grid into windows, and attention inside them.

SAM's windowed blocks zero-pad the ``(H, W)`` token grid to multiples of the window side, attend
inside each window, and crop the padding away. Padded tokens take part as keys and values (a zero
token projects to ``qkv``'s bias), but their own outputs are thrown away. :func:`window_attention`
computes exactly the outputs that are kept: the ``qkv`` projection runs on the real tokens only (the
padding gets the bias), and windows on the bottom and right edges, grouped by shape, compute only
their real queries against all of their keys. At 256 px (a 16x16 grid in 14x14 windows) that is
256 of 784 queries; at 1024 px, 4096 of 4900. Tiny models (tests) skip the grouping, which costs
compile time (each group is its own attention program) and saves them nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

GROUP_EDGES_FLOPS = 1e8  # ViT-B: 0.6 GFLOP at 256 px, batch 2; 0.5 GFLOP at 1024 px, batch 1


def window_partition(x: jax.Array, window_size: int, fill: jax.Array | None = None
                     ) -> tuple[jax.Array, tuple[int, int]]:
    """Pads ``(B, H, W, C)`` to multiples of ``window_size`` and cuts it into windows.

    The padding is zeros, or the ``(C,)`` vector ``fill``. Returns windows
    ``(B * num_windows, window_size, window_size, C)`` and the padded ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        if fill is not None:
            inside = (jnp.arange(h + pad_h)[:, None] < h) & (jnp.arange(w + pad_w)[None, :] < w)
            x = jnp.where(inside[None, :, :, None], x, fill.astype(x.dtype))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: jax.Array, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> jax.Array:
    """Inverse of :func:`window_partition`: stitches windows back and drops the padding."""
    (hp, wp), (h, w) = pad_hw, hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.reshape(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :]


def _spans(size: int, window: int) -> list[tuple[int, int, int]]:
    """Windows along one axis grouped by how many real positions they hold: ``(first, stop, real)``."""
    full, rest = divmod(size, window)
    spans = [(0, full, window)] if full else []
    return spans + [(full, full + 1, rest)] if rest else spans


def edge_work(shape: tuple[int, ...], window_size: int) -> float:
    """FLOPs of the padded queries' scores and outputs, which grouping the edge windows saves."""
    b, h, w, c3 = shape
    hp, wp = -(-h // window_size) * window_size, -(-w // window_size) * window_size
    return 4.0 * b * (hp * wp - h * w) * window_size**2 * (c3 // 3)


def window_attention(attend, qkv: jax.Array, window_size: int, fill: jax.Array | None,
                     group_edges: bool | None = None) -> jax.Array:
    """The kept outputs of windowed attention, ``(B, H, W, C)``, from projected ``qkv (B, H, W, 3C)``.

    ``attend(windows, queries)`` maps windows of ``qkv (N, ws, ws, 3C)`` to the outputs ``(N, qh, qw, C)``
    of their top-left ``queries = (qh, qw)`` tokens, attending to all ``ws x ws`` keys; ``fill`` is
    what a padded token's ``qkv`` is (see the module docstring). ``group_edges`` (default: when the
    padded queries' work passes ``GROUP_EDGES_FLOPS``) computes the edge windows apart; each group is
    another attention program to compile, which a tiny model pays for and does not earn back.
    """
    b, h, w, c3 = qkv.shape
    ws = window_size
    windows, (hp, wp) = window_partition(qkv, ws, fill)
    if group_edges is None:
        group_edges = edge_work(qkv.shape, ws) >= GROUP_EDGES_FLOPS
    if not group_edges:
        return window_unpartition(attend(windows, (ws, ws)), ws, (hp, wp), (h, w))
    windows = windows.reshape(b, hp // ws, wp // ws, ws, ws, c3)
    rows = []
    for r0, r1, qh in _spans(h, ws):
        cols = []
        for c0, c1, qw in _spans(w, ws):
            group = windows[:, r0:r1, c0:c1]
            nr, nc = r1 - r0, c1 - c0
            out = attend(group.reshape(b * nr * nc, ws, ws, c3), (qh, qw))
            out = out.reshape(b, nr, nc, qh, qw, -1).transpose(0, 1, 3, 2, 4, 5)
            cols.append(out.reshape(b, nr * qh, nc * qw, -1))
        rows.append(jnp.concatenate(cols, axis=2) if len(cols) > 1 else cols[0])
    return jnp.concatenate(rows, axis=1) if len(rows) > 1 else rows[0]
