"""The ViT's blocks as one ``lax.scan`` over their repeating groups, each block rematerialized.

Every SAM ViT repeats one group of blocks four times: ViT-B ``[w, w, g] x 4``, ViT-L ``[w x 5, g] x 4``,
ViT-H ``[w x 7, g] x 4`` (``w`` windowed, ``g`` global attention). With rematerialization on, the
encoder runs the groups as a scan: the parameters of the four copies of each group position are
stacked on the fly (their names and layout do not change), and the scan body runs one group, each
block under ``jax.checkpoint`` (a run of identical blocks inside the group as an inner scan). A scan fixes the order of the backward pass (group by group, each
recomputed just before its gradient), so only the groups' inputs are kept; unrolled checkpoints
leave the order to the compiler, and XLA:CPU, for one, hoists the recomputation and keeps as much as
without remat (BENCHMARKS.md, "Memory at scale"). It also compiles one group instead of four.

Groups must be identical in structure: same block kinds, same PEFT, same stochastic-depth rate
(drop path's per-block rates differ, so with drop path on the blocks run unrolled).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def group_period(blocks: Sequence[nnx.Module]) -> int | None:
    """The smallest ``p`` such that block ``i`` has the structure of block ``i % p`` for all ``i``, or None.

    Only a period that gives at least 2 groups counts.
    """
    graphs = [nnx.graphdef(block) for block in blocks]
    n = len(graphs)
    for p in range(1, n // 2 + 1):
        if n % p == 0 and all(graphs[i] == graphs[i % p] for i in range(n)):
            return p
    return None


def scan_blocks(blocks: Sequence[nnx.Module], x: jax.Array, keys: Sequence[jax.Array | None], period: int,
                policy: Callable | str | None = None) -> jax.Array:
    """``x`` through ``blocks`` (in groups of ``period``) as one scan; each block rematerialized.

    ``keys`` holds one drop-path key per block (all None at inference); same result as calling the
    blocks in order.
    """
    if isinstance(policy, str):
        policy = getattr(jax.checkpoint_policies, policy)
    graphs = [nnx.graphdef(block) for block in blocks[:period]]
    states = [nnx.state(block) for block in blocks]
    groups = len(blocks) // period
    stacked = [jax.tree.map(lambda *xs: jnp.stack(xs), *states[j::period]) for j in range(period)]
    with_keys = keys[0] is not None
    key_stack = jnp.stack(list(keys)).reshape(groups, period, *keys[0].shape) if with_keys else None

    def run(graph):
        def one(state, x, key):
            block = nnx.merge(graph, state)
            return block(x) if key is None else block(x, key=key)

        return jax.checkpoint(one, policy=policy)

    # Inside a group, a run of identical blocks (ViT-H: 7 windowed ones) is an inner scan of its own.
    spans, start = [], 0
    for j in range(1, period + 1):
        if j == period or graphs[j] != graphs[start]:
            spans.append((start, j))
            start = j
    runs = [run(graphs[a]) for a, _ in spans]

    def body(x, xs):
        group_states, group_keys = xs
        for (a, b), one in zip(spans, runs):
            if b - a == 1:
                x = one(group_states[a], x, None if group_keys is None else group_keys[a])
                continue
            inner = jax.tree.map(lambda *xs: jnp.stack(xs), *group_states[a:b])
            inner_keys = None if group_keys is None else group_keys[a:b]
            x, _ = jax.lax.scan(lambda x, ys, one=one: (one(ys[0], x, ys[1]), None), x, (inner, inner_keys))
        return x, None

    x, _ = jax.lax.scan(body, x, (stacked, key_stack))
    return x
