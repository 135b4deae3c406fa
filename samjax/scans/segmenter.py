"""``Segmenter``: a trained run (or a converted SAM) applied to new scans, slice by slice, geometry kept.

    seg = Segmenter.from_workdir("runs/quickstart")            # the run's config, classes and preprocessing
    result = seg.segment_file("patient.nii.gz")               # -> Segmentation (labels in the input's voxel grid)
    labels = seg.segment_volume(array, affine).labels          # an array already in memory

A volume is mapped to uint8 as the run's data set was built (one CT window or percentile pair for the
whole volume: ``samjax.data.slicing.as_uint8``, settings from the run's ``data.json``), cut into 2D slices
along the run's axis, formatted as in training (``SamFormat``: longest side resized, padded) and run in
batches of ``batch_size`` slices over all devices. Auto-mode runs (and the UNet) give every slice a class
map: the class logits at the input size (the same function as the evaluation) cropped to the image,
resized bilinearly to the slice's own size, argmax; the confidence of a voxel is the softmax probability
of its class. Prompted runs and converted SAMs take boxes and points (``samjax.scans.prompts``) through the
predictor (``SamPredictor``): only prompted slices are embedded; the confidence is the mask's sigmoid.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax import parallel
from samjax.build_sam import sam_model_registry
from samjax.data.sam_format import SamFormat
from samjax.data.slicing import as_uint8
from samjax.errors import ConfigError, DataError
from samjax.predictor import SamPredictor
from samjax.modeling.forward import auto_class_logits, unet_class_logits
from samjax.run.info import read_data_info, run_config
from samjax.run.model import DTYPES, model_for_run
from samjax.scans import prompts as scan_prompts
from samjax.scans.io import Scan, read_scan, voxel_volume


@dataclasses.dataclass
class Segmentation:
    """``labels`` uint8 and ``confidence`` float32 over the input's grid (a volume's 3 axes or ``(H, W)``)."""

    labels: np.ndarray
    confidence: np.ndarray
    class_names: tuple[str, ...]

    def summary(self, scan: Scan) -> dict:
        """Per class: voxels, volume in mL (2D: area in mm^2, or pixels without spacing) and the mean
        confidence over its voxels; and the mean confidence over all labeled voxels."""
        unit = voxel_volume(scan)
        classes = {}
        for c in range(1, max(len(self.class_names), int(self.labels.max(initial=0)) + 1)):
            mask = self.labels == c
            n = int(mask.sum())
            name = self.class_names[c] if c < len(self.class_names) else f"label_{c}"
            entry = {"index": c, "voxels": n, "mean_confidence": float(self.confidence[mask].mean()) if n else None}
            if scan.volume:
                entry["volume_ml"] = n * unit / 1000.0
            else:
                entry["area_px" if scan.spacing is None else "area_mm2"] = n * unit
            classes[name] = entry
        fg = self.labels > 0
        return {"input": scan.path, "shape": list(self.labels.shape), "classes": classes,
                "mean_confidence": float(self.confidence[fg].mean()) if fg.any() else None}


@functools.partial(jax.jit, static_argnames=("graphdef", "class_logits", "dtype", "input_hw"))
def _class_logits(graphdef, state, image, valid, *, class_logits, dtype, input_hw):
    """Padded slices ``(B, S, S, 3)`` -> class logits ``(B, T, h, w)`` cropped to the resized image."""
    model = nnx.merge(graphdef, state)
    return class_logits(model, {"image": image, "valid": valid}, dtype)[:, :, :input_hw[0], :input_hw[1]]


@functools.partial(jax.jit, static_argnames=("out_hw",))
def _classify(logits, *, out_hw):
    """Class logits ``(B, T, h, w)`` -> class maps uint8 and confidences ``(B, *out_hw)``: bilinear to the
    slice's own size (nothing to do when it is the input size), argmax, softmax probability of the class."""
    if logits.shape[2:] != tuple(out_hw):
        logits = jax.image.resize(logits, logits.shape[:2] + tuple(out_hw), method="bilinear", antialias=False)
    return jnp.argmax(logits, axis=1).astype(jnp.uint8), jnp.max(jax.nn.softmax(logits, axis=1), axis=1)


class Segmenter:
    """Segments 2D images and volumes with one model (see the module docstring).

    Args:
      model: a SAM (or, with ``class_logits``, the UNet baseline).
      class_names: what each label value means, background first.
      image_size: the model's input size ``S``.
      class_logits: ``(model, batch, dtype) -> (B, T, S, S)`` for auto-mode models; None: prompts only.
      preprocessing: the run's ``axis``, ``channel``, ``ct_window``, ``percentiles`` (``data.json``).
      batch_size: slices per program call (rounded up to the device count).
    """

    def __init__(self, model, class_names, image_size: int, *, class_logits=None, preprocessing=None,
                 dtype=jnp.float32, batch_size: int = 8, source: str = ""):
        self.model, self.class_names, self.image_size = model, tuple(class_names), int(image_size)
        self.class_logits, self.dtype, self.source = class_logits, dtype, source
        self.preprocessing = dict(preprocessing or {})
        self.mesh = parallel.make_mesh()
        ways = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        self.batch_size = -(-max(1, int(batch_size)) // ways) * ways
        self._format = SamFormat(self.image_size)
        self._predictor = None
        self.notes: list[str] = []  # what a user should know about how inputs will be handled
        if class_logits is not None:
            self._graphdef, state = nnx.split(model)
            shardings = parallel.variable_shardings(state, self.mesh)
            self._state = jax.device_put(nnx.to_pure_dict(state), shardings)

    @property
    def auto(self) -> bool:
        """Whether the model segments every class without prompts."""
        return self.class_logits is not None

    @property
    def axis(self) -> int:
        """The slicing axis of volumes (the data build's; 2 when it recorded none)."""
        axis = self.preprocessing.get("axis")
        return 2 if axis is None else int(axis)

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_workdir(cls, workdir: str, checkpoint: str = "latest", batch_size: int | None = None, log=None):
        """The model of a training run (``checkpoint``: ``latest``, ``best`` or a step), with the run's classes,
        input size, compute dtype and preprocessing."""
        workdir = os.path.abspath(os.path.expanduser(workdir))
        if not os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ConfigError(f"--workdir {workdir} is not a training run (no checkpoints/ folder)")
        cfg = run_config(workdir)
        cfg.init_checkpoint, cfg.init_checkpoint_which = workdir, str(checkpoint)
        objective = cfg.get("objective", "finetune")
        if objective == "mae":
            raise ConfigError(f"{workdir} is an MAE run: it reconstructs images; fine-tune it first "
                              f"(configs/finetune.py --config.init_checkpoint={workdir}) to segment")
        info = read_data_info(workdir, cfg)
        names = tuple(info["class_names"])
        model = model_for_run(cfg, len(names), log=log or (lambda _: None))
        auto = objective in ("finetune", "unet") and cfg.train.mode == "auto"
        class_logits = unet_class_logits if objective == "unet" else auto_class_logits
        segmenter = cls(model, names, int(cfg.data.image_size), class_logits=class_logits if auto else None,
                        preprocessing=info.get("preprocessing"), dtype=DTYPES[cfg.model.dtype],
                        batch_size=batch_size or int(cfg.data.eval_batch), source=workdir)
        built = [n for n in info.get("data", []) if not str(n).startswith("phantoms")]
        if built and not info.get("preprocessing"):
            segmenter.notes.append(
                f"note: the data set of {workdir} ({', '.join(built)}) records no intensity mapping (built before "
                "samjax recorded it): inputs that are not 8-bit are mapped by their 0.5-99.5 percentiles; rebuild "
                "it with the same options and --overwrite to record its CT window")
        return segmenter

    @classmethod
    def from_checkpoint(cls, checkpoint: str, model_type: str = "vit_b", image_size: int | None = None,
                        preprocessing=None, batch_size: int = 8):
        """A converted (or Meta ``.pth``) SAM as loaded: boxes and points only, label values as prompted."""
        model = sam_model_registry[model_type](checkpoint=checkpoint, image_size=image_size)
        return cls(model, ("background",), model.img_size, preprocessing=preprocessing, batch_size=batch_size,
                   source=checkpoint)

    # --- inputs ----------------------------------------------------------------------------------
    def to_uint8(self, array: np.ndarray, name: str = "input") -> np.ndarray:
        """Intensities -> uint8 as the run's data build did (the whole volume or image at once)."""
        window = self.preprocessing.get("ct_window")
        percentiles = self.preprocessing.get("percentiles")
        return as_uint8(np.asarray(array), name, None if window is None else tuple(window),
                        None if percentiles is None else tuple(percentiles))

    def segment_file(self, path: str, prompts: str | None = None) -> tuple[Scan, Segmentation]:
        """Reads ``path`` (image, NIfTI, DICOM series folder) and segments it; ``prompts``: a JSON file."""
        scan = read_scan(path, channel=self.preprocessing.get("channel"))
        return scan, self.segment_scan(scan, prompts)

    def segment_scan(self, scan: Scan, prompts=None, progress=None) -> Segmentation:
        """``prompts``: a JSON file name, a parsed dict or a list of ``SlicePrompt`` (None: auto mode)."""
        if isinstance(prompts, (str, os.PathLike, dict)):
            shape = scan.array.shape if scan.volume else scan.array.shape[:2]
            read = scan_prompts.read_prompts if not isinstance(prompts, dict) else scan_prompts.parse_prompts
            prompts = read(prompts, shape, scan.affine, self.axis, self.class_names)
        if scan.volume:
            return self.segment_volume(scan.array, prompts=prompts, progress=progress, name=scan.path)
        return self.segment_image(scan.array, prompts=prompts, name=scan.path)

    def segment_volume(self, array: np.ndarray, affine=None, prompts=None, progress=None,
                       name: str = "volume") -> Segmentation:
        """A 3D ``array`` (native intensities) -> labels over its voxels. ``affine`` is only needed for prompts
        in world coordinates (pass them as a dict); ``progress(done, total)`` is called after every batch."""
        array = np.asarray(array)
        if array.ndim != 3:
            raise DataError(f"{name}: expected a 3D volume, got shape {array.shape}")
        if isinstance(prompts, dict):
            prompts = scan_prompts.parse_prompts(prompts, array.shape, affine, self.axis, self.class_names, name)
        slices = np.moveaxis(self.to_uint8(array, name), self.axis, 0)[..., None]
        labels, confidence = self._segment_slices(slices, prompts, progress, name)
        return Segmentation(np.moveaxis(labels, 0, self.axis), np.moveaxis(confidence, 0, self.axis),
                            self.class_names)

    def segment_image(self, array: np.ndarray, prompts=None, name: str = "image") -> Segmentation:
        """A 2D ``(H, W)`` or ``(H, W, 3)`` image -> labels ``(H, W)``."""
        array = np.asarray(array)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3)):
            raise DataError(f"{name}: expected a 2D image (H, W) or (H, W, 3), got shape {array.shape}")
        image = self.to_uint8(array, name)
        labels, confidence = self._segment_slices((image if image.ndim == 3 else image[..., None])[None], prompts,
                                                  None, name)
        return Segmentation(labels[0], confidence[0], self.class_names)

    # --- the two modes -----------------------------------------------------------------------------
    def _segment_slices(self, slices: np.ndarray, prompts, progress, name: str):
        if prompts is None:
            if not self.auto:
                raise ConfigError(f"{name}: this model segments from prompts (a box / point / interactive run or "
                                  "a converted SAM): give --prompts FILE.json (see samjax/scans/prompts.py)")
            return self.classify(slices, progress)
        if self.auto:
            raise ConfigError(f"{name}: this run was trained in auto mode (one mask per class, no prompts); "
                              "leave out --prompts")
        return self._prompted(slices, prompts, progress, name)

    def classify(self, slices: np.ndarray, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 slices ``(N, H, W, C)`` of one size -> class maps uint8 and confidences ``(N, H, W)``."""
        n, h, w = slices.shape[:3]
        labels = np.zeros((n, h, w), np.uint8)
        confidence = np.zeros((n, h, w), np.float32)
        b = self.batch_size
        for start in range(0, n, b):
            chunk = [self._format.map({"image": s}) for s in slices[start:start + b]]
            chunk += [chunk[-1]] * (b - len(chunk))
            input_hw = tuple(int(v) for v in chunk[0]["input_size"])
            batch = parallel.global_batch({k: np.stack([c[k] for c in chunk]) for k in ("image", "valid")}, self.mesh)
            logits = _class_logits(self._graphdef, self._state, batch["image"], batch["valid"],
                                   class_logits=self.class_logits, dtype=self.dtype, input_hw=input_hw)
            m = min(b, n - start)
            if input_hw == (h, w):  # the common case: the slice is the input size, the whole batch at once
                labels[start:start + m], confidence[start:start + m] = (np.asarray(x)[:m] for x in
                                                                        _classify(logits, out_hw=(h, w)))
            else:  # resized back one slice at a time: a large slice's logits at full size only once in memory
                for i in range(m):
                    labels[start + i], confidence[start + i] = (np.asarray(x)[0] for x in
                                                                _classify(logits[i:i + 1], out_hw=(h, w)))
            if progress is not None:
                progress(start + m, n)
        return labels, confidence

    def _prompted(self, slices: np.ndarray, prompts, progress, name: str):
        if self._predictor is None:
            self._predictor = SamPredictor(self.model)
        n, h, w = slices.shape[:3]
        labels = np.zeros((n, h, w), np.uint8)
        confidence = np.zeros((n, h, w), np.float32)
        by_slice: dict[int, list] = {}
        for p in prompts:
            if not 0 <= p.slice < n:
                raise DataError(f"{name}: a prompt on slice {p.slice}, but the input has {n} slice(s)")
            by_slice.setdefault(p.slice, []).append(p)
        for done, k in enumerate(sorted(by_slice), start=1):
            self._predictor.set_image(slices[k] if slices.shape[-1] == 3 else slices[k, ..., 0])
            for p in sorted(by_slice[k], key=lambda p: p.object):
                single_point = p.box is None and len(p.points) == 1
                logits, iou, _ = self._predictor.predict(p.points, p.point_labels, p.box,
                                                         multimask_output=single_point, return_logits=True)
                best = logits[int(np.argmax(iou))]
                mask = best > self.model.mask_threshold
                labels[k][mask] = p.label
                confidence[k][mask] = 1.0 / (1.0 + np.exp(-best[mask]))
            if progress is not None:
                progress(done, len(by_slice))
        return labels, confidence
