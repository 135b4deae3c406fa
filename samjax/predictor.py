"""``SamPredictor``: Meta's interactive interface over a samjax SAM, on NumPy in and out.

``set_image`` embeds an image once; ``predict`` then answers prompts in milliseconds. Everything
runs as jitted programs with fixed shapes: images are padded to the model size (one program per
model), prompts are padded to power-of-two buckets (one program per bucket), and padding tokens are
masked out of attention, so results are exactly those of the unpadded prompts.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax.modeling.prompt_encoder import PADDING_LABEL
from samjax.modeling.sam import Sam
from samjax.utils.transforms import ResizeLongestSide, as_rgb_uint8


def _bucket(n: int) -> int:
    """Smallest power of two >= n (>= 1)."""
    return 1 << max(int(n) - 1, 0).bit_length()


# The programs are module-level and take the model's graph definition as a static argument, so every
# predictor over the same architecture shares one compilation cache.
@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef, state, image, input_hw):
    """``image (1, S, S, 3)`` uint8, zero beyond ``input_hw`` -> embedding ``(1, g, g, C)``."""
    model = nnx.merge(graphdef, state)
    rows = jnp.arange(image.shape[1])[:, None] < input_hw[0]
    cols = jnp.arange(image.shape[2])[None, :] < input_hw[1]
    x = jnp.where((rows & cols)[None, :, :, None], model.normalize(image), 0.0)  # Meta pads after normalizing
    return model.image_encoder(x)


@functools.partial(jax.jit, static_argnums=0)
def _image_side(graphdef, state, features):
    """The decoder's prompt-independent first projections of ``features (1, g, g, C)`` with no mask prompt."""
    model = nnx.merge(graphdef, state)
    pe = model.prompt_encoder
    _, _, dense = pe(None, jnp.zeros((1, 4), jnp.float32), None)
    return model.mask_decoder.image_side(features, pe.get_dense_pe(), dense)


@functools.partial(
    jax.jit, static_argnames=("graphdef", "multimask_output", "input_size", "original_size", "return_logits")
)
def _predict(graphdef, state, features, side, coords, labels, boxes, box_mask, masks, *,
             multimask_output, input_size, original_size, return_logits):
    """Prompt encoder, mask decoder and post-processing for a padded prompt batch; ``side``
    (:func:`_image_side`) stands in for the decoder's first image-side projections when no mask is given."""
    model = nnx.merge(graphdef, state)
    points = None if coords is None else (coords, labels)
    sparse, sparse_mask, dense = model.prompt_encoder(points, boxes, masks, box_mask)
    low_res, iou = model.mask_decoder(
        features, model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output, sparse_mask,
        side if masks is None else None,
    )
    low_res, iou = low_res.astype(jnp.float32), iou.astype(jnp.float32)  # fp32 out under bf16 compute
    full = model.postprocess_masks(low_res, input_size, original_size)
    if not return_logits:
        full = full > model.mask_threshold
    return full, iou, low_res


@dataclasses.dataclass(frozen=True)
class ImageEmbedding:
    """One image's embedding ``features (1, g, g, C)`` and the sizes the prompts are mapped with."""

    features: jax.Array
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class SamPredictor:
    """Predicts masks for one image at a time from points, boxes and masks.

    Args:
      sam_model: the model (``samjax.sam_model_registry[...]``).
    """

    def __init__(self, sam_model: Sam):
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.img_size)
        self._graphdef = nnx.graphdef(sam_model)
        self.reset_image()

    # --- image -----------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embeds ``image``: ``(H, W, 3)``, ``(H, W, 1)`` or ``(H, W)`` uint8, in ``image_format``."""
        self.set_embedding(self.embed(image, image_format))

    def embed(self, image: np.ndarray, image_format: str = "RGB") -> ImageEmbedding:
        """The embedding of ``image`` without setting it: computed ahead (a background queue) and kept, then
        given to :meth:`set_embedding`, so a prompt costs only the decoder."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = as_rgb_uint8(image)
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        if min(self.transform.get_preprocess_shape(*image.shape[:2], self.transform.target_length)) < 1:
            raise ValueError(
                f"image of {image.shape[1]}x{image.shape[0]} pixels is too thin: its short side would be "
                f"under one pixel at the model size {self.model.img_size}"
            )
        input_image = self.transform.apply_image(np.ascontiguousarray(image))
        size = self.model.img_size
        padded = np.zeros((1, size, size, 3), np.uint8)
        padded[0, : input_image.shape[0], : input_image.shape[1]] = input_image
        features = _embed(self._graphdef, nnx.state(self.model), padded, np.array(input_image.shape[:2], np.int32))
        return ImageEmbedding(features, tuple(int(s) for s in image.shape[:2]),
                              tuple(int(s) for s in input_image.shape[:2]))

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Makes ``embedding`` (from :meth:`embed`) the current image."""
        self.reset_image()
        self._state = nnx.state(self.model)
        self.features = embedding.features
        self._side = _image_side(self._graphdef, self._state, self.features)
        self.original_size, self.input_size = embedding.original_size, embedding.input_size
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        """The image embedding as ``(1, C, h, w)`` float32, Meta's layout (``features`` is NHWC)."""
        self._require_image()
        return np.asarray(self.features).transpose(0, 3, 1, 2)

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None
        self._state = None
        self._side = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    # --- prompts ---------------------------------------------------------------------------
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicts masks for one set of prompts on the current image.

        Args:
          point_coords: ``(N, 2)`` points as (x, y) pixels of the original image.
          point_labels: ``(N,)``: 1 foreground, 0 background.
          box: ``(4,)`` as (x0, y0, x1, y1) pixels.
          mask_input: ``(1, 256, 256)`` low-resolution logits from an earlier prediction.
          multimask_output: three candidate masks instead of one (better for ambiguous prompts).
          return_logits: return logits instead of thresholded masks.

        Returns:
          masks ``(M, H, W)`` bool (or float32 logits), IoU predictions ``(M,)`` float32 and low-res
          logits ``(M, 256, 256)`` float32; ``M`` is 3 or 1.
        """
        self._require_image()
        if point_coords is not None or point_labels is not None:
            coords, labels = self._check_points(point_coords, point_labels, batched=False)
            point_coords, point_labels = coords[None], labels[None]
        if box is not None:
            box = np.asarray(box, np.float64)
            if box.shape not in ((4,), (1, 4)):
                raise ValueError(f"box must have shape (4,) as (x0, y0, x1, y1), got {box.shape}")
            box = box.reshape(1, 4)
        if mask_input is not None:
            mask_input = np.asarray(mask_input, np.float32)
            lr = self.model.prompt_encoder.mask_input_size
            if mask_input.shape != (1, *lr):
                raise ValueError(f"mask_input must have shape (1, {lr[0]}, {lr[1]}), got {mask_input.shape}")
            mask_input = mask_input[None]
        masks, iou, low_res = self.predict_batch(
            point_coords, point_labels, box, mask_input, multimask_output, return_logits
        )
        return masks[0], iou[0], low_res[0]

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicts masks for ``B`` independent prompt sets on the current image in one jitted call.

        Args:
          point_coords: ``(B, N, 2)`` (x, y) pixels of the original image; ``point_labels (B, N)``.
          boxes: ``(B, 4)``.
          mask_input: ``(B, 1, 256, 256)`` low-resolution logits.

        Returns:
          masks ``(B, M, H, W)``, IoU predictions ``(B, M)``, low-res logits ``(B, M, 256, 256)``.
        """
        self._require_image()
        coords = labels = None
        sizes = []
        if point_coords is not None or point_labels is not None:
            coords, labels = self._check_points(point_coords, point_labels, batched=True)
            sizes.append(coords.shape[0])
        if boxes is not None:
            boxes = self._check_boxes(boxes)
            sizes.append(boxes.shape[0])
        lr = self.model.prompt_encoder.mask_input_size
        if mask_input is not None:
            mask_input = np.asarray(mask_input, np.float32)
            if mask_input.ndim != 4 or mask_input.shape[1:] != (1, *lr):
                raise ValueError(f"mask_input must have shape (B, 1, {lr[0]}, {lr[1]}), got {mask_input.shape}")
            if not np.all(np.isfinite(mask_input)):
                raise ValueError("mask_input contains NaN or infinite values")
            sizes.append(mask_input.shape[0])
        if len(set(sizes)) > 1:
            raise ValueError(f"points, boxes and mask_input must share the batch size, got {sizes}")
        b = sizes[0] if sizes else 1
        bb = _bucket(b)

        to_input = functools.partial(self.transform.apply_coords, original_size=self.original_size)
        args = dict(coords=None, labels=None, boxes=None, box_mask=None, masks=None)
        if coords is not None:
            nb = _bucket(coords.shape[1])
            c = np.zeros((bb, nb, 2), np.float32)
            lab = np.full((bb, nb), PADDING_LABEL, np.int32)
            c[:b, : coords.shape[1]] = to_input(coords)
            lab[:b, : coords.shape[1]] = labels
            args.update(coords=c, labels=lab)
        if boxes is not None:
            bx = np.zeros((bb, 4), np.float32)
            bx[:b] = self.transform.apply_boxes(boxes, self.original_size)
            args.update(boxes=bx, box_mask=np.arange(bb) < b)
        if mask_input is not None:
            m = np.zeros((bb, *lr), np.float32)
            m[:b] = mask_input[:, 0]
            args["masks"] = m
        masks, iou, low_res = _predict(
            self._graphdef, self._state, self.features, self._side, **args, multimask_output=bool(multimask_output),
            input_size=self.input_size, original_size=self.original_size, return_logits=bool(return_logits),
        )
        return np.asarray(masks[:b]), np.asarray(iou[:b]), np.asarray(low_res[:b])

    # --- validation ------------------------------------------------------------------------
    def _check_points(self, coords, labels, batched: bool) -> tuple[np.ndarray, np.ndarray]:
        lead = "(B, N, 2)" if batched else "(N, 2)"
        if coords is None or labels is None:
            raise ValueError(
                "point_coords and point_labels must be given together (labels: 1 foreground, 0 background)"
            )
        coords = np.asarray(coords, np.float64)
        labels = np.asarray(labels)
        ndim = 3 if batched else 2
        if coords.ndim != ndim or coords.shape[-1] != 2 or coords.shape[-2] == 0:
            raise ValueError(f"point_coords must have shape {lead} as (x, y) pixels, got {coords.shape}")
        if labels.shape != coords.shape[:-1]:
            raise ValueError(f"point_labels must have shape {coords.shape[:-1]} to match point_coords, got {labels.shape}")
        if not np.all(np.isin(labels, (0, 1, -1))):
            raise ValueError(
                f"point_labels must be 1 (foreground), 0 (background) or -1 (ignored), got values {np.unique(labels)}"
            )
        self._check_inside(coords.reshape(-1, 2), "point")
        return coords, labels.astype(np.int32)

    def _check_boxes(self, boxes) -> np.ndarray:
        boxes = np.asarray(boxes, np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
            raise ValueError(f"boxes must have shape (B, 4) as (x0, y0, x1, y1), got {boxes.shape}")
        self._check_inside(boxes.reshape(-1, 2), "box corner")
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bad.any():
            raise ValueError(f"boxes must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, got {boxes[bad][0].tolist()}")
        return boxes

    def _check_inside(self, xy: np.ndarray, what: str) -> None:
        h, w = self.original_size
        if not np.all(np.isfinite(xy)):
            raise ValueError(f"{what} coordinates contain NaN or infinite values")
        outside = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
        if outside.any():
            raise ValueError(
                f"{what} {xy[outside][0].tolist()} is outside the {w}x{h} (width x height) image; "
                "coordinates are (x, y) pixels of the original image"
            )
