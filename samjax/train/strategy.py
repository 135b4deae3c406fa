"""What a strategy trains: ``trainable_filter(cfg)``, the parameters the optimizer updates (``train.scope`` x
``train.peft``); the model itself is built by ``samjax.run.model`` (spec, PEFT, init checkpoint).

- ``peft=none``: every parameter of the mask decoder, and of the image encoder with ``encoder_decoder``;
- ``peft=lora|adapter``: the LoRA/adapter parameters inside the scope, plus the decoder's per-token
  heads (mask tokens, hypernetwork MLPs, IoU head), which must be learned when classes change.

``train.prompt_encoder`` adds every parameter of the prompt encoder (point, box, "not a point" and
"no mask" embeddings, the mask-downscaling convolutions) to what is trained, whatever the PEFT: SAM's
interactive stage trains the whole model, and a model that starts from random or auto-mode weights has no
other way to learn what a click or a fed-back mask means (on in ``configs/interactive.py``). Off, the
prompt encoder keeps SAM's embeddings as they are (MedSAM-style tuning; auto mode uses only "no mask").
Everything else keeps its loaded values bit for bit.
"""

from __future__ import annotations

from flax import nnx

from samjax.modeling import peft


def trainable_filter(cfg):
    """The nnx filter of the parameters the optimizer updates (see the module docstring)."""
    decoder = nnx.PathContains("mask_decoder")
    encoder = nnx.PathContains("image_encoder")
    in_scope = nnx.Any(decoder, encoder) if cfg.train.scope == "encoder_decoder" else decoder
    prompts = nnx.All(nnx.Param, nnx.PathContains("prompt_encoder")) if train_prompt_encoder(cfg) else False
    if cfg.train.peft == "none":
        return nnx.Any(nnx.All(nnx.Param, in_scope), prompts)
    kind = nnx.LoRAParam if cfg.train.peft == "lora" else peft.AdapterParam
    heads = nnx.Any(*(nnx.PathContains(n) for n in ("mask_tokens", "output_hypernetworks_mlps", "iou_prediction_head")))
    return nnx.Any(nnx.All(nnx.OfType(kind), in_scope), nnx.All(nnx.Param, decoder, heads), prompts)


def train_prompt_encoder(cfg) -> bool:
    """``train.prompt_encoder`` (absent in configs written before it existed: frozen, as they trained)."""
    return bool(cfg.train.get("prompt_encoder", False))
