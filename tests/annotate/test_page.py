"""The annotation page in headless Chromium (Debian's, driven by Playwright): the slice shows, a click draws the
mask over it in the label's colour with the click drawn (green inside, red outside), a correction click and
undo act on it, and save writes the label map in
the scan's geometry, asking before it replaces the file."""

import nibabel as nib
import numpy as np
import pytest

from page_driver import canvas_rgb, click, open_page, wait_status
from samjax.annotate.session import Annotation
from samjax.scans.io import read_scan


@pytest.fixture()
def page_and_server(tmp_path, start_server):
    hu = np.full((40, 52, 3), -100, np.int16)
    hu[10:30, 12:40] = 150
    hu[18:22, 20:26] = 400
    affine = np.array([[0.0, -0.8, 0.0, 30.0], [0.8, 0.0, 0.0, -12.0], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1]])
    server = start_server(hu, affine, "liver,lesion", tmp_path / "labels.nii.gz", seed=4)
    with open_page(server) as page:
        yield page, server, affine, tmp_path


def test_click_correct_undo_and_save_in_the_browser(page_and_server):
    page, server, affine, tmp_path = page_and_server
    wait_status(page, "ready")
    assert page.evaluate("state.index") == 1 and page.locator("#label option").all_inner_texts() == ["1 liver", "2 lesion"]
    gray_before = canvas_rgb(page, 20, 15)
    assert gray_before[0] == gray_before[1] == gray_before[2]  # an untouched gray pixel

    click(page, 20, 15)  # inside the bright block, label 1 (liver: red)
    wait_status(page, "mask of")
    reference = Annotation(read_scan(str(tmp_path / "ct.nii.gz")), server.annotation.segmenter, str(tmp_path / "r.nii.gz"))
    first = reference.add_prompt(2, 1, 1001, ["click", 20.5, 15.5, 1], label=1)
    assert first[15, 20], "the tiny SAM's mask should hold the clicked pixel"
    rows, cols = np.nonzero(first)
    far = np.hypot(rows - 15, cols - 20) >= 3  # away from the click's marker
    y, x = int(rows[far][0]), int(cols[far][0])
    red = canvas_rgb(page, x, y)
    assert red[0] > red[1] + 40 and red[0] > red[2] + 40  # the liver's colour over the slice
    green = canvas_rgb(page, 20, 15)
    assert green[1] > green[0] + 100 and green[1] > green[2] + 100  # the click drawn where it was made (inside)
    assert page.evaluate("state.prompts") == [{"object": 1001, "label": 1, "prompts": [["click", 20.5, 15.5, 1]]}]

    page.evaluate("document.getElementById('status').textContent = ''")
    click(page, 45, 35, button="right")  # outside: a correction
    wait_status(page, "mask of")
    second = reference.add_prompt(2, 1, 1001, ["click", 45.5, 35.5, 0], label=1)
    page.keyboard.press("Control+z")  # queued after the correction: the page runs changes in order
    wait_status(page, "undone")
    np.testing.assert_array_equal(server.annotation.mask(2, 1, 1001), first)
    assert len(page.evaluate("state.prompts")[0]["prompts"]) == 1  # the correction's marker is gone with it

    page.click("#save")
    wait_status(page, "saved")
    written = nib.load(tmp_path / "labels.nii.gz")
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj)[..., 1], first.astype(np.uint8))
    assert not np.array_equal(first, second)

    page.once("dialog", lambda dialog: dialog.accept())  # replacing the saved file asks first
    page.evaluate("document.getElementById('status').textContent = ''")
    page.click("#save")
    wait_status(page, "saved")
