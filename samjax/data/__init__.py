"""Medical data in: built-in and user data sets (TFDS, built offline), the Grain pipelines with augmentation
and simulated prompts, and which data sets a config names (``selection``).

May import: numpy, TFDS, Grain, ``samjax.errors`` and ``samjax.utils``; never the model, training or
evaluation.
"""
