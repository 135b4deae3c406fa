"""Task-expansive prompt-based training: SAM's interactive training simulation, one jitted step.

Each image carries K objects (``samjax.data.prompts.SimulatePrompts``: an interior point, a box with
SAM's noise, the low-resolution target). The step computes the image embedding once and runs the
prompt encoder and mask decoder ``1 + R`` times on it, as the SAM paper's training does:

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
patches) and placed at the centre of their cell in input pixels.

Validation and evaluation follow interactive-segmentation benchmarks (``samjax.train.click_eval``, shared
with every prompted model): the box alone, then 1..``eval_clicks`` clicks, each in the middle of the largest
error; ``val_dice`` (which picks the best checkpoint) is the mean of the Dice-vs-clicks curve.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from samjax.data.prompts import SimulatePrompts, next_click
from samjax.errors import ConfigError
from samjax.modeling.prompt_encoder import NOT_A_POINT_LABEL, PADDING_LABEL
from samjax.train import losses, strategy, supervised
from samjax.train.objective import Objective, TrainData

PROMPT_KEYS = ("image", "valid", "boxes", "points", "object_valid", "object_masks", "object_class")


def click_schedule(key: jax.Array, click_rounds: int, no_click_rounds: int) -> jax.Array:
    """``(R,)`` bool, True where round ``1 + i`` adds a click: the last round and ``no_click_rounds - 1``
    random others add none."""
    rounds = click_rounds + no_click_rounds
    if no_click_rounds == 0:
        return jnp.ones((rounds,), bool)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(key, (rounds - 1,))))
    return jnp.concatenate([rank >= no_click_rounds - 1, jnp.zeros((1,), bool)])


def first_prompts(batch: dict, use_box: jax.Array, slots: int):
    """Round 0's prompts of the ``N = B * K`` objects, with room for ``slots - 1`` later clicks.

    Returns ``coords (N, slots + 1, 2)``, ``labels (N, slots + 1)``, ``boxes (N, 4)``, ``box_mask (N,)``.
    Slot 0 holds the first point (absent where the box is used), slots ``1..slots-1`` the clicks to
    come, and the last slot Meta's "not a point" token, present exactly when there is no box (as
    Meta's prompt encoder pads points given without a box). Empty slots are ``PADDING_LABEL``: no token.
    """
    valid = batch["object_valid"].reshape(-1)
    n = valid.shape[0]
    point = batch["points"][:, :, 0].reshape(n, 2).astype(jnp.float32)
    no_point = use_box | ~valid
    coords = jnp.zeros((n, slots + 1, 2), jnp.float32).at[:, 0].set(point)
    labels = jnp.full((n, slots + 1), PADDING_LABEL, jnp.int32)
    labels = labels.at[:, 0].set(jnp.where(no_point, PADDING_LABEL, 1))
    labels = labels.at[:, slots].set(jnp.where(no_point, PADDING_LABEL, NOT_A_POINT_LABEL))
    return coords, labels, batch["boxes"].reshape(n, 4).astype(jnp.float32), use_box & valid


def decode(model, emb, coords, labels, boxes, box_mask, mask_logits, dtype):
    """All mask tokens' low-res logits ``(N, T, L, L)`` and IoU predictions ``(N, T)``, float32."""
    pe = model.prompt_encoder
    sparse, sparse_mask, dense = pe(points=(coords, labels), boxes=boxes, box_mask=box_mask,
                                    masks=None if mask_logits is None else mask_logits[..., None])
    masks, iou = model.mask_decoder.predict_masks(emb, pe.get_dense_pe().astype(dtype), sparse.astype(dtype),
                                                  dense.astype(dtype), sparse_mask)
    return masks.astype(jnp.float32), iou.astype(jnp.float32)


def interact(model, emb, prompts, multimask, targets, valid, key, clicks, scale: float, mode: str, dtype):
    """Round 0, then one round per entry of ``clicks`` (True: add a click first).

    Args:
      emb: ``(N, h, w, C)`` image embedding of each object's image.
      prompts: :func:`first_prompts`'s output.
      multimask: ``(N,)`` bool: round 0 returns the best of tokens 1-3 (by predicted IoU) for these.
      targets, valid: ``(N, L, L)`` bool target masks and real (non-padding) pixels, or ``(N, S, S)`` at the
        input resolution (the logits are then upsampled to find the next click; ``scale`` = 1).
      clicks: ``(R,)`` bool schedule; ``scale``: input pixels per low-res cell; ``mode``: ``next_click``'s.

    Returns:
      round 0's ``(N, T, L, L)`` logits and ``(N, T)`` IoUs, the later rounds' ``(R, N, L, L)`` logits and
      ``(R, N)`` IoUs, and the final prompts ``(coords, labels)``.
    """
    coords, labels, boxes, box_mask = prompts
    masks0, iou0 = decode(model, emb, coords, labels, boxes, box_mask, None, dtype)
    best = jnp.where(multimask, 1 + jnp.argmax(iou0[:, 1:], axis=-1), 0)
    prev = jnp.take_along_axis(masks0, best[:, None, None, None], axis=1)[:, 0]
    slots = jnp.arange(coords.shape[1])

    def round_(carry, xs):
        coords, labels, prev, slot = carry
        add, k = xs
        point, label = next_click(k, supervised.upsample(prev, targets.shape[-1]) > 0, targets, valid, scale=scale, mode=mode)
        put = add & (slots == slot)[None, :]
        coords = jnp.where(put[..., None], point[:, None], coords)
        labels = jnp.where(put, jnp.where(label < 0, PADDING_LABEL, label)[:, None], labels)
        masks, iou = decode(model, emb, coords, labels, boxes, box_mask, prev, dtype)
        out = jax.lax.stop_gradient(masks[:, 0])
        return (coords, labels, out, slot + add.astype(jnp.int32)), (masks[:, 0], iou[:, 0])

    keys = jax.random.split(key, clicks.shape[0])
    init = (coords, labels, jax.lax.stop_gradient(prev), jnp.int32(1))
    (coords, labels, _, _), (masks, ious) = jax.lax.scan(round_, init, (clicks, keys))
    return masks0, iou0, masks, ious, (coords, labels)


def _per_object(batch: dict, size: int, full_res: bool):
    """``(N, L, L)`` targets and real (non-padding) pixels of the ``N = B * K`` objects, or ``(N, S, S)`` at the
    input resolution with ``full_res``."""
    b, k = batch["object_valid"].shape
    if full_res:
        s = batch["image"].shape[1]
        return batch["object_masks_full"].reshape(b * k, s, s), jnp.repeat(batch["valid"], k, axis=0)
    valid = jnp.repeat(supervised.low_res(batch["valid"], size), k, axis=0)
    return batch["object_masks"].reshape(b * k, size, size), valid


def interactive_loss(model, batch: dict, key, cfg, dtype=jnp.float32):
    """The step's loss (see the module docstring): ``(total, terms)``."""
    c = cfg.interactive
    drop_key, box_key, schedule_key, click_key = jax.random.split(key, 4)
    b, k = batch["object_valid"].shape
    emb = jnp.repeat(supervised.encode(model, batch["image"], batch["valid"], drop_key, dtype), k, axis=0)
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
        masks0, masks = supervised.upsample(masks0, size), supervised.upsample(masks, size)
    t = masks0.shape[1]
    multi = jnp.arange(t) > 0
    candidates = jnp.where((~use_box)[:, None], multi[None], ~multi[None]).reshape(b, k, t)
    pixel_weights = batch["valid"] if full_res else supervised.low_res(batch["valid"], size)
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
        if int(c.eval_clicks) < 1:
            raise ConfigError(f"interactive.eval_clicks={c.eval_clicks} must be >= 1")
        if int(cfg.train.num_objects) < 1:
            raise ConfigError(f"train.num_objects={cfg.train.num_objects} must be >= 1")

    def train_keys(self, cfg) -> tuple[str, ...]:
        return PROMPT_KEYS + (("object_masks_full",) if cfg.interactive.get("full_res", False) else ())

    def prompts(self, cfg, data: TrainData):
        return _simulate(cfg, data.num_classes)

    def build_model(self, cfg, data: TrainData, log: Callable = print):
        return strategy.build_model(cfg, None, log=log)

    def trainable_filter(self, cfg):
        return strategy.trainable_filter(cfg)

    def loss(self, model, batch, key, cfg, dtype):
        return interactive_loss(model, batch, key, cfg, dtype)

    def validate(self, cfg, trainable, params, frozen, mesh, data, split=None) -> dict:
        from samjax.train import click_eval

        scores = click_eval.run_clicks(cfg, trainable, params, frozen, mesh, _class_names(data),
                                       int(cfg.interactive.eval_clicks), split)
        values = click_eval.scalars(scores.summary())
        return {"scalars": values, "best": values["val_dice"]}

    def evaluate(self, cfg, trainable, params, frozen, mesh, data, out_dir, split, log=print, clicks=None,
                 **options) -> dict:
        from samjax.train import click_eval

        result = click_eval.evaluate_clicks(cfg, trainable, params, frozen, mesh, _class_names(data), out_dir, split,
                                            int(clicks or cfg.interactive.eval_clicks), log=log)
        return {**result, "scalars": click_eval.scalars(result)}

    def summary(self, result: dict) -> str:
        s = result["scalars"]
        n = sum(1 for k in s if k.endswith("click"))
        return f"Dice box {s['val_dice_box']:.4f}, 1 click {s['val_dice_1click']:.4f}, {n} clicks {s[f'val_dice_{n}click']:.4f}"


def _class_names(data) -> tuple[str, ...]:
    return tuple(data.class_names) or tuple(f"class_{c}" for c in range(data.num_classes))


def _simulate(cfg, num_classes: int) -> SimulatePrompts:
    """The objects and first prompts of training and validation examples (K objects, one point each)."""
    return SimulatePrompts(num_objects=int(cfg.train.num_objects), num_points=1, num_classes=num_classes or None,
                           objects=str(cfg.interactive.get("objects", "class")),
                           full_masks=bool(cfg.interactive.get("full_res", False)))
