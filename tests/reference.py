"""Meta's PyTorch SAM as the reference: built at any size, every tensor redrawn at random.

The default initialization leaves position embeddings and relative-position tables at zero, which
would hide layout errors, so every parameter and buffer is redrawn with a scale that keeps
activations of order one.
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from samjax.build_sam import abstract_sam
from samjax.model_spec import SamSpec
from samjax.params import assign_params
from samjax.weights import meta_sam


def meta_sam_model(spec: SamSpec, seed: int = 0) -> Sam:
    """Meta's ``Sam`` with ``spec``'s architecture and all tensors random, in eval mode."""
    from functools import partial

    grid = spec.grid_size
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.encoder_depth,
            embed_dim=spec.encoder_embed_dim,
            img_size=spec.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=spec.encoder_num_heads,
            patch_size=spec.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.encoder_global_attn_indexes,
            window_size=spec.window_size,
            out_chans=spec.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(spec.image_size, spec.image_size),
            mask_in_chans=spec.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=spec.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=spec.decoder_depth,
                embedding_dim=spec.prompt_embed_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_num_heads,
            ),
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=spec.iou_head_depth,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
    )
    randomize_(model, seed)
    return model.eval()


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Redraws every tensor of ``model``'s state dict in place (not the fixed pixel mean and std)."""
    gen = torch.Generator().manual_seed(seed)
    embeddings = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    for name, t in sorted(model.state_dict(keep_vars=True).items()):
        if not t.is_floating_point():  # batch norm's num_batches_tracked
            continue
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
        if name.endswith("running_var"):
            t.copy_(0.5 + noise.abs())
        elif name.endswith("running_mean"):
            t.copy_(0.2 * noise)
        elif "attention_biases" in name:
            t.copy_(noise)
        elif "rel_pos" in name:
            t.copy_(0.1 * noise)
        elif name.endswith("pos_embed"):
            t.copy_(0.5 * noise)
        elif t.ndim == 1 and name.endswith("weight"):  # norm scales
            t.copy_(1.0 + 0.2 * noise)
        elif t.ndim == 1:  # biases
            t.copy_(0.2 * noise)
        elif name in embeddings or name.endswith(("positional_encoding_gaussian_matrix", "positional_embedding")):
            t.copy_(noise)
        else:  # linear / conv kernels: unit gain
            fan_in = t.shape[1] * int(np.prod(t.shape[2:])) if "output_upscaling" not in name else t.shape[0]
            t.copy_(noise / np.sqrt(fan_in))


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def samjax_from_meta(meta_model: Sam, spec: SamSpec):
    """The samjax model holding ``meta_model``'s weights (through the name table)."""
    params = meta_sam.from_meta(state_dict_numpy(meta_model), spec)
    model = abstract_sam(spec)
    assign_params(model, params)
    return model


TOL = 1e-3  # fp32 parity tolerance: max |samjax - Meta| / max |Meta|


def rel_err(ours, ref) -> float:
    """max |ours - ref| / max |ref|: the tolerance measure of the parity tests."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-12))


def sample_image(h: int = 180, w: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth RGB uint8 image with structure (so resizing and attention have something to do)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack(
        [np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], axis=-1
    ) * 100 + 128 + rng.normal(0, 10, (h, w, 3))
    img[h // 4 : h // 2, w // 3 : w // 2] = (230, 40, 60)  # an "organ"
    return np.clip(img, 0, 255).astype(np.uint8)


def assert_same_prediction(ours, ref):
    """Predictor outputs (masks as logits, IoU, low-res logits) agree with Meta's within ``TOL``."""
    (masks, iou, low_res), (ref_masks, ref_iou, ref_low_res) = ours, ref
    assert masks.shape == ref_masks.shape and low_res.shape == ref_low_res.shape and iou.shape == ref_iou.shape
    assert masks.dtype == np.float32 and low_res.dtype == np.float32 and iou.dtype == np.float32
    assert rel_err(low_res, ref_low_res) <= TOL
    assert rel_err(iou, ref_iou) <= TOL
    assert rel_err(masks, ref_masks) <= TOL
    decisive = np.abs(ref_masks) > TOL * np.abs(ref_masks).max()
    np.testing.assert_array_equal((masks > 0)[decisive], (ref_masks > 0)[decisive])
    assert decisive.mean() > 0.99  # the comparison covers nearly every pixel
