"""Grain pipelines: exact resume from a saved state, hosts that add up to one process, weighted
mixing, few-shot subsets of whole cases, evaluation that sees every example once."""

import json

import numpy as np
import pytest

from samjax.data import pipeline
from samjax.data.augment import RandomAffine, RandomFlip
from samjax.data.sam_format import SamFormat
from samjax.utils.transforms import ResizeLongestSide


@pytest.fixture(scope="module")
def phantoms_dir(tmp_path_factory):
    from samjax.data.builders import phantoms

    d = tmp_path_factory.mktemp("tfds")
    phantoms.build(str(d), "labeled_64")
    return str(d)


@pytest.fixture(scope="module")
def train_source(phantoms_dir):
    return pipeline.open_source("phantoms/labeled_64", "train", phantoms_dir)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _train(source, **kw):
    kw = {"global_batch": 4, "image_size": 64, "seed": 3, **kw}
    return pipeline.train_dataset([source] if not isinstance(source, list) else source, **kw)


AUG = (RandomFlip(p=0.5), RandomAffine(p=0.5))


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_state_gives_the_same_batches(train_source, workers):
    ds = _train(train_source, augment=AUG)
    reference = _take(iter(pipeline.to_iterable(ds, workers=0)), 7)
    it = iter(pipeline.to_iterable(ds, workers=workers))
    _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    resumed = iter(pipeline.to_iterable(ds, workers=workers))
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 4), reference[3:])


def test_hosts_slice_the_same_global_batches(train_source):
    one = _take(iter(_train(train_source, augment=AUG)), 3)
    hosts = [_take(iter(_train(train_source, augment=AUG, process_index=p, process_count=2)), 3) for p in (0, 1)]
    for step in range(3):
        for k in one[step]:
            assert hosts[0][step][k].shape[0] == 2
            np.testing.assert_array_equal(np.concatenate([hosts[0][step][k], hosts[1][step][k]]), one[step][k])
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        _train(train_source, process_count=3)


def test_seeded_shuffle_and_reshuffle_each_epoch(train_source):
    a = _take(iter(_train(train_source)), 2)
    _assert_batches_equal(a, _take(iter(_train(train_source)), 2))
    b = _take(iter(_train(train_source, seed=4)), 2)
    assert not np.array_equal(a[0]["image"], b[0]["image"])
    # One epoch is 100 batches of 4; every record appears once per epoch, in a new order each epoch.
    ds = pipeline.train_dataset([train_source], global_batch=4, image_size=64, seed=3)
    first = [ds[i]["label"].tobytes() for i in range(100)]
    second = [ds[i]["label"].tobytes() for i in range(100, 200)]
    as_set = lambda batches: sorted(b[j * 64 * 64:(j + 1) * 64 * 64] for b in batches for j in range(4))
    assert as_set(first) == as_set(second)
    assert first != second


def _constant_source(value, n=20, size=40):
    records = [{"image": np.full((size, size), value, np.uint8), "label": np.zeros((size, size), np.uint8)}
               for _ in range(n)]
    return pipeline.Source(records, ("background", "x"), tuple(str(i) for i in range(n)), f"c{value}", "train")


def test_weighted_mixing():
    a, b = _constant_source(10), _constant_source(200)
    ds = pipeline.train_dataset([a, b], weights=[3, 1], global_batch=8, image_size=32, seed=0)
    values = np.concatenate([ds[i]["image"][:, 0, 0, 0] for i in range(100)])
    assert set(np.unique(values)) == {10, 200}
    assert abs(np.mean(values == 200) - 0.25) < 0.02
    with pytest.raises(ValueError, match="2 weights for 1"):
        pipeline.train_dataset([a], weights=[1, 2], global_batch=8, image_size=32, seed=0)


def test_few_shot_picks_whole_cases():
    cases = ("a", "a", "b", "c", "c", "c", "d", "e")
    picked = pipeline.few_shot_indices(cases, 2, seed=0)
    chosen = {cases[i] for i in picked}
    assert len(chosen) == 2
    assert list(picked) == [i for i, c in enumerate(cases) if c in chosen]  # every slice of a picked volume
    np.testing.assert_array_equal(picked, pipeline.few_shot_indices(cases, 2, seed=0))
    picks = {tuple(sorted({cases[i] for i in pipeline.few_shot_indices(cases, 2, seed=s)})) for s in range(10)}
    assert len(picks) > 3  # the seed matters
    with pytest.raises(ValueError, match="between 1 and the 5"):
        pipeline.few_shot_indices(cases, 6, seed=0)


def test_few_shot_stream_only_holds_the_subset(train_source):
    ds = _train(train_source, few_shot=5)
    allowed = {train_source.records[int(i)]["label"].tobytes() for i in
               pipeline.few_shot_indices(train_source.case_ids, 5, seed=3)}
    # Labels are resized 64 -> 64 (identity), so the stream's labels are the records' labels.
    seen = {ds[i]["label"][j].tobytes() for i in range(10) for j in range(4)}
    assert seen == allowed and len(allowed) == 5
    assert pipeline.steps_per_epoch(train_source, 4, few_shot=5, seed=3) == 1


def test_eval_sees_every_example_once(phantoms_dir):
    src = pipeline.open_source("phantoms/labeled_64", "validation", phantoms_dir)
    for count in (1, 2):
        cases, weights = [], []
        for p in range(count):
            for batch in pipeline.eval_dataset(src, global_batch=16, image_size=64, process_index=p,
                                               process_count=count):
                cases += list(batch["case"][batch["weight"] > 0])
                weights += list(batch["weight"])
        assert sorted(cases) == sorted(str(src.records[i]["seed"]) for i in range(len(src.records)))
        assert len(weights) == 64 and sum(weights) == 50


def test_sam_format_resizes_pads_and_downsamples():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 50), np.uint8)
    label = np.zeros((30, 50), np.uint8)
    label[5:25, 10:40] = 2
    out = SamFormat(64).map({"image": image, "label": label})
    h, w = ResizeLongestSide.get_preprocess_shape(30, 50, 64)
    assert (h, w) == (38, 64)
    expected = ResizeLongestSide(64).apply_image(np.repeat(image[..., None], 3, -1))
    np.testing.assert_array_equal(out["image"][:h, :w], expected)
    assert out["image"][h:].max() == 0 and out["label"][h:].max() == 0
    assert out["valid"].sum() == h * w and out["valid"][:h, :w].all()
    assert set(np.unique(out["label"])) == {0, 2}  # nearest neighbour: no new values
    assert abs((out["label"] == 2).sum() - 20 * 30 * (h / 30) * (w / 50)) < 0.1 * 20 * 30 * (h / 30) * (w / 50)
    assert out["low_res_label"].shape == (16, 16)
    np.testing.assert_array_equal(out["low_res_label"], out["label"][2::4, 2::4])
    np.testing.assert_array_equal(out["input_size"], [38, 64])
    np.testing.assert_array_equal(out["original_size"], [30, 50])
    with pytest.raises(ValueError, match="does not match"):
        SamFormat(64).map({"image": image, "label": label[:-1]})


def test_unlabeled_data_refuses_supervised_use(phantoms_dir):
    from samjax.data.builders import phantoms

    phantoms.build(phantoms_dir, "unlabeled_64")
    src = pipeline.open_source("phantoms/unlabeled_64", "train", phantoms_dir)
    batch = _train(src, labeled=False)[0]
    assert "label" not in batch and batch["image"].shape == (4, 64, 64, 3)
    with pytest.raises(ValueError, match="no labels"):
        _train(src)[0]


def test_missing_data_set_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m samjax.data.build"):
        pipeline.open_source("my_ct", "train", str(tmp_path))


def test_class_subset_renumbers_kept_classes_and_drops_the_rest(train_source, phantoms_dir):
    from samjax.errors import DataError

    assert train_source.class_names == ("background", "body", "liver", "kidney", "bone", "lesion")
    kept = pipeline.open_source("phantoms/labeled_64", "train", phantoms_dir, classes=("lesion", "bone"))
    assert kept.class_names == ("background", "lesion", "bone") and len(kept.records) == len(train_source.records)
    for i in range(5):
        full, sub = np.asarray(train_source.records[i]["label"]), np.asarray(kept.records[i]["label"])
        np.testing.assert_array_equal(sub, np.select([full == 5, full == 4], [1, 2], 0))
        np.testing.assert_array_equal(kept.records[i]["image"], train_source.records[i]["image"])
    with pytest.raises(DataError, match="data.classes=bone,spleen: phantoms/labeled_64 has the classes body,liver"):
        pipeline.select_classes(train_source, ("bone", "spleen"))
