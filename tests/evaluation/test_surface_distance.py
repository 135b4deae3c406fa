"""HD95 and normalized surface Dice: hand-computed cases, the empty-mask rules, and MONAI as an independent
implementation (2D and anisotropic 3D)."""

import math

import numpy as np
import pytest

from samjax.evaluation import surface_distance as sd


def square(shape, top, left, size):
    m = np.zeros(shape, bool)
    m[top:top + size, left:left + size] = True
    return m


def test_boundary_of_a_square_is_its_ring():
    m = square((8, 8), 2, 2, 4)
    b = sd.boundary(m)
    assert b.sum() == 12 and not b[3:5, 3:5].any()
    full = np.ones((3, 3), bool)
    assert sd.boundary(full).sum() == 8  # the image border counts as background


def test_shifted_square_by_hand():
    """A 4x4 square and the same square 3 pixels to the right, sharing one column of boundary."""
    a = square((10, 12), 3, 2, 4)
    b = square((10, 12), 3, 5, 4)
    to_b, to_a = sd.boundary_distances(a, b)
    # a's ring: rows 3 and 6 at columns 2..5 are 3, 2, 1, 0 from b's ring; column 5 (rows 4, 5) lies on it
    # (0, 0); column 2 (rows 4, 5) is 3 away.
    assert sorted(to_b.tolist()) == sorted([3, 2, 1, 0, 3, 2, 1, 0, 3, 3, 0, 0])
    assert sorted(to_a.tolist()) == sorted(to_b.tolist())  # the mirror image
    hd, nsd = sd.hd95_and_nsd(a, b, tolerance=1.0)
    assert hd == pytest.approx(3.0)
    assert nsd == pytest.approx(12 / 24)  # 0, 0, 0, 0, 1, 1 in each direction
    hd2, _ = sd.hd95_and_nsd(a, b, spacing=(1.0, 2.0))  # columns 2 mm apart: horizontal distances double
    assert hd2 == pytest.approx(6.0)


def test_identical_masks_and_the_empty_rules():
    a = square((16, 16), 4, 4, 6)
    assert sd.hd95_and_nsd(a, a) == (0.0, 1.0)
    empty = np.zeros_like(a)
    hd, nsd = sd.hd95_and_nsd(empty, empty)
    assert math.isnan(hd) and math.isnan(nsd)
    diag = math.hypot(15 * 0.5, 15 * 2.0)
    assert sd.hd95_and_nsd(a, empty, spacing=(0.5, 2.0)) == (pytest.approx(diag), 0.0)
    assert sd.hd95_and_nsd(empty, a, spacing=(0.5, 2.0)) == (pytest.approx(diag), 0.0)
    with pytest.raises(ValueError, match="spacing"):
        sd.hd95_and_nsd(a, a, spacing=(0.0, 1.0))


def test_per_class_columns():
    label = np.zeros((12, 12), np.int32)
    label[2:6, 2:6] = 1
    label[7:10, 7:10] = 2
    pred = label.copy()
    pred[7:10, 7:10] = 0  # class 2 missed
    hd, nsd = sd.per_class(pred, label, 4)
    assert math.isnan(hd[0]) and math.isnan(hd[3]) and math.isnan(nsd[3])  # background, absent class
    assert hd[1] == 0.0 and nsd[1] == 1.0
    assert hd[2] == pytest.approx(math.hypot(11, 11)) and nsd[2] == 0.0


def random_blobs(rng, shape, n):
    """Union of a few random ellipsoid-ish blobs: irregular boundaries."""
    grid = np.indices(shape).astype(float)
    m = np.zeros(shape, bool)
    for _ in range(n):
        centre = [rng.uniform(0.2, 0.8) * s for s in shape]
        radii = [rng.uniform(0.08, 0.3) * s for s in shape]
        m |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1
    return m


@pytest.mark.parametrize("shape,spacing", [((48, 64), (1.0, 1.0)), ((40, 36), (0.7, 1.3)), ((20, 24, 8), (0.8, 0.8, 3.0))])
def test_against_monai(shape, spacing):
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(len(shape) * 10 + int(spacing[0] * 10))
    for trial in range(4):
        pred, label = random_blobs(rng, shape, 3), random_blobs(rng, shape, 2)
        if not pred.any() or not label.any():
            continue
        hd, nsd = sd.hd95_and_nsd(pred, label, spacing, tolerance=2.0)

        def onehot(m):
            return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))

        ref_hd = compute_hausdorff_distance(onehot(pred), onehot(label), include_background=False, percentile=95,
                                            spacing=list(spacing))
        ref_nsd = compute_surface_dice(onehot(pred), onehot(label), class_thresholds=[2.0], include_background=False,
                                       spacing=list(spacing))
        assert hd == pytest.approx(float(ref_hd[0, 0]), rel=1e-5, abs=1e-5), trial
        assert nsd == pytest.approx(float(ref_nsd[0, 0]), rel=1e-5, abs=1e-6), trial
