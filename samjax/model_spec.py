"""The hyper-parameters that define each SAM variant (Meta's ``build_sam.py`` values)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SamSpec:
    """Architecture of one SAM variant.

    ``image_size`` is the side of the square encoder input; the image embedding is
    ``image_size / patch_size`` on a side and the low-resolution masks 4x that. ``encoder`` is
    ``"vit"`` (SAM's ViT, the ``encoder_*`` fields) or ``"tiny_vit"`` (MobileSAM, the ``tiny_*`` fields).
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    encoder: str = "vit"
    tiny_embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    tiny_depths: tuple[int, ...] = (2, 2, 6, 2)
    tiny_num_heads: tuple[int, ...] = (2, 4, 5, 10)
    tiny_window_sizes: tuple[int, ...] = (7, 7, 14, 7)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        return 4 * self.grid_size

    def replace(self, **changes) -> "SamSpec":
        return dataclasses.replace(self, **changes)


SPECS: dict[str, SamSpec] = {
    "vit_b": SamSpec("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamSpec("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamSpec("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    "vit_t": SamSpec("vit_t", 0, 0, 0, (), encoder="tiny_vit"),
}
ALIASES = {"default": "vit_h"}


def get_spec(model_type: str) -> SamSpec:
    """The spec of ``"vit_b" | "vit_l" | "vit_h" | "default"`` (an error lists the known names)."""
    name = ALIASES.get(model_type, model_type)
    if name not in SPECS:
        known = ", ".join(sorted([*SPECS, *ALIASES]))
        raise KeyError(f"unknown model type {model_type!r}; known: {known}")
    return SPECS[name]
