"""What one annotation server works on: a single scan, or a folder of them opened one at a time.

``--input`` is a 2D image, a NIfTI volume, a DICOM series folder, or a folder of any of these (the inference
command's rule, ``samjax.scans.io``); each input gets its own label map (``--output``: a file for one input, a
folder for a folder of inputs, named as ``python -m samjax.segment`` names them) and its own progress file
beside it. Opening an input reads it; one that cannot be read leaves the open one open and says why, so the
page can name the file and go on. Only the open input holds embeddings: switching closes the other (its work
is on disk and comes back when it is opened again).
"""

from __future__ import annotations

import os

from samjax.annotate.session import Annotation
from samjax.errors import ConfigError, DataError
from samjax.scans.runner import LABEL_SUFFIXES, output_for
from samjax.scans.io import is_dicom_series, label_map_name, list_inputs, read_scan


class Workspace:
    """The inputs of ``input_path`` and their outputs; :attr:`current` is the open :class:`Annotation`.

    Args:
      input_path: a scan or a folder of scans.
      segmenter: the prompted model (``samjax.scans.segmenter.Segmenter``).
      output: the label map (one input) or the folder of label maps; None: ``annotations/``.
      proposer: an auto-mode ``Segmenter`` whose class maps the page can propose, or None.
      proposal_labels: ``{proposer class index: label value}``: what a proposed class is saved as.
    """

    def __init__(self, input_path: str, segmenter, output: str | None = None, proposer=None, proposal_labels=None):
        self.segmenter, self.proposer, self.proposal_labels = segmenter, proposer, proposal_labels
        self.single = not os.path.isdir(input_path) or is_dicom_series(input_path)
        self.inputs = [input_path] if self.single else list_inputs(input_path)
        if not self.inputs:
            raise DataError(f"--input {input_path}: the folder holds no inputs")
        output = output or "annotations"
        if not self.single and output.lower().endswith(LABEL_SUFFIXES):
            raise ConfigError(f"--output {output}: a folder of inputs is saved to a folder of label maps; give a "
                              "folder name")
        self.output = output
        self.index: int | None = None
        self.current: Annotation | None = None

    def output_of(self, index: int, scan=None) -> str:
        """The label map of input ``index`` (a single input's default name needs the scan read)."""
        path = self.inputs[index]
        if self.single and not self.output.lower().endswith(LABEL_SUFFIXES):
            return os.path.join(self.output, label_map_name(scan or read_scan(path)))
        target = output_for(path, self.output, self.single)
        return target or os.path.join(self.output, os.path.basename(os.path.normpath(path)) + ".nii.gz")

    def open(self, index: int) -> Annotation:
        """Opens input ``index`` (the open one stays open when it cannot be read: a ``DataError`` says why)."""
        if not 0 <= index < len(self.inputs):
            raise DataError(f"input {index} is not one of 0..{len(self.inputs) - 1}")
        if index == self.index:
            return self.current
        path = self.inputs[index]
        scan = read_scan(path, channel=self.segmenter.preprocessing.get("channel"))
        output = self.output_of(index, scan)
        if scan.volume == output.lower().endswith(".png"):
            raise ConfigError(f"--output {output}: a {'volume' if scan.volume else '2D image'} is saved as "
                              f"{'NIfTI (.nii.gz)' if scan.volume else 'PNG'}")
        annotation = Annotation(scan, self.segmenter, output, proposer=self.proposer,
                                proposal_labels=self.proposal_labels)
        if self.current is not None:
            self.current.close()
        self.index, self.current = index, annotation
        return annotation

    def open_first(self) -> Annotation:
        """Opens the first input that can be read; a ``DataError`` naming each when none can."""
        reasons = []
        for index in range(len(self.inputs)):
            try:
                return self.open(index)
            except DataError as e:
                reasons.append(str(e))
                if self.single:
                    raise
        raise DataError(f"none of the {len(self.inputs)} inputs can be read: " + "; ".join(reasons[:3]))

    def entries(self) -> list[dict]:
        """Each input's name, whether its label map exists and whether work on it is kept."""
        rows = []
        for i, path in enumerate(self.inputs):
            output = self.current.output if i == self.index else self._known_output(i)
            rows.append({"name": os.path.basename(os.path.normpath(path)), "output": output,
                         "saved": bool(output) and os.path.exists(output),
                         "in_progress": bool(output) and os.path.exists(output + ".progress.json")})
        return rows

    def _known_output(self, index: int) -> str | None:
        if self.single and not self.output.lower().endswith(LABEL_SUFFIXES):
            return None  # named after the scan: known once it is open
        return self.output_of(index)
