"""TFDS builders: the procedural phantoms (``phantoms``) and slices of medical volumes (``medical_slices``)."""
