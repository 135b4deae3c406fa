"""Resizes a checkpoint's position embeddings to another image size.

SAM is trained at 1024x1024 (a 64x64 token grid). Running it at 256 or 512, as medical fine-tuning
work does (SAMed, SAM-Med2D), needs the absolute position embedding resized bicubically and the
global-attention blocks' relative-position tables resized linearly, as PyTorch's ``F.interpolate``
would (``align_corners=False``). Windowed blocks keep their 14x14 tables: windows do not change.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from samjax.utils.resize import resize_1d, resize_2d


def resize_position_embeddings(
    params: Mapping[str, np.ndarray], target_shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Returns ``params`` with every position table resized to the shape in ``target_shapes``.

    Args:
      params: flat samjax parameters.
      target_shapes: the shapes the target model needs (``samjax.params.param_shapes``).
    """
    out = dict(params)
    for name, value in params.items():
        want = target_shapes.get(name)
        if want is None or tuple(value.shape) == tuple(want):
            continue
        if name.endswith("pos_embed") and value.ndim == 4:
            out[name] = resize_2d(np.asarray(value, np.float32), want[1:3], axes=(1, 2), mode="bicubic")
        elif name.endswith(("rel_pos_h", "rel_pos_w")) and value.ndim == 2 and value.shape[1] == want[1]:
            out[name] = resize_1d(np.asarray(value, np.float32), want[0], axis=0)
    return out
