"""Checkpoints from elsewhere: PyTorch ``.pth`` files read without pickle's code execution (``torch_pickle``),
safetensors (``safetensors_file``), Meta's and Hugging Face's SAM names mapped to samjax's (``meta_sam``,
``hf_sam``), and position embeddings resized to another input size (``resize_pos``).

May import: numpy, ``samjax.model_spec``, ``samjax.errors`` and ``samjax.utils``; never modeling code that
trains, data or evaluation.
"""
