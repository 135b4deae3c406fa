"""The annotation page in headless Chromium (Debian's, driven by Playwright): the slice shows, a click draws the
mask over it in the label's colour, a correction click and undo act on it, and save writes the label map in
the scan's geometry, asking before it replaces the file."""

import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from samjax.annotate.session import Annotation
from samjax.scans import read_scan

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture()
def page_and_server(tmp_path, start_server):
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        message = "the page test drives Debian's Chromium: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    hu = np.full((40, 52, 3), -100, np.int16)
    hu[10:30, 12:40] = 150
    hu[18:22, 20:26] = 400
    affine = np.array([[0.0, -0.8, 0.0, 30.0], [0.8, 0.0, 0.0, -12.0], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1]])
    server = start_server(hu, affine, "liver,lesion", tmp_path / "labels.nii.gz", seed=4)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        yield page, server, affine, tmp_path
        browser.close()


def _canvas_rgb(page, x, y):
    """The canvas colour at slice pixel (x, y)."""
    return page.evaluate(f"""() => {{
        const c = document.getElementById("canvas"), s = state.scale;
        return Array.from(c.getContext("2d").getImageData({x} * s + s / 2, {y} * s + s / 2, 1, 1).data.slice(0, 3));
    }}""")


def _wait_status(page, start: str):
    """Waits until the page's status line starts with ``start``; a failure shows the line."""
    try:
        page.wait_for_function(f"document.getElementById('status').textContent.startsWith({start!r})", timeout=60_000)
    except Exception:
        raise AssertionError(f"status: {page.locator('#status').inner_text()!r}, waiting for {start!r}") from None


def _click(page, x, y, button="left"):
    box = page.locator("#canvas").bounding_box()
    scale = page.evaluate("state.scale")
    page.mouse.click(box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale, button=button)


def test_click_correct_undo_and_save_in_the_browser(page_and_server):
    page, server, affine, tmp_path = page_and_server
    page.goto(server.url)
    _wait_status(page, "ready")
    assert page.evaluate("state.index") == 1 and page.locator("#label option").all_inner_texts() == ["1 liver", "2 lesion"]
    page.wait_for_function("state.image !== null")
    gray_before = _canvas_rgb(page, 20, 15)
    assert gray_before[0] == gray_before[1] == gray_before[2]  # an untouched gray pixel

    _click(page, 20, 15)  # inside the bright block, label 1 (liver: red)
    _wait_status(page, "mask of")
    reference = Annotation(read_scan(str(tmp_path / "ct.nii.gz")), server.annotation.segmenter, str(tmp_path / "r.nii.gz"))
    first = reference.add_prompt(2, 1, 1001, ["click", 20.5, 15.5, 1], label=1)
    assert first[15, 20], "the tiny SAM's mask should hold the clicked pixel"
    red = _canvas_rgb(page, 20, 15)
    assert red[0] > red[1] + 40 and red[0] > red[2] + 40  # the liver's colour over the slice

    page.evaluate("document.getElementById('status').textContent = ''")
    _click(page, 45, 35, button="right")  # outside: a correction
    _wait_status(page, "mask of")
    second = reference.add_prompt(2, 1, 1001, ["click", 45.5, 35.5, 0], label=1)
    page.keyboard.press("Control+z")  # queued after the correction: the page runs changes in order
    _wait_status(page, "undone")
    np.testing.assert_array_equal(server.annotation.mask(2, 1, 1001), first)

    page.click("#save")
    _wait_status(page, "saved")
    written = nib.load(tmp_path / "labels.nii.gz")
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj)[..., 1], first.astype(np.uint8))
    assert not np.array_equal(first, second)

    page.once("dialog", lambda dialog: dialog.accept())  # replacing the saved file asks first
    page.evaluate("document.getElementById('status').textContent = ''")
    page.click("#save")
    _wait_status(page, "saved")
