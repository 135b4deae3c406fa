"""The annotation server on a tiny random SAM (standing in for a converted one), started on a free port."""

import contextlib
import threading

import nibabel as nib
import pytest

from modeling.tiny_sams import make
from samjax.annotate import __main__ as annotate
from samjax.scans.segmenter import Segmenter


@pytest.fixture()
def start_server(tmp_path, monkeypatch):
    """``start_server(hu, affine, labels, output, seed, *extra)``: writes ``hu`` as ``ct.nii.gz`` (``hu`` None:
    keeps the one written before) and serves it with ``python -m samjax.annotate --sam ... --ct-window 40,400``
    and the ``extra`` arguments; stopped after the test."""
    servers = []

    def start(hu, affine, labels, output, seed, *extra):
        if hu is not None:
            nib.save(nib.Nifti1Image(hu, affine), tmp_path / "ct.nii.gz")
        model = make("vit", seed=seed)
        monkeypatch.setattr(Segmenter, "from_checkpoint", staticmethod(
            lambda checkpoint, model_type, preprocessing: Segmenter(model, ("background",), 64,
                                                                    preprocessing=preprocessing)))
        server = annotate.main(["--input", str(tmp_path / "ct.nii.gz"), "--sam", "sam", "--labels", labels,
                                "--ct-window", "40,400", "--output", str(output), "--port", "0", *extra], serve=False)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        with contextlib.suppress(Exception):
            server.shutdown()
            server.server_close()
