"""The explicit name map between Meta's ``segment_anything`` state dicts and samjax parameters.

Each row is ``(meta name, samjax name, layout)``; ``layout`` says how the tensor is laid out in
each framework:

- ``copy``: same array (LayerNorm scale/bias, biases, embeddings, position tables);
- ``linear``: PyTorch ``(out, in)`` <-> samjax ``(in, out)``;
- ``conv``: PyTorch ``(out, in, kh, kw)`` <-> samjax ``(kh, kw, in, out)``;
- ``conv_transpose``: PyTorch ``(in, out, kh, kw)`` <-> samjax ``(kh, kw, in, out)``.

Conversion in either direction checks the whole table: a name the table does not expect, a name it
expects but does not find, and a shape that does not fit are each reported by name and shape.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from samjax.model_spec import SPECS, SamSpec
from samjax.errors import CheckpointError


class Row(NamedTuple):
    meta: str
    samjax: str
    layout: str


def _norm(meta: str, ours: str) -> list[tuple[str, str, str]]:
    return [(f"{meta}.weight", f"{ours}.scale", "copy"), (f"{meta}.bias", f"{ours}.bias", "copy")]


def _linear(meta: str, ours: str) -> list[tuple[str, str, str]]:
    return [(f"{meta}.weight", f"{ours}.kernel", "linear"), (f"{meta}.bias", f"{ours}.bias", "copy")]


def _attention(meta: str, ours: str) -> list[tuple[str, str, str]]:
    rows = []
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        rows += _linear(f"{meta}.{proj}", f"{ours}.{proj}")
    return rows


ENCODER_BLOCK = [
    *_norm("norm1", "norm1"),
    *_linear("attn.qkv", "attn.qkv"),
    *_linear("attn.proj", "attn.proj"),
    ("attn.rel_pos_h", "attn.rel_pos_h", "copy"),
    ("attn.rel_pos_w", "attn.rel_pos_w", "copy"),
    *_norm("norm2", "norm2"),
    *_linear("mlp.lin1", "mlp.lin1"),
    *_linear("mlp.lin2", "mlp.lin2"),
]

ENCODER_STEM = [
    ("pos_embed", "pos_embed", "copy"),
    ("patch_embed.proj.weight", "patch_embed.kernel", "conv"),
    ("patch_embed.proj.bias", "patch_embed.bias", "copy"),
]

PROMPT_ENCODER = [
    ("pe_layer.positional_encoding_gaussian_matrix", "pe_layer.positional_encoding_gaussian_matrix", "copy"),
    *[(f"point_embeddings.{i}.weight", f"point_embeddings.{i}", "copy") for i in range(4)],
    ("not_a_point_embed.weight", "not_a_point_embed", "copy"),
    ("no_mask_embed.weight", "no_mask_embed", "copy"),
    ("mask_downscaling.0.weight", "mask_conv1.kernel", "conv"),
    ("mask_downscaling.0.bias", "mask_conv1.bias", "copy"),
    *_norm("mask_downscaling.1", "mask_norm1"),
    ("mask_downscaling.3.weight", "mask_conv2.kernel", "conv"),
    ("mask_downscaling.3.bias", "mask_conv2.bias", "copy"),
    *_norm("mask_downscaling.4", "mask_norm2"),
    ("mask_downscaling.6.weight", "mask_conv3.kernel", "conv"),
    ("mask_downscaling.6.bias", "mask_conv3.bias", "copy"),
]

TWO_WAY_BLOCK = [
    *_attention("self_attn", "self_attn"),
    *_norm("norm1", "norm1"),
    *_attention("cross_attn_token_to_image", "cross_attn_token_to_image"),
    *_norm("norm2", "norm2"),
    *_linear("mlp.lin1", "mlp.lin1"),
    *_linear("mlp.lin2", "mlp.lin2"),
    *_norm("norm3", "norm3"),
    *_norm("norm4", "norm4"),
    *_attention("cross_attn_image_to_token", "cross_attn_image_to_token"),
]

MASK_DECODER_HEADS = [
    *_attention("transformer.final_attn_token_to_image", "transformer.final_attn_token_to_image"),
    *_norm("transformer.norm_final_attn", "transformer.norm_final_attn"),
    ("iou_token.weight", "iou_token", "copy"),
    ("mask_tokens.weight", "mask_tokens", "copy"),
    ("output_upscaling.0.weight", "upscale_conv1.kernel", "conv_transpose"),
    ("output_upscaling.0.bias", "upscale_conv1.bias", "copy"),
    *_norm("output_upscaling.1", "upscale_norm"),
    ("output_upscaling.3.weight", "upscale_conv2.kernel", "conv_transpose"),
    ("output_upscaling.3.bias", "upscale_conv2.bias", "copy"),
]


def _conv_bn(meta: str, ours: str) -> list[tuple[str, str, str]]:
    """MobileSAM's ``Conv2d_BN``: a bias-free conv and an unfolded batch norm."""
    return [
        (f"{meta}.c.weight", f"{ours}.c.kernel", "conv"),
        (f"{meta}.bn.weight", f"{ours}.bn_scale", "copy"),
        (f"{meta}.bn.bias", f"{ours}.bn_bias", "copy"),
        (f"{meta}.bn.running_mean", f"{ours}.bn_mean", "copy"),
        (f"{meta}.bn.running_var", f"{ours}.bn_var", "copy"),
    ]


NECK = [
    ("neck.0.weight", "neck_conv1.kernel", "conv"),
    *_norm("neck.1", "neck_norm1"),
    ("neck.2.weight", "neck_conv2.kernel", "conv"),
    *_norm("neck.3", "neck_norm2"),
]

TINY_VIT_BLOCK = [
    ("attn.attention_biases", "attn.attention_biases", "copy"),
    *_norm("attn.norm", "attn.norm"),
    *_linear("attn.qkv", "attn.qkv"),
    *_linear("attn.proj", "attn.proj"),
    *_norm("mlp.norm", "mlp.norm"),
    *_linear("mlp.fc1", "mlp.fc1"),
    *_linear("mlp.fc2", "mlp.fc2"),
    *_conv_bn("local_conv", "local_conv"),
]

MBCONV_BLOCK = [row for i in (1, 2, 3) for row in _conv_bn(f"conv{i}", f"conv{i}")]


def _tiny_vit_rows(spec: SamSpec) -> list[tuple[str, str, str]]:
    rows = [*_conv_bn("patch_embed.seq.0", "patch_embed_conv1"), *_conv_bn("patch_embed.seq.2", "patch_embed_conv2")]
    for i, depth in enumerate(spec.tiny_depths):
        block = MBCONV_BLOCK if i == 0 else TINY_VIT_BLOCK
        for j in range(depth):
            rows += [(f"layers.{i}.blocks.{j}.{m}", f"layers.{i}.{j}.{o}", lay) for m, o, lay in block]
        if i < len(spec.tiny_depths) - 1:
            rows += [(f"layers.{i}.downsample.{m}", f"downsamples.{i}.{o}", lay) for m, o, lay in MBCONV_BLOCK]
    return rows + NECK


def unused_meta_tensors(spec: SamSpec) -> dict[str, np.ndarray]:
    """Tensors of Meta-format checkpoints that SAM never reads: dropped on import, written on export.

    MobileSAM's TinyViT keeps its ImageNet head (``norm_head``, ``head``) and each batch norm's
    ``num_batches_tracked`` counter; they do not affect any output.
    """
    if spec.encoder != "tiny_vit":
        return {}
    width = spec.tiny_embed_dims[-1]
    extras = {
        "image_encoder.norm_head.weight": np.ones(width, np.float32),
        "image_encoder.norm_head.bias": np.zeros(width, np.float32),
        "image_encoder.head.weight": np.zeros((1000, width), np.float32),
        "image_encoder.head.bias": np.zeros(1000, np.float32),
    }
    for meta, _, _ in _tiny_vit_rows(spec):
        if meta.endswith(".bn.running_var"):
            extras[f"image_encoder.{meta[: -len('running_var')]}num_batches_tracked"] = np.array(0, np.int64)
    return extras


def name_table(spec: SamSpec) -> list[Row]:
    """Every parameter of ``spec`` as a (Meta name, samjax name, layout) row."""
    rows: list[Row] = []

    def add(meta_prefix: str, ours_prefix: str, block: list[tuple[str, str, str]]):
        rows.extend(Row(f"{meta_prefix}{m}", f"{ours_prefix}{o}", lay) for m, o, lay in block)

    if spec.encoder == "tiny_vit":
        add("image_encoder.", "image_encoder.", _tiny_vit_rows(spec))
    else:
        add("image_encoder.", "image_encoder.", ENCODER_STEM)
        for i in range(spec.encoder_depth):
            add(f"image_encoder.blocks.{i}.", f"image_encoder.blocks.{i}.", ENCODER_BLOCK)
        add("image_encoder.", "image_encoder.", NECK)
    add("prompt_encoder.", "prompt_encoder.", PROMPT_ENCODER)
    for i in range(spec.decoder_depth):
        add(f"mask_decoder.transformer.layers.{i}.", f"mask_decoder.transformer.layers.{i}.", TWO_WAY_BLOCK)
    add("mask_decoder.", "mask_decoder.", MASK_DECODER_HEADS)
    linear = [("weight", "kernel", "linear"), ("bias", "bias", "copy")]
    for t in range(spec.num_multimask_outputs + 1):
        for j in range(3):
            name = f"mask_decoder.output_hypernetworks_mlps.{t}.layers.{j}."
            add(name, name, linear)
    for j in range(spec.iou_head_depth):
        name = f"mask_decoder.iou_prediction_head.layers.{j}."
        add(name, name, linear)
    return rows


_TO_SAMJAX = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(2, 3, 1, 0),
    "conv_transpose": lambda a: a.transpose(2, 3, 0, 1),
}
_NDIM = {"linear": 2, "conv": 4, "conv_transpose": 4}
_TO_META = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(3, 2, 0, 1),
    "conv_transpose": lambda a: a.transpose(2, 3, 0, 1),
}


def _check_names(found: set[str], expected: set[str], what: str, shapes: dict[str, tuple]) -> None:
    unknown = sorted(found - expected)
    missing = sorted(expected - found)
    if not unknown and not missing:
        return
    lines = [f"{what} does not match the model:"]
    for name in missing[:20]:
        lines.append(f"  missing:     {name}")
    for name in unknown[:20]:
        lines.append(f"  unexpected:  {name} {tuple(shapes.get(name, ()))}")
    hidden = max(len(missing) - 20, 0) + max(len(unknown) - 20, 0)
    if hidden:
        lines.append(f"  ... and {hidden} more")
    raise CheckpointError("\n".join(lines))


def detect_spec(state_dict: dict[str, np.ndarray]) -> SamSpec:
    """Infers the SAM variant and image size of a Meta-format state dict from its shapes."""
    if "image_encoder.patch_embed.seq.0.c.weight" in state_dict:  # MobileSAM's TinyViT (runs at 1024)
        return SPECS["vit_t"]
    try:
        width = state_dict["image_encoder.patch_embed.proj.weight"].shape[0]
        patch = state_dict["image_encoder.patch_embed.proj.weight"].shape[-1]
        grid = state_dict["image_encoder.pos_embed"].shape[1]
    except KeyError as e:
        raise CheckpointError(f"not a SAM (ViT) checkpoint: it has no {e.args[0]}") from None
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("image_encoder.blocks.")})
    for spec in SPECS.values():
        if spec.encoder_embed_dim == width and spec.encoder_depth == depth and spec.patch_size == patch:
            return spec.replace(image_size=grid * patch)
    raise CheckpointError(f"no known SAM variant has an encoder {width} wide and {depth} blocks deep")


def from_meta(state_dict: dict[str, np.ndarray], spec: SamSpec) -> dict[str, np.ndarray]:
    """Meta-format state dict -> samjax flat parameters ``{dotted name: array}`` (float32).

    Raises :class:`CheckpointError` naming the variant when ``state_dict`` is another SAM variant.
    """
    try:
        found = detect_spec(state_dict)
    except CheckpointError:
        found = None
    if found is not None and found.name != spec.name:
        raise CheckpointError(
            f"this checkpoint is SAM {found.name} ({found.encoder_embed_dim} wide, {found.encoder_depth} "
            f"blocks), not {spec.name}; pass model type {found.name!r}"
        )
    rows = name_table(spec)
    unused = unused_meta_tensors(spec)
    state_dict = {k: v for k, v in state_dict.items() if k not in unused}
    shapes = {k: v.shape for k, v in state_dict.items()}
    _check_names(set(state_dict), {r.meta for r in rows}, "checkpoint", shapes)
    out = {}
    for r in rows:
        value = np.asarray(state_dict[r.meta])
        if value.ndim != _NDIM.get(r.layout, value.ndim):
            raise CheckpointError(
                f"checkpoint tensor {r.meta} has shape {value.shape}; a {r.layout} weight has {_NDIM[r.layout]} dimensions"
            )
        out[r.samjax] = np.asarray(_TO_SAMJAX[r.layout](value), np.float32)
    return out


_SHAPE_TO_META = {
    "copy": lambda s: s,
    "linear": lambda s: (s[1], s[0]),
    "conv": lambda s: (s[3], s[2], s[0], s[1]),
    "conv_transpose": lambda s: (s[2], s[3], s[0], s[1]),
}


def meta_shapes(spec: SamSpec, samjax_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The shape each Meta tensor must have, from the samjax model's shapes, in Meta's layout."""
    return {r.meta: tuple(_SHAPE_TO_META[r.layout](tuple(samjax_shapes[r.samjax]))) for r in name_table(spec)}


def to_meta(params: dict[str, np.ndarray], spec: SamSpec) -> dict[str, np.ndarray]:
    """samjax flat parameters -> Meta-format state dict (inverse of :func:`from_meta`)."""
    rows = name_table(spec)
    shapes = {k: np.shape(v) for k, v in params.items()}
    _check_names(set(params), {r.samjax for r in rows}, "parameters", shapes)
    out = {r.meta: np.ascontiguousarray(_TO_META[r.layout](np.asarray(params[r.samjax]))) for r in rows}
    return {**out, **unused_meta_tensors(spec)}

