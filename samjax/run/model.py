"""The model a config describes: what ``train.py`` builds, and what ``eval.py``, ``samjax.segment`` and the
annotation page rebuild from a run's ``config.json``.

``build_model(cfg, num_classes)`` builds SAM for the config: the encoder's spec (plus ``model.overrides``
for tiny test sizes), one mask token per class (background included) in auto mode, weights from
``init_checkpoint`` (position embeddings resized to the training size; the decoder's per-token heads
re-initialized when the class count differs) loaded after LoRA or adapters are added, then drop path
and remat. Its two halves serve the other objectives too: ``build_sam`` (spec and PEFT) and
``finish_model`` (loading and switches, on any model holding SAM's components under their names, such
as MAE's). A training workdir loads as a checkpoint: what the model lacks is ignored (MAE's decoder),
except LoRA or adapter weights, which would be silently lost. ``build_unet`` builds the study's baseline,
and ``model_for_run`` whichever of the two a run's config trained.
"""

from __future__ import annotations

import os
import re

import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax import checkpoint as ckpt
from samjax.build_sam import build_sam_from_spec, read_checkpoint
from samjax.errors import CheckpointError, ConfigError
from samjax.model_spec import get_spec
from samjax.modeling import encoder_switches, peft
from samjax.modeling.keys import HostKeys, to_device
from samjax.modeling.sam import Sam
from samjax.modeling.unet import UNet
from samjax.params import assign_params, flat_params, param_shapes
from samjax.run.info import run_config
from samjax.weights.resize_pos import resize_position_embeddings

HEAD_PATTERN = re.compile(r"^mask_decoder\.(mask_tokens|iou_token|output_hypernetworks_mlps|iou_prediction_head)\b")
SCOPES = ("decoder", "encoder_decoder")
PEFTS = ("none", "adapter", "lora")


def per_class_tokens(cfg) -> bool:
    """Whether the decoder has one mask token per class: fine-tuning in auto mode (else SAM's 3 + 1)."""
    return cfg.get("objective", "finetune") == "finetune" and cfg.train.mode == "auto"


def model_spec(cfg, num_classes: int | None = None):
    """The SamSpec of a config: encoder, image size, overrides, and (auto mode) one mask token per class.

    ``num_classes`` (background included) gives ``num_classes`` mask tokens when :func:`per_class_tokens`.
    """
    spec = get_spec(cfg.model.encoder).replace(image_size=int(cfg.data.image_size))
    overrides = dict(cfg.model.get("overrides", {}) or {})
    for key, value in overrides.items():
        if isinstance(value, list):
            overrides[key] = tuple(value)
    spec = spec.replace(**overrides)
    if num_classes is not None and per_class_tokens(cfg):
        spec = spec.replace(num_multimask_outputs=num_classes - 1)
    if spec.image_size < spec.patch_size or spec.image_size % spec.patch_size:
        raise ConfigError(f"data.image_size={spec.image_size} must be a positive multiple of {spec.patch_size} "
                          f"(the patch size of {cfg.model.encoder})")
    return spec


def checkpoint_params(path: str, which: str = "latest") -> dict[str, np.ndarray]:
    if os.path.isdir(os.path.join(path, "checkpoints")):  # a samjax training workdir
        return ckpt.latest_model_params(path, which)
    return read_checkpoint(path)[1]


def load_matching(model: Sam, params: dict[str, np.ndarray], source: str, new_heads: bool = False) -> list[str]:
    """Loads ``params`` into ``model``; returns the heads left at their initialization (shape changed, or
    every head with ``new_heads``: the tokens mean something else now).

    Every other parameter must be present with its exact shape (after position-embedding resizing).
    """
    shapes = param_shapes(model)
    params = resize_position_embeddings(params, shapes)
    reinit = sorted(k for k in shapes if HEAD_PATTERN.match(k)
                    and (new_heads or k not in params or params[k].shape != shapes[k]))
    problems = [f"  {k}: missing" for k in shapes if k not in params and k not in reinit and not _is_new(k)]
    problems += [f"  {k}: checkpoint {params[k].shape} vs model {shapes[k]}" for k in shapes
                 if k in params and k not in reinit and params[k].shape != shapes[k]]
    if problems:
        raise CheckpointError(f"{source} does not fit the model:\n" + "\n".join(problems[:30]))
    dropped = sorted({"LoRA" if "lora" in k else "adapter" for k in params if k not in shapes and _is_peft(k)})
    if dropped:
        raise CheckpointError(f"{source} holds {' and '.join(dropped)} weights that this model has none of; "
                              f"set --config.train.peft={dropped[0].lower()} to keep them")
    current = flat_params(model)
    values = {k: (params[k] if k in params and k not in reinit else np.asarray(current[k])) for k in shapes}
    flat = nnx.to_flat_state(nnx.state(model))
    for path, var in flat:
        var.set_value(np.asarray(values[".".join(str(p) for p in path)], dtype=var.dtype))
    nnx.update(model, nnx.from_flat_state(flat))
    return reinit


def _is_new(name: str) -> bool:
    """Parameters that a plain SAM checkpoint does not have (PEFT, MAE's mask token and decoder)."""
    return "lora" in name or "adapter" in name or name.startswith(("mae_decoder.", "mask_token"))


def _is_peft(name: str) -> bool:
    return ".lora_" in name or ".adapter_" in name


def build_model(cfg, num_classes: int | None = None, log=print) -> Sam:
    """SAM for ``cfg`` (see the module docstring); ``log`` receives one line per decision.

    ``num_classes`` gives the decoder one mask token per class in auto mode (:func:`per_class_tokens`).
    """
    return finish_model(build_sam(cfg, num_classes), cfg, log)


def build_sam(cfg, num_classes: int | None = None) -> Sam:
    """A randomly initialized SAM for ``cfg``, LoRA or adapters added (nothing loaded yet)."""
    if cfg.train.scope not in SCOPES:
        raise ValueError(f"train.scope must be one of {SCOPES}, got {cfg.train.scope!r}")
    if cfg.train.peft not in PEFTS:
        raise ValueError(f"train.peft must be one of {PEFTS}, got {cfg.train.peft!r}")
    spec = model_spec(cfg, num_classes)
    rngs = HostKeys(int(cfg.seed))
    model = build_sam_from_spec(spec, rngs=rngs)
    encoder_in_scope = cfg.train.scope == "encoder_decoder"
    if cfg.train.peft == "lora":
        peft.apply_lora(model, rank=int(cfg.train.lora_rank), alpha=float(cfg.train.lora_alpha),
                        encoder_blocks=_blocks(cfg.train.lora_encoder_blocks) if encoder_in_scope else None,
                        decoder=True, rngs=rngs)
    elif cfg.train.peft == "adapter":
        peft.apply_adapters(model, encoder_blocks=_blocks(cfg.train.adapter_encoder_blocks) if encoder_in_scope else None,
                            decoder=True, rngs=rngs)
    return to_device(model)


def finish_model(model, cfg, log=print):
    """Loads ``init_checkpoint`` into ``model`` (a Sam, or a model holding SAM's components under their
    names, e.g. MAE's) and sets drop path, remat and the attention form. Loading comes after PEFT, so a fine-tuned run's
    LoRA/adapter weights load too (a plain SAM has none: they keep their initialization)."""
    if cfg.init_checkpoint:
        path = os.path.expanduser(cfg.init_checkpoint)
        switched = _tokens_switched(path, cfg)
        reinit = load_matching(model, checkpoint_params(path, cfg.get("init_checkpoint_which", "latest")), path,
                               new_heads=switched)
        tokens = model.mask_decoder.num_mask_tokens
        why = " (the run's tokens were per class, these are SAM's, or the other way)" if switched else ""
        log(f"loaded {path}" + (f"; re-initialized {len(reinit)} head tensors for {tokens} mask tokens{why}"
                                if reinit else ""))
    else:
        log(f"no init_checkpoint: {cfg.model.encoder} starts from random weights")
    if cfg.model.drop_path:
        encoder_switches.set_drop_path(model, float(cfg.model.drop_path))
    if cfg.model.remat:
        encoder_switches.set_remat(model, True)
    encoder_switches.set_attention(model, cfg.model.get("attention", "auto"))
    return model


def _tokens_switched(path: str, cfg) -> bool:
    """Whether ``path`` is a samjax run whose mask tokens meant classes while ``cfg``'s are SAM's (or the other
    way): same shapes maybe (4 classes, 4 tokens), but a class head is no prompt head, so the heads restart."""
    if not cfg.get("model") or not os.path.isfile(os.path.join(path, "config.json")):
        return False  # a converted SAM or a .pth: SAM's own tokens
    source = run_config(path)
    if "train" not in source:
        return False
    return per_class_tokens(source) != per_class_tokens(cfg)


def _blocks(value):
    if value in ("all", None):
        return value
    return [int(v) for v in value]


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # model.dtype: the compute dtype


def build_unet(cfg, num_classes: int, log=print) -> UNet:
    """The UNet baseline for ``cfg`` (``model.unet.features``), from scratch or from a UNet run
    (``init_checkpoint``)."""
    model = to_device(UNet(num_classes, tuple(cfg.model.unet.features), rngs=HostKeys(int(cfg.seed))))
    if cfg.init_checkpoint:
        path = os.path.abspath(os.path.expanduser(cfg.init_checkpoint))
        if not os.path.isdir(os.path.join(path, "checkpoints")):
            raise ConfigError(f"init_checkpoint={cfg.init_checkpoint!r}: a UNet starts from scratch or from "
                              "a UNet training workdir")
        assign_params(model, checkpoint_params(path, cfg.get("init_checkpoint_which", "latest")), source=path)
        log(f"loaded {path}")
    else:
        log(f"UNet {tuple(cfg.model.unet.features)} starts from random weights")
    return model


def model_for_run(cfg, num_classes: int, log=print):
    """The model a run's config trained (SAM, or the UNet of ``objective=unet``), loaded as ``cfg`` says."""
    if cfg.get("objective", "finetune") == "unet":
        return build_unet(cfg, num_classes, log)
    return build_model(cfg, num_classes, log=log)
