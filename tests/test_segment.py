"""The command-line demo: it writes a real overlay PNG and reports bad input clearly."""

import numpy as np
import pytest
from PIL import Image

from samjax import segment
from samjax.utils.overlay import draw_prompts, overlay_masks


def test_overlay_colours_masks_and_outlines():
    image = np.full((20, 30, 3), 100, np.uint8)
    mask = np.zeros((1, 20, 30), bool)
    mask[0, 5:15, 10:20] = True
    out = overlay_masks(image, mask, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], (100, 100, 100))  # outside: untouched
    np.testing.assert_array_equal(out[10, 15], (178, 82, 82))  # inside: half red (255, 64, 64)
    np.testing.assert_array_equal(out[5, 15], (255, 64, 64))  # outline: full colour
    drawn = draw_prompts(out, np.array([[2.0, 2.0]]), np.array([0]), np.array([1, 1, 28, 18]))
    assert tuple(drawn[2, 2]) == (230, 0, 0)  # background point in red


def test_segment_writes_overlay(tmp_path, capsys):
    image = np.zeros((90, 120), np.uint16)
    image[30:60, 40:80] = 4000  # a 16-bit "scan"
    Image.fromarray(image).save(tmp_path / "scan.png")
    out = tmp_path / "overlay.png"
    code = segment.main(["--image", str(tmp_path / "scan.png"), "--image-size", "128",
                         "--point", "60,45", "--point", "5,5,0", "--output", str(out)])
    assert code == 0
    written = np.asarray(Image.open(out))
    assert written.shape == (90, 120, 3)
    printed = capsys.readouterr()
    assert "random weights" in printed.err and "wrote" in printed.out
    assert tuple(written[5, 5]) != tuple(written[0, 0])  # the point is drawn


def test_segment_default_phantom(tmp_path):
    out = tmp_path / "phantom.png"
    assert segment.main(["--image-size", "128", "--output", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (400, 400, 3)


def test_segment_reports_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit):
        segment.main(["--box", "1,2,3"])
    assert "--box must be 4" in capsys.readouterr().err
    code = segment.main(["--image-size", "128", "--point", "500,10", "--output", str(tmp_path / "x.png")])
    assert code == 1 and "outside the 400x400" in capsys.readouterr().err
    code = segment.main(["--image", str(tmp_path / "missing.png")])
    assert code == 1 and "cannot read image" in capsys.readouterr().err


def test_segment_everything(tmp_path, capsys):
    out = tmp_path / "all.png"
    code = segment.main(["--image-size", "128", "--everything", "--points-per-side", "2", "--output", str(out)])
    assert code == 0 and "segment everything:" in capsys.readouterr().out
    assert np.asarray(Image.open(out)).shape == (400, 400, 3)
