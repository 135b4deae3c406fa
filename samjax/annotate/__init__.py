"""Annotating scans by clicking (``python -m samjax.annotate``): a session of masks made with SAM's prompts
(``session``), a folder of scans and their progress (``workspace``), and the local web page that serves it
(``server``, behind ``guard``).

May import: the predictor, ``samjax.scans`` and the shared modules; never the trainer or the evaluation.
"""
