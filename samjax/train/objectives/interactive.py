"""Task-expansive prompt-based training: SAM's interactive training simulation, one jitted step.

Each image carries K objects (``samjax.data.prompts.SimulatePrompts``: an interior point, a box with
SAM's noise, the low-resolution target). The step computes the image embedding once and runs the
prompt encoder and mask decoder ``1 + R`` times on it, as the SAM paper's training does (the rounds are
``samjax.interaction.interact``, which the click protocol runs too):

1. **Round 0**: each object's first prompt is its box or its point, with probability
   ``interactive.box_probability`` (0.5). A lone point is ambiguous: the three multimask outputs are
   predicted and only the one of lowest mask loss is trained (the IoU head learns all three); a box
   gives the single-mask output.
2. **Rounds 1..R** (``R = click_rounds + no_click_rounds``, SAM: 8 + 2): the previous round's logits
   of its best mask (highest predicted IoU) go back in as the mask prompt. In a click round one click
   is added, drawn uniformly from the error region of that mask (foreground on a false negative,
   background on a false positive; ``samjax.data.prompts.next_click``); of the rounds without a new
   click one is the last and the others sit at random positions. From round 1 on the decoder gives
   its single-mask output. Masks fed back and clicks are constants: gradients stop between rounds.
3. The loss of every round is SAM's (focal 20 : Dice 1, plus the IoU head's MSE), averaged over the
   ``1 + R`` rounds. The rounds are a ``jax.lax.scan``: the whole step is one program on the mesh.
   The focal loss weighs object pixels by ``interactive.focal_alpha`` (SAM 2's 0.25 for SAM's weights;
   the small models trained from random weights use -1, no weighting: see ``configs/interactive.py``).

The whole model learns, prompt encoder included (``train.prompt_encoder``, as SAM's interactive stage):
its embeddings of clicks, boxes and "not a point", and the convolutions that carry the fed-back mask.

Clicks are sampled on the low-resolution mask grid (the decoder's output, ``S/4`` for SAM's 16-px
patches) and placed at the centre of their cell in input pixels, or with ``interactive.full_res`` on the input
pixels, where the loss is then computed too.

Validation and evaluation follow interactive-segmentation benchmarks (``samjax.evaluation.clicks``, shared
with every prompted model): the box alone, then 1..``eval_clicks`` clicks, each in the middle of the largest
error; ``val_dice`` (which picks the best checkpoint) is the mean of the Dice-vs-clicks curve.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from samjax.data.prompts import OBJECT_MODES, SimulatePrompts
from samjax.errors import ConfigError
from samjax.interaction import click_schedule, first_prompts, interact
from samjax.modeling import forward
from samjax.run import model as run_model
from samjax.train import losses, strategy
from samjax.train.objectives.base import Objective, TrainData
from samjax.evaluation import clicks as click_eval

PROMPT_KEYS = ("image", "valid", "boxes", "points", "object_valid", "object_masks", "object_class")


def _per_object(batch: dict, size: int, full_res: bool):
    """``(N, L, L)`` targets and real (non-padding) pixels of the ``N = B * K`` objects, or ``(N, S, S)`` at the
    input resolution with ``full_res``."""
    b, k = batch["object_valid"].shape
    if full_res:
        s = batch["image"].shape[1]
        return batch["object_masks_full"].reshape(b * k, s, s), jnp.repeat(batch["valid"], k, axis=0)
    valid = jnp.repeat(forward.low_res(batch["valid"], size), k, axis=0)
    return batch["object_masks"].reshape(b * k, size, size), valid


def interactive_loss(model, batch: dict, key, cfg, dtype=jnp.float32):
    """The step's loss (see the module docstring): ``(total, terms)``."""
    c = cfg.interactive
    drop_key, box_key, schedule_key, click_key = jax.random.split(key, 4)
    b, k = batch["object_valid"].shape
    emb = jnp.repeat(forward.encode(model, batch["image"], batch["valid"], drop_key, dtype), k, axis=0)
    full_res = bool(c.get("full_res", False))
    targets, valid = _per_object(batch, batch["object_masks"].shape[-1], full_res)
    size = targets.shape[-1]
    use_box = jax.random.bernoulli(box_key, float(c.box_probability), (b * k,))
    prompts = first_prompts(batch, use_box, int(c.click_rounds) + 1)
    clicks = click_schedule(schedule_key, int(c.click_rounds), int(c.no_click_rounds))
    scale = batch["image"].shape[1] / size
    masks0, iou0, masks, ious, _ = interact(model, emb, prompts, ~use_box, targets, valid, click_key, clicks,
                                            scale, str(c.get("click_mode", "uniform")), dtype)
    if full_res:  # SAM 2's losses are on the masks upsampled to the input size
        masks0, masks = forward.upsample(masks0, size), forward.upsample(masks, size)
    t = masks0.shape[1]
    multi = jnp.arange(t) > 0
    candidates = jnp.where((~use_box)[:, None], multi[None], ~multi[None]).reshape(b, k, t)
    pixel_weights = batch["valid"] if full_res else forward.low_res(batch["valid"], size)
    shape = (b, k, size, size)
    alpha = float(c.get("focal_alpha", 0.25))
    first, first_terms = losses.prompted_loss(masks0.reshape(b, k, t, size, size), iou0.reshape(b, k, t),
                                              targets.reshape(shape), batch["object_valid"],
                                              weights=pixel_weights, candidates=candidates, focal_alpha=alpha)

    def later(m, i):
        return losses.prompted_loss(m.reshape(b, k, 1, size, size), i.reshape(b, k, 1), targets.reshape(shape),
                                    batch["object_valid"], weights=pixel_weights, focal_alpha=alpha)

    rest, rest_terms = jax.vmap(later)(masks, ious)
    rounds = 1 + masks.shape[0]
    total = (first + jnp.sum(rest)) / rounds
    terms = {name: (first_terms[name] + jnp.sum(rest_terms[name])) / rounds for name in first_terms}
    terms["first_round"] = first
    terms["last_round"] = rest[-1] if masks.shape[0] else first
    return total, terms


class InteractiveTraining(Objective):
    """``objective = "interactive"`` (see the module docstring)."""

    name = "interactive"
    needs_class_names = False
    best_metric = "val_dice"
    batch_keys = PROMPT_KEYS

    def check(self, cfg) -> None:
        c = cfg.get("interactive")
        if c is None:
            raise ConfigError("objective=interactive needs a config.interactive block; start from "
                              "configs/interactive.py")
        for field in ("click_rounds", "no_click_rounds"):
            if int(c[field]) < 0:
                raise ConfigError(f"interactive.{field}={c[field]} must be >= 0 (SAM: 8 click rounds, 2 without)")
        if not 0.0 <= float(c.box_probability) <= 1.0:
            raise ConfigError(f"interactive.box_probability={c.box_probability} must be in [0, 1] (SAM: 0.5)")
        alpha = float(c.get("focal_alpha", 0.25))
        if alpha > 1.0:
            raise ConfigError(f"interactive.focal_alpha={alpha} must be in [0, 1], or negative for no weighting "
                              "(SAM 2: 0.25)")
        if str(c.get("click_mode", "uniform")) not in ("uniform", "center"):
            raise ConfigError(f"interactive.click_mode={c.click_mode!r} must be 'uniform' (SAM: anywhere in the "
                              "error region) or 'center' (RITM: the innermost error pixel)")
        if str(c.get("objects", "class")) not in OBJECT_MODES:
            raise ConfigError(f"interactive.objects={c.objects!r} must be one of {', '.join(OBJECT_MODES)}")
        if _skip_names(cfg) and str(c.get("objects", "class")) == "component":
            raise ConfigError("interactive.skip_classes works with objects='class' or 'filled', not 'component'")
        if int(c.eval_clicks) < 1:
            raise ConfigError(f"interactive.eval_clicks={c.eval_clicks} must be >= 1")
        if int(cfg.train.num_objects) < 1:
            raise ConfigError(f"train.num_objects={cfg.train.num_objects} must be >= 1")

    def train_keys(self, cfg) -> tuple[str, ...]:
        return PROMPT_KEYS + (("object_masks_full",) if cfg.interactive.get("full_res", False) else ())

    def prompts(self, cfg, data: TrainData):
        return _simulate(cfg, data.num_classes, _class_names(data))

    def build_model(self, cfg, data: TrainData, log: Callable = print):
        return run_model.build_model(cfg, None, log=log)

    def trainable_filter(self, cfg):
        return strategy.trainable_filter(cfg)

    def loss(self, model, batch, key, cfg, dtype):
        return interactive_loss(model, batch, key, cfg, dtype)

    def validate(self, cfg, trainable, params, frozen, mesh, data, split=None) -> dict:
        scores = click_eval.run_clicks(cfg, trainable, params, frozen, mesh, _class_names(data),
                                       int(cfg.interactive.eval_clicks), split)
        values = click_eval.scalars(scores.summary())
        return {"scalars": values, "best": values["val_dice"]}

    def evaluate(self, cfg, trainable, params, frozen, mesh, data, out_dir, split, log=print, clicks=None,
                 **options) -> dict:
        result = click_eval.evaluate_clicks(cfg, trainable, params, frozen, mesh, _class_names(data), out_dir, split,
                                            int(clicks or cfg.interactive.eval_clicks), log=log)
        return {**result, "scalars": click_eval.scalars(result)}

    def summary(self, result: dict) -> str:
        s = result["scalars"]
        n = sum(1 for k in s if k.endswith("click"))
        return f"Dice box {s['val_dice_box']:.4f}, 1 click {s['val_dice_1click']:.4f}, {n} clicks {s[f'val_dice_{n}click']:.4f}"


def _class_names(data) -> tuple[str, ...]:
    return tuple(data.class_names) or tuple(f"class_{c}" for c in range(data.num_classes))


def _simulate(cfg, num_classes: int, class_names: tuple[str, ...] = ()) -> SimulatePrompts:
    """The objects and first prompts of training and validation examples (K objects, one point each)."""
    return SimulatePrompts(num_objects=int(cfg.train.num_objects), num_points=1, num_classes=num_classes or None,
                           objects=str(cfg.interactive.get("objects", "class")),
                           full_masks=bool(cfg.interactive.get("full_res", False)),
                           skip_classes=skipped_classes(cfg, class_names))


def skipped_classes(cfg, class_names: tuple[str, ...]) -> tuple[int, ...]:
    """``interactive.skip_classes`` (comma-separated names) as class indices; an unknown name is a ConfigError."""
    names = _skip_names(cfg)
    unknown = [n for n in names if n not in class_names[1:]]
    if unknown:
        raise ConfigError(f"interactive.skip_classes names {', '.join(unknown)}, not a class of the data "
                          f"({', '.join(class_names[1:])}); set --config.interactive.skip_classes to some of "
                          "these, or to '' to make every class an object")
    return tuple(class_names.index(n) for n in names)


def _skip_names(cfg) -> list[str]:
    return [n.strip() for n in str(cfg.interactive.get("skip_classes", "") or "").split(",") if n.strip()]
