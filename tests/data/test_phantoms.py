"""The built-in ``phantoms`` data set: deterministic, anatomically ordered, hard where it should be,
and built by TFDS into array_record files that read back exactly what the generator makes."""

import numpy as np
import pytest
from scipy import ndimage

from samjax.data.builders import phantoms as builder_module
from samjax.data.phantoms import CLASS_NAMES, make_phantom


def test_deterministic_by_seed():
    a, b = make_phantom(11, 96), make_phantom(11, 96)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = make_phantom(12, 96)
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_anatomy_and_contrast(modality):
    sizes, lesion_cnr = [], []
    for seed in range(12):
        image, label, mod = make_phantom(seed, 128, modality)
        assert mod == modality and image.dtype == np.uint8 and label.dtype == np.uint8
        assert image.shape == label.shape == (128, 128)
        assert set(np.unique(label)) <= set(range(len(CLASS_NAMES)))
        body = label > 0
        assert ndimage.label(body)[1] == 1  # one connected body
        for organ in (2, 3, 4):
            assert (label == organ).sum() > 0, (seed, CLASS_NAMES[organ])
        sizes.append([(label == c).mean() for c in range(len(CLASS_NAMES))])
        lesion, liver = label == 5, label == 2
        if lesion.sum() > 20:
            liver_core = ndimage.binary_erosion(liver, iterations=2)
            diff = abs(image[lesion].mean() - image[liver_core].mean())
            lesion_cnr.append(diff / image[liver_core].std())
    sizes = np.mean(sizes, axis=0)
    assert sizes[1] > sizes[2] > sizes[3] > sizes[5]  # body > liver > kidneys > lesions
    assert sizes[5] < 0.01  # lesions are small
    assert lesion_cnr and 0.3 < np.median(lesion_cnr) < 3.0  # visible but low contrast


def test_bad_modality():
    with pytest.raises(ValueError, match="modality must be one of"):
        make_phantom(0, 64, "pet")


def test_tfds_build_reads_back_the_generator(tmp_path):
    builder = builder_module.build(str(tmp_path), "labeled_64", num_train=6, num_validation=2, num_test=2)
    assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
        "train": 6, "validation": 2, "test": 2}
    assert builder.info.metadata["class_names"] == list(CLASS_NAMES)
    train = builder.as_data_source(split="train")
    seeds = sorted(int(train[i]["seed"]) for i in range(len(train)))
    assert seeds == list(range(6))
    for i in range(len(train)):
        ex = train[i]
        image, label, modality = make_phantom(int(ex["seed"]), 64)
        np.testing.assert_array_equal(ex["image"], image)
        np.testing.assert_array_equal(ex["label"], label)
        assert builder.info.features["modality"].int2str(ex["modality"]) == modality
    test = builder.as_data_source(split="test")
    assert sorted(int(test[i]["seed"]) for i in range(2)) == [2_000_000, 2_000_001]  # disjoint from train

    again = builder_module.build(str(tmp_path / "again"), "labeled_64", num_train=6, num_validation=2, num_test=2)
    other = again.as_data_source(split="train")
    for i in range(len(train)):
        np.testing.assert_array_equal(other[i]["image"], train[i]["image"])


def test_unlabeled_variant(tmp_path):
    builder = builder_module.build(str(tmp_path), "unlabeled_64", num_train=3, num_validation=1, num_test=1)
    example = builder.as_data_source(split="train")[0]
    assert "label" not in example and example["image"].shape == (64, 64)
