"""The page on trained models, in headless Chromium: held-out phantom slices stacked into a NIfTI volume, a click in
the middle of the liver and up to 3 corrections placed as the click protocol places them give, click after click,
the Dice the interactively trained model's ``eval.py`` gives that object, the corrections raise it to that model's
``eval.py`` liver curve at the same click count, and the saved label map reads back
with the volume's affine; an auto-mode run proposes every class of a slice, a click corrects a proposal, and a
folder of inputs opens one input after another (an unreadable one is named on the page and the open one
stays)."""

import csv
import json
import threading

import nibabel as nib
import numpy as np
from scipy import ndimage

from page_driver import click, open_page, wait_status
from samjax.annotate import __main__ as annotate
from samjax.data import pipeline

AFFINE = np.array([[0.0, -0.8, 0.0, 30.0], [0.8, 0.0, 0.0, -12.0], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1]])


def _test_volume(data_dir, folder):
    """The test split's slices stacked along axis 2 (``(64, 64, N)`` uint8) and their labels, saved in ``folder``."""
    src = pipeline.open_source("phantoms/labeled_64", "test", data_dir)
    images = np.stack([src.records[i]["image"] for i in range(len(src.records))], -1)
    labels = np.stack([src.records[i]["label"] for i in range(len(src.records))], -1)
    folder.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(images, AFFINE), folder / "phantoms.nii.gz")
    return images, labels, list(src.class_names)


def _dice(p, g):
    return 2 * (p & g).sum() / (p.sum() + g.sum())


def _serve(*args):
    server = annotate.main([*args, "--port", "0"], serve=False)
    assert not isinstance(server, int), "the server did not start"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _click_and_correct(page, server, truth, k: int, label: int, corrections: int = 3) -> tuple[list, np.ndarray]:
    """A click in the middle of ``truth`` on slice ``k``, then up to ``corrections`` clicks where the click protocol
    puts them: the innermost pixel of the larger error (a missed part: left click; a false alarm: right click; of
    equally deep pixels the first in raster order), as a person fixes the worst mistake first. Returns the Dice
    after each click and the last mask."""
    page.evaluate(f"setSlice({k})")
    page.wait_for_function(f"state.index === {k} && state.image !== null")
    page.select_option("#label", str(label))
    depth = ndimage.distance_transform_edt(np.pad(truth, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    positive, dice, mask = True, [], None
    for _ in range(1 + corrections):
        page.evaluate("document.getElementById('status').textContent = ''")
        click(page, c, r, button="left" if positive else "right")
        wait_status(page, "mask of")
        assert server.annotation.objects[(2, k, 1000 + label)]["prompts"][-1] == ["click", c + 0.5, r + 0.5,
                                                                                  int(positive)]
        mask = server.annotation.mask(2, k, 1000 + label)
        dice.append(_dice(mask, truth))
        if dice[-1] >= 0.95:
            break
        misses, alarms = (ndimage.distance_transform_edt(np.pad(e, 1))[1:-1, 1:-1]
                          for e in (truth & ~mask, mask & ~truth))
        r, c = np.unravel_index(int(np.argmax(misses + alarms)), truth.shape)  # the first deepest, as eval.py
        positive = bool(misses[r, c] > 0)
    return dice, mask


def test_a_click_and_corrections_on_the_liver_score_the_models_eval_dice(interactive_run, data_dir, tmp_path):
    images, labels, names = _test_volume(data_dir, tmp_path / "scans")
    liver = names.index("liver")
    # The five slices where the liver is largest, as a person would pick them; the largest first.
    slices = [int(k) for k in np.argsort(-(labels == liver).sum((0, 1)), kind="stable")[:5]]
    output = tmp_path / "labels" / "phantoms.nii.gz"
    server = _serve("--input", str(tmp_path / "scans" / "phantoms.nii.gz"), "--workdir", str(interactive_run),
                    "--output", str(output))
    with open_page(server) as page:
        runs = {k: _click_and_correct(page, server, labels[..., k] == liver, k, liver) for k in slices}
        page.click("#save")
        wait_status(page, "saved")
    dice = [runs[k][0] for k in slices]
    # The page gives what eval.py gives for the same object after the same clicks (its objects.csv: the test
    # split's image k is the volume's slice k), from the first click to the last correction.
    with open(interactive_run / "eval" / "objects.csv") as f:
        reference = {(int(r["image"]), r["class"]): r for r in csv.DictReader(f)}
    expected = [[float(reference[(k, "liver")][f"dice_{n}"]) for n in range(1, len(d) + 1)] for k, d in zip(slices, dice)]
    for got, want in zip(dice, expected):
        np.testing.assert_allclose(got, want, atol=0.02, err_msg=f"page {got}, eval.py {want}")
    # One click on the largest liver scores the model's 1-click liver Dice; the corrections help, and end where
    # the model's eval.py curve (every liver of the test split) says they should at that click count.
    curve = json.load(open(interactive_run / "eval" / "metrics.json"))["per_class"]["liver"]["dice_vs_clicks"]
    assert dice[0][0] >= curve[0] - 0.05, (dice[0], curve)
    first, last = np.mean([d[0] for d in dice]), np.mean([d[-1] for d in dice])
    clicks = int(round(np.mean([len(d) for d in dice])))
    assert last > first and last >= curve[clicks - 1] - 0.05, (dice, curve)
    written = nib.load(output)
    np.testing.assert_allclose(written.affine, AFFINE, atol=1e-6)
    saved = np.asarray(written.dataobj)
    assert saved.shape == images.shape and not np.delete(saved, slices, axis=2).any()
    for k in slices:
        np.testing.assert_array_equal(saved[..., k], runs[k][1].astype(np.uint8) * liver)


def test_proposals_corrections_and_a_folder_of_inputs(interactive_run, straight_run, data_dir, tmp_path):
    images, labels, names = _test_volume(data_dir, tmp_path / "scans")
    nib.save(nib.Nifti1Image(images[..., :4], AFFINE), tmp_path / "scans" / "short.nii.gz")
    (tmp_path / "scans" / "notes.txt").write_text("not a scan")
    server = _serve("--input", str(tmp_path / "scans"), "--workdir", str(interactive_run), "--propose",
                    str(straight_run), "--output", str(tmp_path / "labels"))
    from samjax.scans.segmenter import Segmenter

    auto = Segmenter.from_workdir(straight_run).segment_volume(images[..., :4]).labels
    with open_page(server) as page:
        assert page.locator("#input option").all_inner_texts() == ["notes.txt", "phantoms.nii.gz", "short.nii.gz"]
        assert page.evaluate("state.info.current") == 1  # the first input that can be read

        page.select_option("#input", "0")  # the text file: named on the page, the volume stays open
        wait_status(page, "notes.txt")
        assert page.locator("#status").get_attribute("class") == "error" and page.evaluate("state.info.current") == 1

        page.select_option("#input", "2")
        wait_status(page, "ready")
        assert page.evaluate("state.info.shape") == [64, 64, 4] and page.evaluate("state.index") == 2
        page.keyboard.press("p")
        wait_status(page, "proposed")
        a = server.annotation
        proposed = {e["label"] for key, e in a.objects.items() if key[:2] == (2, 2)}
        assert proposed == set(np.unique(auto[..., 2])) - {0}
        np.testing.assert_array_equal(a.label_map()[..., 2], auto[..., 2])  # painted as the run segments it

        body = names.index("body")
        page.select_option("#label", str(body))
        rows, cols = np.nonzero(auto[..., 2] == body)
        page.evaluate("document.getElementById('status').textContent = ''")
        click(page, int(cols[0]), int(rows[0]), button="right")  # a correction of the proposed body
        wait_status(page, "mask of")
        assert a.objects[(2, 2, 1000 + body)]["prompts"][0] == ["propose", body]
        page.keyboard.press("Control+z")
        wait_status(page, "undone")
        np.testing.assert_array_equal(a.mask(2, 2, 1000 + body), auto[..., 2] == body)
        page.keyboard.press("p")  # every class is on the slice already: nothing is replaced
        wait_status(page, "nothing new")
        page.click("#save")
        wait_status(page, "saved")
        assert page.locator("#input option").all_inner_texts()[2] == "short.nii.gz (saved)"  # without a reload
    saved = np.asarray(nib.load(tmp_path / "labels" / "short.nii.gz").dataobj)
    np.testing.assert_array_equal(saved[..., 2], auto[..., 2])
    assert not saved[..., [0, 1, 3]].any()


def test_mismatched_runs_are_refused_in_one_line(interactive_run, straight_run, tmp_path, capsys):
    volume = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.uint8), AFFINE), volume)
    for args, message in [(["--workdir", str(straight_run)], "trained in auto mode"),
                          (["--workdir", str(interactive_run), "--propose", str(interactive_run)], "takes prompts"),
                          (["--workdir", str(interactive_run), "--propose", str(straight_run), "--labels", "liver"],
                           "--labels lacks body")]:
        assert annotate.main(["--input", str(volume), *args], serve=False) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
