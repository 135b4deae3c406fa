"""Host-side helpers of automatic mask generation against Meta's ``segment_anything.utils.amg``
(OpenCV for small regions, pycocotools for COCO RLE)."""

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from segment_anything.utils import amg as meta_amg

from samjax.utils import amg


@pytest.mark.parametrize("n,layers,scale", [(32, 0, 1), (16, 2, 2), (5, 1, 1)])
def test_point_grids(n, layers, scale):
    ours = amg.build_all_layer_point_grids(n, layers, scale)
    ref = meta_amg.build_all_layer_point_grids(n, layers, scale)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size,layers,ratio", [((600, 800), 1, 512 / 1500), ((333, 250), 2, 0.3), ((64, 64), 0, 0.5)])
def test_crop_boxes(size, layers, ratio):
    assert amg.generate_crop_boxes(size, layers, ratio) == meta_amg.generate_crop_boxes(size, layers, ratio)


def _masks():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(5, 23, 31)) > 0.6
    masks[1] = True
    masks[2] = False
    masks[3, 0, 0] = True
    return masks


def test_rle_round_trip_and_meta():
    masks = _masks()
    ref = meta_amg.mask_to_rle_pytorch(torch.from_numpy(masks))
    for mask, r in zip(masks, ref):
        rle = amg.mask_to_rle(mask)
        assert rle == r
        np.testing.assert_array_equal(amg.rle_to_mask(rle), mask)
        assert amg.area_from_rle(rle) == mask.sum() == meta_amg.area_from_rle(r)


def test_coco_rle_matches_pycocotools():
    for mask in _masks():
        ours = amg.coco_encode_rle(amg.mask_to_rle(mask))
        ref = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours["counts"] == ref["counts"].decode() and ours["size"] == list(ref["size"])
        np.testing.assert_array_equal(coco_mask.decode({"size": ours["size"], "counts": ours["counts"]}), mask)


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [1, 5, 30, 1000])
def test_remove_small_regions_matches_opencv(mode, area):
    rng = np.random.default_rng(area)
    mask = rng.uniform(size=(40, 50)) > 0.55
    mask[5:20, 5:25] = True
    mask[10:12, 10:12] = False  # a small hole
    ours, changed = amg.remove_small_regions(mask, area, mode)
    ref, ref_changed = meta_amg.remove_small_regions(mask, area, mode)
    assert changed == ref_changed
    np.testing.assert_array_equal(ours, ref)
    with pytest.raises(ValueError, match="mode must be"):
        amg.remove_small_regions(mask, area, "both")
