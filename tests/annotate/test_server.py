"""The annotation server over HTTP, as the page uses it: info, slices with window/level, a click, the label PNG,
undo, save with confirmation; a bad request is a JSON error naming the problem and the server goes on."""

import io
import json
import urllib.error
import urllib.request

import nibabel as nib
import numpy as np
import pytest
from PIL import Image



@pytest.fixture()
def server(tmp_path, start_server):
    hu = np.full((30, 36, 4), -100, np.int16)
    hu[8:22, 10:30] = 200
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    return start_server(hu, affine, "organ,fat", tmp_path / "ct_labels.nii.gz", seed=2), hu, affine, tmp_path


def _get(server, path):
    with urllib.request.urlopen(server.url.rstrip("/") + path) as response:
        return response.headers.get("Content-Type"), response.read()


def _post(server, path, body):
    request = urllib.request.Request(server.url.rstrip("/") + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_click_gives_a_mask_that_undo_and_save_handle(server):
    server, hu, affine, tmp_path = server
    kind, page = _get(server, "/")
    assert kind.startswith("text/html") and b"/static/app.js" in page
    assert b"fetch(" in _get(server, "/static/app.js")[1]
    info = json.loads(_get(server, "/api/info")[1])
    assert info["shape"] == [30, 36, 4] and info["labels"] == ["background", "organ", "fat"] and info["axis"] == 2

    kind, body = _get(server, "/api/slice?axis=2&index=1&level=50&width=300")
    gray = np.asarray(Image.open(io.BytesIO(body)))
    assert kind == "image/png" and gray.shape == (30, 36)
    assert gray[0, 0] == 0 and gray[10, 20] == round((200 - (50 - 150)) / 300 * 255)  # window/level of HU

    status, result = _post(server, "/api/prompt", {"axis": 2, "index": 1, "object": 1, "label": 1,
                                                   "prompt": ["click", 20.5, 14.5, 1]})
    assert status == 200 and result["pixels"] > 0
    labels = np.asarray(Image.open(io.BytesIO(_get(server, "/api/labels?axis=2&index=1")[1])))
    assert labels.shape == (30, 36) and set(np.unique(labels)) == {0, 1} and (labels == 1).sum() == result["pixels"]
    assert not np.asarray(Image.open(io.BytesIO(_get(server, "/api/labels?axis=2&index=2")[1]))).any()
    prompts = json.loads(_get(server, "/api/prompts?axis=2&index=1")[1])  # what the page draws over the slice
    assert prompts == {"objects": [{"object": 1, "label": 1, "prompts": [["click", 20.5, 14.5, 1]]}]}
    assert json.loads(_get(server, "/api/prompts?axis=2&index=2")[1]) == {"objects": []}

    for bad, message in [({"axis": 2, "index": 1, "label": 1, "prompt": ["click", 99, 3, 1]}, "lies outside"),
                         ({"axis": 2, "index": 9, "label": 1, "prompt": ["click", 3, 3, 1]}, "outside the scan"),
                         ({"axis": 2, "index": 1, "label": 7, "prompt": ["click", 3, 3, 1]}, "label 7 is not one"),
                         ({"axis": 2, "index": 1, "label": 1}, "missing field 'prompt'")]:
        status, result = _post(server, "/api/prompt", bad)
        assert status == 400 and message in result["error"]

    status, result = _post(server, "/api/save", {})
    assert status == 200 and result["saved"] == str(tmp_path / "ct_labels.nii.gz")
    written = nib.load(tmp_path / "ct_labels.nii.gz")
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj)[..., 1], labels)
    status, result = _post(server, "/api/save", {})
    assert status == 409 and "confirm" in result["error"]
    assert _post(server, "/api/undo", {"axis": 2, "index": 1, "object": 1}) == (200, {"pixels": 0})
    assert _post(server, "/api/save", {"overwrite": True})[0] == 200
    assert not np.asarray(nib.load(tmp_path / "ct_labels.nii.gz").dataobj).any()
