"""SAM's automatic mask generator ("segment everything") scored as a segmentation: the zero-shot baseline.

The generator knows no classes, so its masks are matched to the ground truth: each generated mask goes to
the class it overlaps most, background included (a mask lying mostly on background is dropped), and masks
of higher predicted IoU paint over lower ones. The class maps this gives are scored like a fine-tuned
model's (Dice, IoU, HD95, NSD; ``samjax.evaluation.evaluate.write_evaluation``). The match reads the labels,
so the score is an upper bound of what the generator offers without them (an oracle match), as the
medical SAM literature reports "everything mode".
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def match_to_classes(masks: np.ndarray, scores: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """``(M, H, W)`` bool generated masks with their ``(M,)`` scores and the ``(H, W)`` label -> class map.

    Each mask takes the class with the most of its pixels (background included, which drops it); a
    pixel covered by several kept masks takes the class of the highest-scoring one.
    """
    label = np.asarray(label, np.int64)
    pred = np.zeros(label.shape, np.int32)
    for i in np.argsort(np.asarray(scores), kind="stable"):  # ascending: the best mask is painted last
        mask = np.asarray(masks[i], bool)
        votes = np.bincount(label[mask], minlength=num_classes)
        if mask.any() and votes.argmax() > 0:
            pred[mask] = votes.argmax()
    return pred


def class_maps(model, num_classes: int, total: int | None = None, points_per_side: int = 32,
               **generator_options) -> Callable:
    """``host batch -> (B, S, S)`` int32 class maps of this process's images: the generator runs on each
    image's real pixels (``input_size``) and its masks are matched to the label (:func:`match_to_classes`).
    A progress bar counts the ``total`` images."""
    import jax
    from tqdm import tqdm

    from samjax.automatic_mask_generator import SamAutomaticMaskGenerator

    generator = SamAutomaticMaskGenerator(model, points_per_side=points_per_side, **generator_options)
    bar = tqdm(total=total, desc="segment everything", unit="image", mininterval=1.0,
               disable=jax.process_index() != 0)

    def predict(batch: dict) -> np.ndarray:
        images, labels = np.asarray(batch["image"]), np.asarray(batch["label"])
        out = np.zeros(labels.shape, np.int32)
        for i, (image, label) in enumerate(zip(images, labels)):
            if "weight" in batch and batch["weight"][i] == 0:
                continue
            bar.update(1)
            h, w = (int(v) for v in batch["input_size"][i])
            records = generator.generate(image[:h, :w])
            if not records:
                continue
            masks = np.stack([r["segmentation"] for r in records])
            scores = np.array([r["predicted_iou"] for r in records])
            out[i, :h, :w] = match_to_classes(masks, scores, label[:h, :w], num_classes)
        if total is not None and bar.n >= total:
            bar.close()
        return out

    return predict
