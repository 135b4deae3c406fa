"""What the optimizer reads from parameter names: dotted paths, the weight-decay rule, layer ids.

**Parameter names.** Every rule here keys on a leaf's dotted path, the names of
:func:`samjax.params.flat_params` (``image_encoder.blocks.0.attn.qkv.kernel``). :func:`param_path`
makes it from a JAX tree path: dict keys, attribute names, sequence indices and flattened indices
are joined with ``"."``, and a trailing ``.value`` / ``.raw_value`` attribute (a ``nnx.Variable``
leaf) is dropped, so a nested dict, an ``nnx.State`` of Variables and the pure-array ``nnx.State``
that ``nnx.Optimizer.update`` passes all give the same names.

**Weight-decay rule** (:func:`no_decay`). A leaf is decayed iff ``ndim >= 2`` and its name is none
of the excluded names below. Its name is the last path segment that is not an integer
(``prompt_encoder.point_embeddings.0`` is named ``point_embeddings``). Excluded:

- ``bias``, ``scale``, ``embedding``, names ending in ``_bias``, ``_biases`` or ``_scale``
  (biases, LayerNorm and batch-norm scales, TinyViT's ``attention_biases`` table);
- names containing ``pos_embed`` or starting with ``rel_pos`` or ``positional``
  (``pos_embed``, ``rel_pos_h/w``, the prompt encoder's ``positional_encoding_gaussian_matrix``);
- names ending in ``_embed``, ``_embeds``, ``embedding``, ``embeddings``, ``token`` or ``tokens``
  (``no_mask_embed``, ``not_a_point_embed``, ``point_embeddings``, ``iou_token``, ``mask_tokens``).

Kernels are named ``kernel`` (the patch embedding's too, so it is decayed), LoRA matrices and
adapter kernels have ``ndim >= 2``: all decayed. Every 1-D leaf is not.

**Layer ids** (:func:`layer_id`), for ``num_layers`` encoder blocks. Only the path after an
``image_encoder`` segment counts (any prefix before it is allowed); a path without one gets
``num_layers + 1``.

- SAM's ViT: ``patch_embed.*`` and ``pos_embed`` -> 0; ``blocks.{i}.*`` -> ``i + 1`` (LoRA and adapter
  parameters inside a block included); the neck and everything else -> ``num_layers + 1``.
- MobileSAM's TinyViT (``samjax/modeling/tiny_vit.py``): the stem ``patch_embed_conv{1,2}.*`` -> 0; the
  block ``layers.{s}.{j}.*`` (``layers.{s}.blocks.{j}`` is accepted too) has the flat index
  ``k = sum(stage_depths[:s]) + j`` and id ``k + 1`` (stage 0's MBConv blocks count as blocks);
  ``downsamples.{s}.*``, the patch merging after stage ``s``, shares the id of that stage's last block,
  ``sum(stage_depths[:s + 1])``; the neck -> ``num_layers + 1``. ``num_layers = sum(stage_depths)``.
- The prompt encoder, the mask decoder and anything outside the encoder -> ``num_layers + 1``.

A parameter's lr is multiplied by ``layer_decay ** (num_layers + 1 - layer_id)``: 1 for the decoder,
``layer_decay`` for the last block, ``layer_decay ** (num_layers + 1)`` for the patch embedding.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

KeyPath = tuple[Any, ...]
PathFn = Callable[[KeyPath], str]
LayerIdFn = Callable[..., int]

MOBILE_SAM_STAGE_DEPTHS = (2, 2, 6, 2)

_VARIABLE_ATTRS = ("value", "raw_value")


# ----------------------------------------------------------------------------------------------
# Parameter names


def param_path(path: KeyPath) -> str:
    """A JAX tree path as a dotted name; a trailing Variable ``.value`` is dropped (see module doc)."""
    parts = list(path)
    if parts and isinstance(parts[-1], jax.tree_util.GetAttrKey) and parts[-1].name in _VARIABLE_ATTRS:
        parts = parts[:-1]
    names = []
    for key in parts:
        if isinstance(key, jax.tree_util.DictKey):
            names.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            names.append(str(key.name))
        elif isinstance(key, jax.tree_util.SequenceKey):
            names.append(str(key.idx))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            names.append(str(key.key))
        else:  # a custom key: its own str, without brackets and leading dots
            names.append(str(key).strip(".[]'\""))
    return ".".join(names)


def named_leaves(tree: Any, path_fn: PathFn = param_path) -> list[tuple[str, Any]]:
    """``[(dotted name, leaf)]`` of a pytree, in flattening order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_fn(p), leaf) for p, leaf in leaves]


def _segments(path: str) -> list[str]:
    return [s for s in path.split(".") if s]


def _leaf_name(path: str) -> str:
    """The last path segment that is not an integer index."""
    for seg in reversed(_segments(path)):
        if not seg.isdigit():
            return seg
    return ""


# ----------------------------------------------------------------------------------------------
# Weight-decay mask

_NO_DECAY_NAMES = {"bias", "scale", "embedding"}
_NO_DECAY_SUFFIXES = ("_bias", "_biases", "_scale", "_embed", "_embeds", "embedding", "embeddings", "token", "tokens")
_NO_DECAY_PREFIXES = ("rel_pos", "positional")


def no_decay(path: str) -> bool:
    """True for the names that are never decayed whatever their rank (see the module docstring)."""
    name = _leaf_name(path)
    return (
        name in _NO_DECAY_NAMES
        or name.endswith(_NO_DECAY_SUFFIXES)
        or name.startswith(_NO_DECAY_PREFIXES)
        or "pos_embed" in name
    )


def decays(path: str, ndim: int) -> bool:
    """Whether AdamW decays the leaf named ``path`` of rank ``ndim``: ``ndim >= 2 and not no_decay``."""
    return ndim >= 2 and not no_decay(path)


def weight_decay_mask(params_tree: Any, *, path_fn: PathFn = param_path) -> Any:
    """A tree of the same structure as ``params_tree`` with a Python bool per leaf (True: decay)."""
    return jax.tree_util.tree_map_with_path(lambda p, x: decays(path_fn(p), _ndim(x)), params_tree)


def _ndim(x: Any) -> int:
    """Rank of an array, a ``jax.ShapeDtypeStruct`` or anything ``np.ndim`` understands."""
    ndim = getattr(x, "ndim", None)
    return int(ndim) if ndim is not None else int(np.ndim(x))


# ----------------------------------------------------------------------------------------------
# Layer-wise lr decay

_INT = re.compile(r"^\d+$")


def _encoder_rest(path: str) -> list[str] | None:
    segs = _segments(path)
    if "image_encoder" not in segs:
        return None
    return segs[segs.index("image_encoder") + 1:]


def _tiny_block(rest: list[str]) -> tuple[int, int] | None:
    """``(stage, j)`` of ``layers.{s}.{j}`` / ``layers.{s}.blocks.{j}``, else None."""
    if len(rest) >= 3 and rest[0] == "layers" and _INT.match(rest[1]):
        if _INT.match(rest[2]):
            return int(rest[1]), int(rest[2])
        if rest[2] == "blocks" and len(rest) >= 4 and _INT.match(rest[3]):
            return int(rest[1]), int(rest[3])
    return None


def layer_id(path: str, num_layers: int, stage_depths: Sequence[int] | None = None) -> int:
    """The layer index of the parameter ``path`` for layer-wise lr decay (rules in the module doc).

    Args:
      path: dotted parameter name, e.g. ``image_encoder.blocks.3.mlp.lin1.kernel``.
      num_layers: the encoder's number of blocks.
      stage_depths: TinyViT's blocks per stage (needed only for TinyViT paths; MobileSAM's
        ``(2, 2, 6, 2)`` when None). Their sum must be ``num_layers``.

    Raises:
      ValueError: a block index beyond ``num_layers``, or stage depths that do not fit.
    """
    top = num_layers + 1
    rest = _encoder_rest(path)
    if not rest:
        return top
    head = rest[0]
    if head.startswith("patch_embed") or head.startswith("pos_embed"):
        return 0
    if head == "blocks" and len(rest) > 1 and _INT.match(rest[1]):
        i = int(rest[1])
        if i >= num_layers:
            raise ValueError(f"{path}: block {i} is beyond num_layers={num_layers}")
        return i + 1
    tiny = _tiny_block(rest)
    is_down = head == "downsamples" and len(rest) > 1 and _INT.match(rest[1])
    if tiny is None and not is_down:
        return top
    depths = tuple(MOBILE_SAM_STAGE_DEPTHS if stage_depths is None else stage_depths)
    if sum(depths) != num_layers:
        raise ValueError(f"{path}: TinyViT stage depths {depths} do not add up to num_layers={num_layers}")
    if tiny is not None:
        stage, j = tiny
        if stage >= len(depths) or j >= depths[stage]:
            raise ValueError(f"{path}: block {j} of stage {stage} is not in stage depths {depths}")
        return sum(depths[:stage]) + j + 1
    stage = int(rest[1])
    if stage >= len(depths):
        raise ValueError(f"{path}: downsample {stage} is not in stage depths {depths}")
    return sum(depths[: stage + 1])


def encoder_layout(paths: Sequence[str]) -> tuple[int, tuple[int, ...] | None]:
    """``(num_layers, stage_depths)`` inferred from parameter names (``stage_depths`` None for a ViT).

    ViT: the largest ``image_encoder.blocks.{i}`` plus one. TinyViT: per stage the largest block index
    plus one. Both assume the last block (of every stage) is among ``paths``; when only part of the
    encoder is trained, give ``num_layers`` / ``stage_depths`` in the config instead.
    """
    vit_max = -1
    tiny: dict[int, int] = {}
    for path in paths:
        rest = _encoder_rest(path)
        if not rest:
            continue
        if rest[0] == "blocks" and len(rest) > 1 and _INT.match(rest[1]):
            vit_max = max(vit_max, int(rest[1]))
        block = _tiny_block(rest)
        if block is not None:
            tiny[block[0]] = max(tiny.get(block[0], -1), block[1] + 1)
    if tiny:
        if vit_max >= 0:
            raise ValueError("the parameters hold both ViT blocks and TinyViT stages")
        if sorted(tiny) != list(range(len(tiny))):
            raise ValueError(
                f"TinyViT stages {sorted(tiny)} are not contiguous from 0; set optim.stage_depths in the config"
            )
        depths = tuple(tiny[s] for s in range(len(tiny)))
        return sum(depths), depths
    return vit_max + 1, None


def layer_scale(path: str, layer_decay: float, num_layers: int, stage_depths: Sequence[int] | None = None,
                *, layer_id_fn: LayerIdFn = layer_id) -> float:
    """``layer_decay ** (num_layers + 1 - layer_id(path))``."""
    if layer_decay == 1.0:
        return 1.0
    return float(layer_decay) ** (num_layers + 1 - layer_id_fn(path, num_layers, stage_depths))


def layer_decay_scales(
    params_tree: Any,
    layer_decay: float,
    num_layers: int | None = None,
    stage_depths: Sequence[int] | None = None,
    *,
    path_fn: PathFn = param_path,
    layer_id_fn: LayerIdFn = layer_id,
) -> Any:
    """A tree like ``params_tree`` holding each leaf's lr multiplier (layout inferred when not given)."""
    num_layers, stage_depths = layer_layout(params_tree, path_fn, num_layers, stage_depths)
    return jax.tree_util.tree_map_with_path(
        lambda p, _: layer_scale(path_fn(p), layer_decay, num_layers, stage_depths, layer_id_fn=layer_id_fn),
        params_tree,
    )


def layer_layout(tree: Any, path_fn: PathFn, num_layers: int | None, stage_depths: Sequence[int] | None
            ) -> tuple[int, tuple[int, ...] | None]:
    """The given ``num_layers`` / ``stage_depths``, each inferred from ``tree``'s names when None."""
    if num_layers is None or stage_depths is None:
        n, d = encoder_layout([name for name, _ in named_leaves(tree, path_fn)])
        num_layers = n if num_layers is None else num_layers
        stage_depths = d if stage_depths is None else stage_depths
    return int(num_layers), (None if stage_depths is None else tuple(int(x) for x in stage_depths))


def scale_by_layer_decay(scale_fn: Callable[[str], float], *, path_fn: PathFn = param_path
                         ) -> optax.GradientTransformation:
    """Multiplies each update leaf by ``scale_fn(its dotted name)``; stateless.

    The scales are Python floats computed from the names while tracing (constants in the compiled
    step). They are looked up by name rather than held as a tree because ``nnx.Optimizer`` calls
    ``init`` with a tree of Variables and ``update`` with a tree of plain arrays.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params

        def scale(path, u):
            s = scale_fn(path_fn(path))
            return u if s == 1.0 or u is None else u * jnp.asarray(s, u.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(init_fn, update_fn)
