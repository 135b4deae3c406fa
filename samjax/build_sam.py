"""Builds SAM models, Meta-style: ``sam_model_registry["vit_b"](checkpoint=..., image_size=...)``.

``checkpoint`` is a converted samjax folder (``convert_weights/convert_sam.py``), one of Meta's or
MobileSAM's ``.pth`` files (read safely without PyTorch), a ``.safetensors`` file, or a Hugging Face
``SamModel`` folder. ``image_size=None`` builds the size the checkpoint was
trained at; another size resizes the position embeddings (``samjax.weights.resize_pos``).
"""

from __future__ import annotations

import functools
import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax import checkpoint as ckpt
from samjax.model_spec import SamSpec, get_spec
from samjax.modeling.image_encoder import ImageEncoderViT
from samjax.modeling.keys import HostKeys, KeyStream, to_device
from samjax.modeling.mask_decoder import MaskDecoder
from samjax.modeling.prompt_encoder import PromptEncoder
from samjax.modeling.sam import Sam
from samjax.modeling.tiny_vit import TinyViT
from samjax.modeling.transformer import TwoWayTransformer
from samjax.params import assign_params, check_params, param_shapes
from samjax.weights import meta_sam
from samjax.weights.resize_pos import resize_position_embeddings
from samjax.weights.load import read_state_dict
from samjax.errors import CheckpointError


def build_sam_from_spec(spec: SamSpec, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> Sam:
    """A randomly initialized SAM of architecture ``spec`` (``dtype`` is the compute dtype).

    ``rngs``: ``nnx.Rngs`` or :class:`~samjax.modeling.keys.KeyStream` draw the initial values with JAX (the
    same values from either); :class:`~samjax.modeling.keys.HostKeys` (the default, seed 0) with NumPy,
    which compiles nothing and so builds ~10x faster on a first call.
    """
    rngs = rngs if rngs is not None else HostKeys(0)
    grid = spec.grid_size
    kw = dict(rngs=rngs, dtype=dtype)
    if spec.encoder == "tiny_vit":
        image_encoder = TinyViT(
            img_size=spec.image_size,
            embed_dims=spec.tiny_embed_dims,
            depths=spec.tiny_depths,
            num_heads=spec.tiny_num_heads,
            window_sizes=spec.tiny_window_sizes,
            out_chans=spec.prompt_embed_dim,
            **kw,
        )
    else:
        image_encoder = ImageEncoderViT(
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            embed_dim=spec.encoder_embed_dim,
            depth=spec.encoder_depth,
            num_heads=spec.encoder_num_heads,
            out_chans=spec.prompt_embed_dim,
            window_size=spec.window_size,
            global_attn_indexes=spec.encoder_global_attn_indexes,
            **kw,
        )
    model = Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            spec.prompt_embed_dim, (grid, grid), (spec.image_size, spec.image_size), spec.mask_in_chans, **kw
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=spec.prompt_embed_dim,
            transformer=TwoWayTransformer(
                spec.decoder_depth, spec.prompt_embed_dim, spec.decoder_num_heads, spec.decoder_mlp_dim, **kw
            ),
            num_multimask_outputs=spec.num_multimask_outputs,
            iou_head_depth=spec.iou_head_depth,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
            **kw,
        ),
    )
    return to_device(model) if isinstance(rngs, HostKeys) else model


def abstract_sam(spec: SamSpec, *, dtype=jnp.float32) -> Sam:
    """A ``spec`` model whose variables are shapes only (``jax.ShapeDtypeStruct``), to fill or inspect."""
    return nnx.eval_shape(lambda: build_sam_from_spec(spec, rngs=KeyStream(0), dtype=dtype))


def expected_shapes(spec: SamSpec) -> dict[str, tuple[int, ...]]:
    """The name and shape of every variable of a ``spec`` model (nothing is allocated)."""
    return param_shapes(abstract_sam(spec))


def convert_meta_state_dict(state_dict: dict[str, np.ndarray], source: str) -> tuple[SamSpec, dict[str, np.ndarray]]:
    """Checks a Meta-format state dict against its own variant and converts it to samjax params.

    The variant and image size are read from the tensors; every tensor must then have exactly the
    shape that variant has at that size, reported in the checkpoint's own names and layout.
    """
    spec = meta_sam.detect_spec(state_dict)
    unused = meta_sam.unused_meta_tensors(spec)
    used = {k: v for k, v in state_dict.items() if k not in unused}
    check_params(used, meta_sam.meta_shapes(spec, expected_shapes(spec)), source=source)
    return spec, meta_sam.from_meta(used, spec)


def read_checkpoint(checkpoint: str | os.PathLike) -> tuple[SamSpec, dict[str, np.ndarray]]:
    """Reads and validates a samjax folder, or any checkpoint ``samjax.weights.load`` reads.

    Returns the spec the checkpoint was trained with (its image size included) and its flat samjax
    params, checked against that spec: nothing is resized or reinterpreted yet.
    """
    path = os.fspath(checkpoint)
    if ckpt.is_checkpoint_dir(path) or os.path.isdir(os.path.join(path, "params")):
        meta, params = ckpt.load_sam(path)
        spec = get_spec(meta["model_type"]).replace(image_size=int(meta["image_size"]))
        check_params(params, expected_shapes(spec), source=path)
        return spec, params
    state_dict, _ = read_state_dict(path)
    return convert_meta_state_dict(state_dict, path)


def build_sam(
    model_type: str,
    checkpoint: str | os.PathLike | None = None,
    image_size: int | None = None,
    *,
    dtype=jnp.float32,
    seed: int = 0,
) -> Sam:
    """Builds ``model_type`` and loads ``checkpoint`` into it (random weights without one).

    Raises:
      CheckpointError: the checkpoint is unreadable, unsafe, or of another model type.
    """
    spec = get_spec(model_type)
    if checkpoint is None:
        if image_size is not None:
            spec = spec.replace(image_size=int(image_size))
        return build_sam_from_spec(spec, rngs=HostKeys(seed), dtype=dtype)

    ckpt_spec, params = read_checkpoint(checkpoint)
    if ckpt_spec.name != spec.name:
        raise CheckpointError(
            f"{os.fspath(checkpoint)} holds SAM {ckpt_spec.name}, not {spec.name}; "
            f"use sam_model_registry[{ckpt_spec.name!r}]"
        )
    spec = ckpt_spec if image_size is None else ckpt_spec.replace(image_size=int(image_size))
    if spec.image_size % spec.patch_size:
        raise ValueError(f"image_size {spec.image_size} must be a multiple of {spec.patch_size}")
    model = abstract_sam(spec, dtype=dtype)
    shapes = param_shapes(model)
    params = resize_position_embeddings(params, shapes)
    assign_params(model, params, source=os.fspath(checkpoint))
    return model


def _registry_entry(model_type: str):
    @functools.wraps(build_sam)
    def build(checkpoint=None, image_size=None, **kwargs) -> Sam:
        return build_sam(model_type, checkpoint, image_size, **kwargs)

    build.__doc__ = f"Builds SAM {model_type} (see :func:`build_sam`)."
    return build


sam_model_registry = {name: _registry_entry(name) for name in ("default", "vit_h", "vit_l", "vit_b", "vit_t")}
