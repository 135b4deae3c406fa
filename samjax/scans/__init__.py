"""Scans in and out: reading and writing images, NIfTI volumes and DICOM series with their geometry (``io``),
prompt files (``prompts``), the folder runner with its summary and pictures (``runner``), and the
``Segmenter`` (``segmenter``), which turns a trained run or a converted SAM into a segmentation of a scan.

May import: the model and its forward passes, the run a model comes from (``samjax.run``), the predictor,
the data build's intensity mapping and ``samjax.utils``; never the trainer or the evaluation.
"""


def __getattr__(name: str):
    # ``from samjax.scans import Segmenter``, imported on first use: reading a scan needs no model.
    if name == "Segmenter":
        from samjax.scans.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'samjax.scans' has no attribute {name!r}")
