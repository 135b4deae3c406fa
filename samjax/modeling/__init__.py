"""SAM's components as the paper names them (``image_encoder``, ``prompt_encoder``, ``mask_decoder``,
``transformer``, ``sam``), MobileSAM's ``tiny_vit``, LoRA and adapters (``peft``), MAE's encoder-decoder
(``mae``), the UNet baseline (``unet``) and the forward passes that training, evaluation and inference share
(``forward``).

May import: JAX, Flax and each other; never data, weights, training or evaluation.
"""
