"""``SamAutomaticMaskGenerator`` against Meta's on the same random weights: the same masks
(matched by IoU >= 0.99) in the same count, the same scores, boxes and records, for every output mode.

Random weights give large masks, so thresholds are lowered (and NMS loosened in one case) to keep
many masks; crops are on so the crop path and the crop-edge filter run.
"""

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from segment_anything import SamAutomaticMaskGenerator as MetaGenerator

from reference import meta_sam_model, sample_image, samjax_from_meta
from samjax import SamAutomaticMaskGenerator
from samjax import automatic_mask_generator as amg_module
from samjax.model_spec import get_spec

SPEC = get_spec("vit_b").replace(image_size=128, encoder_depth=2, encoder_global_attn_indexes=(1,))


@pytest.fixture(scope="module")
def models():
    meta = meta_sam_model(SPEC, seed=1)
    return meta, samjax_from_meta(meta, SPEC)


IMAGE = sample_image(96, 128, seed=0)
CASES = {
    "loose_nms_with_crops": dict(points_per_side=4, points_per_batch=8, pred_iou_thresh=0.0,
                                 stability_score_thresh=0.0, box_nms_thresh=1.0, crop_n_layers=1, crop_nms_thresh=1.0),
    "stability_filter": dict(points_per_side=5, points_per_batch=16, pred_iou_thresh=0.0,
                             stability_score_thresh=0.7, box_nms_thresh=1.0),
    "default_nms": dict(points_per_side=4, points_per_batch=64, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                        crop_n_layers=1),
    "small_regions": dict(points_per_side=3, points_per_batch=9, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                          box_nms_thresh=1.0, min_mask_region_area=400),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_masks_as_meta(models, case):
    meta, ours = models
    ref = MetaGenerator(meta, **CASES[case]).generate(IMAGE)
    got = SamAutomaticMaskGenerator(ours, **CASES[case]).generate(IMAGE)
    assert len(got) == len(ref) > 0
    for a, b in zip(got, ref):
        inter = np.logical_and(a["segmentation"], b["segmentation"]).sum()
        union = np.logical_or(a["segmentation"], b["segmentation"]).sum()
        assert inter / union >= 0.99
        assert a["bbox"] == b["bbox"] and a["crop_box"] == b["crop_box"] and a["area"] == b["area"]
        np.testing.assert_allclose(a["point_coords"], b["point_coords"], rtol=1e-12)
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-4)
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=1e-4)
        assert a["segmentation"].dtype == bool and a["segmentation"].shape == IMAGE.shape[:2]


def test_output_modes(models):
    _, ours = models
    kw = dict(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    binary = SamAutomaticMaskGenerator(ours, **kw).generate(IMAGE)
    rle = SamAutomaticMaskGenerator(ours, output_mode="uncompressed_rle", **kw).generate(IMAGE)
    coco = SamAutomaticMaskGenerator(ours, output_mode="coco_rle", **kw).generate(IMAGE)
    assert len(binary) == len(rle) == len(coco) > 0
    for b, r, c in zip(binary, rle, coco):
        assert r["segmentation"]["size"] == [96, 128] and sum(r["segmentation"]["counts"]) == 96 * 128
        np.testing.assert_array_equal(coco_mask.decode(c["segmentation"]).astype(bool), b["segmentation"])


def test_batches_share_one_program(models):
    """25 points in batches of 8 (the last padded) compile the per-batch program once."""
    _, ours = models
    gen = SamAutomaticMaskGenerator(ours, points_per_side=5, points_per_batch=8, pred_iou_thresh=0.0,
                                    stability_score_thresh=0.0)
    gen.generate(IMAGE)
    size = amg_module._masks_for_points._cache_size()
    gen.generate(sample_image(96, 128, seed=5))  # another image of the same size: nothing new
    assert amg_module._masks_for_points._cache_size() == size


def test_bad_arguments(models):
    _, ours = models
    with pytest.raises(ValueError, match="exactly one of points_per_side and point_grids"):
        SamAutomaticMaskGenerator(ours, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode must be one of"):
        SamAutomaticMaskGenerator(ours, output_mode="png")
    with pytest.raises(ValueError, match="one grid per crop layer"):
        SamAutomaticMaskGenerator(ours, points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1)
    with pytest.raises(TypeError, match="uint8"):
        SamAutomaticMaskGenerator(ours, points_per_side=2).generate(IMAGE.astype(np.float32))
