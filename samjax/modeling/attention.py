"""The image encoder's attention, with MViTv2's decomposed relative positions, in three equivalent forms.

Every form computes, per head, ``softmax(q k^T * scale + B) v`` where the bias ``B[i, j] = rel_h[i,
row(j)] + rel_w[i, col(j)]`` comes from the *unscaled* query (Meta's ``add_decomposed_rel_pos``):

- ``reference``: the textbook form, the whole ``(B, heads, L, L)`` score tensor in float32 at once
  (Meta's computation step for step). At 1024 px a global block of ViT-B holds 805 MB of scores per
  image, and on a CPU every pass over them is bound by memory bandwidth.
- ``blocked``: the same arithmetic one block at a time, ``lax.map`` over images (windows) and, when
  a sequence is longer than ``chunk`` (global blocks), over heads and query chunks, so a block's
  scores stay in cache and never exist whole; under ``jax.grad`` each chunk is recomputed in the
  backward pass (``jax.checkpoint``) instead of stored, as flash attention does.
- ``fused``: ``jax.nn.dot_product_attention`` (cuDNN's fused kernel on NVIDIA GPUs for bf16/fp16,
  XLA elsewhere). The bias is folded into the dot product instead of materialized: queries get
  ``rel_h`` and ``rel_w`` appended, keys the one-hot codes of their row and column, so
  ``q' k'^T = q k^T * scale + B`` exactly (head dim ``d + h + w``; values are zero-padded to it).

``impl="auto"`` picks per call: on CPU ``blocked`` once the scores of a call pass ``BLOCKED_BYTES``,
else ``reference``; on accelerators ``fused`` for 16-bit compute, else ``reference``. All forms agree
within float32 rounding (tested at 64x64 tokens); the CPU profile behind the choice is in BENCHMARKS.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "reference", "blocked", "fused")
BLOCKED_BYTES = 16 * 2**20  # above this many bytes of float32 scores per call, CPU attention goes blocked
CHUNK = 512  # queries per block in long sequences: 12 heads x 512 x 4096 floats = 8 MB at ViT-B 1024


def rel_pos_terms(q: jax.Array, rh: jax.Array, rw: jax.Array, grid: tuple[int, int]):
    """``rel_h (B, n, L, kh)`` and ``rel_w (B, n, L, kw)`` of unscaled ``q (B, n, L, d)`` on an ``(h, w)`` grid.

    ``rh (h, kh, d)``, ``rw (w, kw, d)`` are the per-pair tables of ``image_encoder.get_rel_pos`` (the
    first ``h`` and ``w`` rows of them when the queries are a corner of the ``(kh, kw)`` key grid).
    """
    b, n, length, d = q.shape
    r_q = q.reshape(b, n, grid[0], grid[1], d)
    rel_h = jnp.einsum("bnhwc,hkc->bnhwk", r_q, rh.astype(q.dtype)).reshape(b, n, length, rh.shape[1])
    rel_w = jnp.einsum("bnhwc,wkc->bnhwk", r_q, rw.astype(q.dtype)).reshape(b, n, length, rw.shape[1])
    return rel_h, rel_w


def _scores(q, k, rel_h, rel_w, scale, grid):
    """``(..., Lq, L)`` float32 logits of one block: scaled dot products plus the decomposed bias."""
    s = jnp.einsum("...qd,...kd->...qk", q * scale, k)
    if rel_h is not None:
        lq = s.shape[-2]
        s = s.reshape(*s.shape[:-1], grid[0], grid[1]) + rel_h[..., :, None] + rel_w[..., None, :]
        s = s.reshape(*s.shape[:-3], lq, grid[0] * grid[1])
    return s.astype(jnp.float32)


def _attend(q, k, v, rel_h, rel_w, scale, grid):
    p = jax.nn.softmax(_scores(q, k, rel_h, rel_w, scale, grid), axis=-1).astype(v.dtype)
    return jnp.einsum("...qk,...kd->...qd", p, v)


def reference(q, k, v, rel_h, rel_w, scale: float, grid):
    """``(B, n, L, d)`` -> ``(B, n, L, d)`` with every score at once (see the module docstring)."""
    return _attend(q, k, v, rel_h, rel_w, scale, grid)


def _chunk_size(length: int, chunk: int) -> int:
    """The largest divisor of ``length`` that is at most ``chunk``."""
    return max(c for c in range(1, min(chunk, length) + 1) if length % c == 0)


def blocked(q, k, v, rel_h, rel_w, scale: float, grid, chunk: int = CHUNK):
    """``reference`` one block at a time (see the module docstring)."""
    b, n, length, d = q.shape
    rel = rel_h is not None
    if length <= chunk:  # short sequences (windows): all heads of one image at a time
        def one(xs):
            qi, ki, vi, hi, wi = xs
            return _attend(qi, ki, vi, hi if rel else None, wi, scale, grid)

        dummy = jnp.zeros((b, 0), q.dtype)
        return jax.lax.map(one, (q, k, v, rel_h if rel else dummy, rel_w if rel else dummy))

    c = _chunk_size(length, chunk)
    chunks = length // c
    flat = lambda x: x.reshape(b * n, *x.shape[2:])  # noqa: E731
    qs = flat(q).reshape(b * n, chunks, c, d)
    hs = flat(rel_h).reshape(b * n, chunks, c, -1) if rel else jnp.zeros((b * n, chunks, 0), q.dtype)
    ws = flat(rel_w).reshape(b * n, chunks, c, -1) if rel else jnp.zeros((b * n, chunks, 0), q.dtype)

    @jax.checkpoint
    def block(qc, hc, wc, kh, vh):
        return _attend(qc, kh, vh, hc if rel else None, wc, scale, grid)

    def head(xs):
        qh, hh, wh, kh, vh = xs
        return jax.lax.map(lambda ys: block(*ys, kh, vh), (qh, hh, wh))

    out = jax.lax.map(head, (qs, hs, ws, flat(k), flat(v)))
    return out.reshape(b, n, length, d)


def fused(q, k, v, rel_h, rel_w, scale: float, grid, implementation: str | None = None):
    """``jax.nn.dot_product_attention`` with the bias folded into the dot product (module docstring)."""
    b, n, _, d = q.shape
    length = k.shape[2]
    q = q * scale
    if rel_h is not None:
        rows = jax.nn.one_hot(jnp.arange(length) // grid[1], grid[0], dtype=k.dtype)
        cols = jax.nn.one_hot(jnp.arange(length) % grid[1], grid[1], dtype=k.dtype)
        codes = jnp.broadcast_to(jnp.concatenate([rows, cols], -1), (b, n, length, grid[0] + grid[1]))
        q = jnp.concatenate([q, rel_h.astype(q.dtype), rel_w.astype(q.dtype)], -1)
        k = jnp.concatenate([k, codes], -1)
    width = q.shape[-1]
    vp = jnp.pad(v, [(0, 0)] * 3 + [(0, width - d)]) if width > d else v
    t = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731  (B, L, n, D): the layout jax.nn expects
    out = jax.nn.dot_product_attention(t(q), t(k), t(vp), scale=1.0, implementation=implementation)
    return t(out)[..., :d]


def choose(impl: str, shape: tuple[int, ...], dtype, platform: str | None = None, keys: int | None = None) -> str:
    """The form ``impl="auto"`` stands for on ``platform`` for q of ``shape`` and ``keys`` keys (default:
    as many as queries); see the module docstring."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if impl != "auto":
        return impl
    platform = platform or jax.default_backend()
    b, n, length, _ = shape
    if platform == "cpu":
        return "blocked" if 4 * b * n * length * (keys or length) > BLOCKED_BYTES else "reference"
    return "fused" if jnp.dtype(dtype).itemsize == 2 else "reference"


def attention(q, k, v, rel_h, rel_w, scale: float, grid, impl: str = "auto", chunk: int = CHUNK):
    """Attention of ``q (B, n, Lq, d)`` to ``k, v (B, n, L, d)`` on an ``(h, w)`` key grid (``L = h w``) with
    the decomposed bias terms ``rel_h, rel_w`` (:func:`rel_pos_terms`, or None for none) in the form
    ``impl`` names; ``Lq = L`` is self-attention."""
    form = choose(impl, q.shape, q.dtype, keys=k.shape[2])
    if form == "reference":
        return reference(q, k, v, rel_h, rel_w, scale, grid)
    if form == "blocked":
        return blocked(q, k, v, rel_h, rel_w, scale, grid, chunk)
    return fused(q, k, v, rel_h, rel_w, scale, grid)
