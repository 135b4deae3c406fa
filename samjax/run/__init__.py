"""A training run as others use it: what it was and saw (``info``: its ``config.json`` and ``data.json``) and
the model its config describes (``model``: SAM with its PEFT and init checkpoint, or the UNet baseline).
``train.py`` builds its model here, and ``eval.py``, ``samjax.segment`` and the annotation page rebuild a
finished run's model here, without the trainer.

May import: the model, weights and checkpoints, the data selection; never the trainer, an objective or the
evaluation.
"""
