"""The preview picture: one tile per example, labels and prompts drawn where the pipeline put them."""

import numpy as np
from PIL import Image

from samjax.data import preview


def test_preview_draws_labels_and_prompts(tmp_path, capsys):
    from samjax.data.builders import phantoms

    phantoms.build(str(tmp_path), "labeled_64", num_train=8, num_validation=1, num_test=1)
    out = tmp_path / "p.png"
    argv = ["--data", str(tmp_path / "phantoms" / "labeled_64_8_1_1" / "1.0.0"), "--count", "6",
            "--image-size", "64", "--prompts", "--augment", "--output", str(out)]
    assert preview.main(argv) == 0
    assert "6 examples" in capsys.readouterr().out
    picture = np.asarray(Image.open(out))
    assert picture.shape == (128, 256, 3)  # 2 rows x 4 columns of 64 px tiles, the last two empty
    assert picture[64:, 128:].max() == 0
    yellow = (picture[..., 0] > 200) & (picture[..., 1] > 200) & (picture[..., 2] < 80)
    assert yellow[:64, :64].sum() > 20  # box outlines in the first tile


def test_preview_of_a_missing_data_set(tmp_path, capsys):
    assert preview.main(["--data", "nothing_here", "--data-dir", str(tmp_path)]) == 2
    assert "python -m samjax.data.build" in capsys.readouterr().err
