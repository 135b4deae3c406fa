"""Helpers as Meta's ``segment_anything.utils`` has them, plus pictures: the mask generator's mask data and
crops (``amg``), box non-maximum suppression (``nms``), the longest-side resize of images and prompts
(``transforms``, ``resize``) and drawing masks and prompts over images (``overlay``).

May import: numpy, JAX, Pillow and each other; nothing else of samjax.
"""
