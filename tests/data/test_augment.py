"""Augmentations: deterministic, shape- and dtype-preserving, image and label moved together."""

import dataclasses
import pickle

import grain
import numpy as np
import pytest
from scipy import ndimage

from samjax.data.augment import (
    DEFAULT_CONFIG,
    RandomAffine,
    RandomElastic,
    RandomFlip,
    RandomIntensity,
    RandomRotate90,
    augmentations,
)

H, W = 48, 64


def _label(h=H, w=W):
    """Classes 0..3: a rectangle, a disc and an ellipse, large against their boundaries."""
    y, x = np.mgrid[0:h, 0:w]
    label = np.zeros((h, w), np.uint8)
    label[6:20, 8:30] = 1
    label[(y - 30) ** 2 + (x - 44) ** 2 < 11**2] = 2
    label[((y - 34) / 8.0) ** 2 + ((x - 16) / 11.0) ** 2 < 1] = 3
    return label


def _texture(shape, seed=0):
    """A smooth, asymmetric uint8 image (no flip or rotation leaves it unchanged)."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.uniform(0, 255, shape[:2]), 3.0)
    f = (f - f.min()) / (f.max() - f.min()) * 200 + np.linspace(0, 50, shape[1])
    f = f.astype(np.uint8)
    return f if len(shape) == 2 else np.stack([np.roll(f, 5 * c, axis=1) for c in range(shape[2])], -1)


def _element(shape=(H, W)):
    return {"image": _texture(shape), "label": _label(*shape[:2]), "id": np.array(7)}


def _strong():
    """Every transform at p=1, the geometric ones with ranges large enough to be unmistakable."""
    return [
        RandomFlip(1.0),
        RandomRotate90(1.0),
        RandomAffine(1.0, degrees=30, scale=(0.8, 1.2), translate=0.1),
        RandomIntensity(1.0, brightness=0.2),
        RandomElastic(1.0, alpha=0.15, sigma=0.1),
    ]


def _apply(t, element, seed):
    return t.random_map(element, np.random.default_rng(seed))


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


ALL = _strong()
GEOMETRIC = [t for t in ALL if not isinstance(t, RandomIntensity)]
ids = [type(t).__name__ for t in ALL]


@pytest.mark.parametrize("t", ALL, ids=ids)
def test_deterministic_and_seed_dependent(t):
    el = _element((40, 40))  # square, so rotate90 varies k too
    outs = [_apply(t, el, s) for s in range(8)]
    for s in range(8):
        assert _equal(outs[s], _apply(t, el, s))
    if isinstance(t, RandomFlip):  # p=1 on one axis is a fixed map; its randomness is whether to apply
        outs = [_apply(RandomFlip(0.5), el, s) for s in range(8)]
    distinct = {o["image"].tobytes() for o in outs}
    assert len(distinct) >= (2 if isinstance(t, (RandomFlip, RandomRotate90)) else 8)


@pytest.mark.parametrize("t", ALL, ids=ids)
@pytest.mark.parametrize("shape", [(H, W), (H, W, 1), (H, W, 3), (40, 40), (33, 71, 3)])
def test_shapes_dtypes_no_mutation_passthrough(t, shape):
    el = _element(shape)
    before = {k: v.copy() for k, v in el.items()}
    out = _apply(t, el, 1)
    assert out["image"].shape == shape and out["image"].dtype == np.uint8
    assert out["label"].shape == shape[:2] and out["label"].dtype == np.uint8
    assert out["id"] is el["id"]
    assert _equal(el, before)  # input untouched
    assert not np.array_equal(out["image"], el["image"])  # p=1 changes the image


@pytest.mark.parametrize("t", ALL, ids=ids)
def test_p1_always_changes_p0_identity(t):
    el = _element()
    for s in range(20):
        assert not np.array_equal(_apply(t, el, s)["image"], el["image"])
        assert _apply(dataclasses.replace(t, p=0.0), el, s) is el


@pytest.mark.parametrize("t", ALL, ids=ids)
def test_unlabeled(t):
    el = {"image": _texture((H, W, 3))}
    out = _apply(t, el, 2)
    assert set(out) == {"image"} and out["image"].shape == (H, W, 3)
    labeled = _apply(t, dict(el, label=_label()), 2)
    np.testing.assert_array_equal(out["image"], labeled["image"])  # the label changes nothing


@pytest.mark.parametrize("t", ALL, ids=ids)
def test_channels_independent_of_count(t):
    """(H, W, 1) gives the (H, W) result; geometric transforms warp each of 3 channels alike."""
    gray = _element()
    one = _apply(t, dict(gray, image=gray["image"][..., None]), 4)
    np.testing.assert_array_equal(one["image"][..., 0], _apply(t, gray, 4)["image"])
    for shape in [(H, W, 3), (40, 40, 3)] if t in GEOMETRIC else []:
        rgb = _element(shape)
        out = _apply(t, rgb, 4)["image"]
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], _apply(t, dict(rgb, image=rgb["image"][..., c]), 4)["image"])


def test_flip_exact():
    el = _element((H, W, 3))
    for axes, np_axes in [(("horizontal",), 1), (("vertical",), 0), (("horizontal", "vertical"), (0, 1))]:
        out = _apply(RandomFlip(1.0, axes), el, 0)
        np.testing.assert_array_equal(out["image"], np.flip(el["image"], np_axes))
        np.testing.assert_array_equal(out["label"], np.flip(el["label"], np_axes))
    flipped = sum(not np.array_equal(_apply(RandomFlip(0.5), el, s)["image"], el["image"]) for s in range(200))
    assert 70 <= flipped <= 130
    with pytest.raises(ValueError, match="diagonal"):
        RandomFlip(axes=("diagonal",))


def test_rotate90_exact():
    square = _element((40, 40))
    seen = set()
    for s in range(30):
        out = _apply(RandomRotate90(1.0), square, s)
        k = [k for k in (1, 2, 3) if np.array_equal(out["image"], np.rot90(square["image"], k))]
        assert len(k) == 1
        np.testing.assert_array_equal(out["label"], np.rot90(square["label"], k[0]))
        seen.add(k[0])
    assert seen == {1, 2, 3}
    rgb = _element((H, W, 3))
    for s in range(5):  # non-square: always 180 degrees
        out = _apply(RandomRotate90(1.0), rgb, s)
        np.testing.assert_array_equal(out["image"], np.rot90(rgb["image"], 2))
        np.testing.assert_array_equal(out["label"], np.rot90(rgb["label"], 2))


def _consistency(out):
    """Fraction of pixels away from label edges whose image equals 50 * label (within 1)."""
    lab = out["label"]
    interior = (ndimage.maximum_filter(lab, 3) == lab) & (ndimage.minimum_filter(lab, 3) == lab)
    ok = np.abs(out["image"].astype(int) - 50 * lab.astype(int)) <= 1
    return ok[interior].mean(), interior.mean()


@pytest.mark.parametrize("t", GEOMETRIC, ids=[type(t).__name__ for t in GEOMETRIC])
def test_image_and_label_move_together(t):
    label = _label()
    el = {"image": (50 * label).astype(np.uint8), "label": label}
    for s in range(5):
        out = _apply(t, el, s)
        frac, interior = _consistency(out)
        assert frac >= 0.99 and interior > 0.7
        # The check can fail: the label left as it was does not match the moved image.
        assert _consistency(dict(out, label=label))[0] < 0.97


@pytest.mark.parametrize("t", [RandomAffine(1.0, 45, (0.7, 1.3), 0.2), RandomElastic(1.0, 0.2, 0.05)])
def test_no_new_label_values(t):
    label = np.array([2, 5, 9], np.uint8)[_label() % 3]  # no background anywhere
    el = {"image": _texture((H, W)), "label": label}
    for s in range(10):
        values = set(np.unique(_apply(t, el, s)["label"]))
        assert values <= {0, 2, 5, 9} and {2, 5, 9} <= values  # 0 only as the fill outside the image


def test_affine_identity_center_and_scale():
    el = _element((H, W, 3))
    out = _apply(RandomAffine(1.0, degrees=0, scale=(1, 1), translate=0), el, 0)
    assert _equal(out, el)
    y, x = np.mgrid[0:H, 0:W]
    disc = ((y - (H - 1) / 2) ** 2 + (x - (W - 1) / 2) ** 2 < 12**2).astype(np.uint8)
    el = {"image": 200 * disc, "label": disc}
    for s in range(5):  # rotation and scale about the center keep a centered disc centered
        lab = _apply(RandomAffine(1.0, degrees=90, scale=(0.8, 1.2), translate=0), el, s)["label"]
        np.testing.assert_allclose(ndimage.center_of_mass(lab), ((H - 1) / 2, (W - 1) / 2), atol=0.3)
    big = _apply(RandomAffine(1.0, degrees=0, scale=(1.5, 1.5), translate=0), el, 0)["label"]
    assert abs(big.sum() / disc.sum() - 2.25) < 0.1  # scale > 1 enlarges
    shifts = []
    for s in range(10):
        lab = _apply(RandomAffine(1.0, degrees=0, scale=(1, 1), translate=0.1), el, s)["label"]
        shifts.append(np.subtract(ndimage.center_of_mass(lab), ((H - 1) / 2, (W - 1) / 2)))
    shifts = np.abs(shifts)
    assert (shifts[:, 0] <= 0.1 * H + 0.5).all() and (shifts[:, 1] <= 0.1 * W + 0.5).all()
    assert shifts.max() > 2


def test_elastic_identity_and_displacement_bound():
    el = _element((H, W, 3))
    assert _equal(_apply(RandomElastic(1.0, alpha=0.0), el, 0), el)
    alpha = 0.1
    for s in range(5):
        out = _apply(RandomElastic(1.0, alpha=alpha, sigma=0.1), el, s)["label"]
        for k in (1, 2, 3):  # every output pixel of class k comes from within alpha * n of class k
            dist = ndimage.distance_transform_edt(el["label"] != k)
            assert dist[out == k].max() <= alpha * H + 1
        assert not np.array_equal(out, el["label"])
    big = {"image": _texture((300, 260)), "label": _label(300, 260)}  # the coarse-grid path
    out = _apply(RandomElastic(1.0), big, 0)
    assert out["image"].shape == (300, 260) and not np.array_equal(out["image"], big["image"])


def test_intensity():
    ramp = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    el = {"image": ramp, "label": _label(8, 256)}
    t = RandomIntensity(1.0, brightness=0.5, contrast=(0.5, 2.0), gamma=(0.5, 2.0))
    lows, highs = [], []
    for s in range(40):
        out = _apply(t, el, s)
        assert out["label"] is el["label"]
        img = out["image"].astype(int)
        assert (np.diff(img, axis=1) >= 0).all()  # monotone: clipped, never wrapped around
        lows.append(img.min())
        highs.append(img.max())
    assert min(lows) == 0 and max(highs) == 255 and max(lows) > 0 and min(highs) < 255
    same = RandomIntensity(1.0, brightness=0.0, contrast=(1, 1), gamma=(1, 1))
    assert _equal(_apply(same, el, 0), el)
    squared = _apply(RandomIntensity(1.0, brightness=0.0, contrast=(1, 1), gamma=(2, 2)), el, 0)["image"]
    np.testing.assert_array_equal(squared, np.rint(ramp.astype(float) ** 2 / 255).astype(np.uint8))


@pytest.mark.parametrize("t", ALL, ids=ids)
def test_pickle_round_trip(t):
    u = pickle.loads(pickle.dumps(t))
    assert u == t and type(u) is type(t)
    assert _equal(_apply(u, _element(), 5), _apply(t, _element(), 5))


def _run(transforms, seed):
    ds = grain.MapDataset.source([_element(), _element((40, 40, 3)), {"image": _texture((30, 50))}]).seed(seed)
    for t in transforms:
        ds = ds.random_map(t)
    return [ds[i] for i in range(len(ds))]


def test_grain_pipeline_deterministic():
    t = RandomAffine(1.0)
    a, b, c = _run([t], 3), _run([t], 3), _run([t], 4)
    assert all(_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))
    chain = augmentations({"flip": 0.5, "rotate90": 0.5, "affine": 0.7, "intensity": 0.7, "elastic": 0.5})
    a, b = _run(chain, 3), _run(chain, 3)
    assert all(_equal(x, y) for x, y in zip(a, b))
    assert [x["image"].shape for x in a] == [(H, W), (40, 40, 3), (30, 50)]


def test_augmentations_config():
    ts = augmentations({"flip": 0.3, "rotate90": 0.0, "affine": 0.5, "intensity": 0.4, "elastic": 0.2})
    assert [type(t) for t in ts] == [RandomFlip, RandomAffine, RandomElastic, RandomIntensity]
    assert [t.p for t in ts] == [0.3, 0.5, 0.2, 0.4]
    assert ts[1] == RandomAffine(0.5)  # other fields keep their defaults
    assert [type(t) for t in augmentations()] == [RandomFlip, RandomAffine, RandomElastic, RandomIntensity]
    assert [t.p for t in augmentations()] == [DEFAULT_CONFIG[k] for k in ("flip", "affine", "elastic", "intensity")]
    assert augmentations(None) == [] and augmentations({}) == [] and augmentations("none") == []
    assert augmentations({"affine": 0, "elastic": 0.0}) == []
    ts = augmentations({"affine": {"p": 0.9, "degrees": 5.0}, "flip": {"axes": ["vertical"]}})
    assert ts == [RandomFlip(0.5, ("vertical",)), RandomAffine(0.9, degrees=5.0)]
    with pytest.raises(ValueError, match="rotate"):
        augmentations({"flip": 0.5, "rotate": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        augmentations({"flip": 1.5})


def test_augmentations_config_dict():
    ml_collections = pytest.importorskip("ml_collections")
    cfg = ml_collections.ConfigDict({"flip": 0.5, "intensity": 0.25, "affine": {"p": 0.5, "translate": 0.1}})
    ts = augmentations(cfg)
    assert ts == [RandomFlip(0.5), RandomAffine(0.5, translate=0.1), RandomIntensity(0.25)]
    with pytest.raises(ValueError, match="warp"):
        augmentations(ml_collections.ConfigDict({"warp": 0.5}))
