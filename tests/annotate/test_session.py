"""An annotation session on a tiny random SAM: a click gives the predictor's mask for that click on that slice,
a correction click feeds the previous logits back as SAM does, undo returns exactly the mask before, the work
survives a new session on the same output, neighbours are embedded ahead in the background, and the label
map is written in the scan's geometry."""

import time

import nibabel as nib
import numpy as np
import pytest

from modeling.tiny_sams import make
from samjax.annotate.session import Annotation
from samjax.errors import DataError
from samjax.predictor import SamPredictor
from samjax.scans.io import read_scan
from samjax.scans.segmenter import Segmenter

AFFINE = np.array([[0.0, 0.9, 0.0, 10.0], [0.0, 0.0, 2.0, -4.0], [1.1, 0.0, 0.0, 7.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(make("vit", seed=5), ("background", "liver", "kidney"), 64, preprocessing={"ct_window": [40, 400]})


@pytest.fixture()
def scan(tmp_path):
    rng = np.random.default_rng(1)
    hu = rng.normal(0.0, 30.0, (40, 48, 5)).astype(np.int16)
    hu[10:30, 12:40] += 120
    nib.save(nib.Nifti1Image(hu, AFFINE), tmp_path / "ct.nii.gz")
    return read_scan(str(tmp_path / "ct.nii.gz"))


def _predictor_masks(segmenter, image, steps):
    """The reference: SamPredictor directly, prompts added one at a time, logits fed back."""
    predictor = SamPredictor(segmenter.model)
    predictor.set_image(image)
    points, labels, low_res, out = [], [], None, []
    for x, y, positive in steps:
        points.append([x, y])
        labels.append(positive)
        masks, iou, logits = predictor.predict(np.array(points), np.array(labels),
                                               mask_input=None if low_res is None else low_res[None],
                                               multimask_output=len(points) == 1)
        best = int(np.argmax(iou))
        low_res = logits[best]
        out.append(masks[best])
    return out


def test_clicks_corrections_undo_and_the_saved_label_map(segmenter, scan, tmp_path):
    output = str(tmp_path / "out" / "ct_labels.nii.gz")
    session = Annotation(scan, segmenter, output)
    image = np.take(segmenter.to_uint8(scan.array), 3, 2)
    first, second = _predictor_masks(segmenter, image, [(25.5, 20.5, 1), (5.5, 5.5, 0)])
    assert first.any() and not np.array_equal(first, second)
    np.testing.assert_array_equal(session.add_prompt(2, 3, 0, ["click", 25.5, 20.5, 1], label=1), first)
    np.testing.assert_array_equal(session.add_prompt(2, 3, 0, ["click", 5.5, 5.5, 0], label=1), second)
    np.testing.assert_array_equal(session.undo(2, 3, 0), first)
    session.add_prompt(2, 3, 0, ["click", 5.5, 5.5, 0], label=1)
    box_mask = session.add_prompt(0, 7, 1, ["box", 0, 3, 4, 30], label=2)  # along another axis: (48, 5) slices
    assert box_mask.shape == (48, 5)
    with pytest.raises(DataError, match="lies outside the 48 x 40 slice"):
        session.add_prompt(2, 1, 0, ["click", 50, 3, 1], label=1)

    # A new session on the same output (a restarted server) replays the saved prompts.
    again = Annotation(scan, segmenter, output)
    np.testing.assert_array_equal(again.mask(2, 3, 0), second)
    labels = again.label_map()
    expected = np.zeros(scan.array.shape, np.uint8)
    expected[..., 3][second] = 1
    expected[7][box_mask] = 2
    np.testing.assert_array_equal(labels, expected)
    assert again.save() == output
    written = nib.load(output)
    np.testing.assert_allclose(written.affine, AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)
    with pytest.raises(FileExistsError, match="exists; confirm to replace it"):
        again.save()
    again.save(overwrite=True)

    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(scan.array), AFFINE), other)
    with pytest.raises(DataError, match="holds work on"):
        Annotation(read_scan(str(other)), segmenter, output)


def test_neighbours_are_embedded_ahead(segmenter, scan, tmp_path):
    session = Annotation(scan, segmenter, str(tmp_path / "labels.nii.gz"))
    session.prefetch(2, 2, radius=1)
    deadline = time.time() + 120
    while time.time() < deadline and not all(session.cached(2, k) for k in (1, 2, 3)):
        time.sleep(0.05)
    assert all(session.cached(2, k) for k in (1, 2, 3)) and not session.cached(2, 0)
    before = session.embedded
    session.add_prompt(2, 3, 0, ["click", 20, 20, 1], label=1)
    assert session.embedded == before == 3  # the click ran the decoder only
