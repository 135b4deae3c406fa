"""From cases to 2D training examples: read, check, map intensities to uint8, slice, count.

Volumes are normalized as a whole (one CT window or one pair of percentiles per volume, so slices of
a volume stay comparable) and cut into 2D slices along ``axis`` of the stored array (NIfTI voxel
order; ``axis=2`` is axial for the usual RAS/LPS layouts). Each slice keeps its volume id and index
so evaluation can restack 3D. Empty slices (no foreground) are kept, dropped or kept one in
``empty_every``, and every decision is counted in ``Counts``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from samjax.data import intensity, readers
from samjax.data.sources import Case
from samjax.errors import DataError

EMPTY_POLICIES = ("keep", "drop", "subsample")


@dataclasses.dataclass
class Counts:
    """What a build wrote, per split; stored in the dataset's metadata and printed by the build."""

    volumes: int = 0
    slices: int = 0
    empty_slices: int = 0
    empty_slices_dropped: int = 0
    slices_per_class: dict = dataclasses.field(default_factory=dict)
    slice_spacing: dict = dataclasses.field(default_factory=dict)  # case id -> mm between slices (3D cases)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_case_image(case: Case) -> tuple[np.ndarray, tuple[float, ...]]:
    """The image of a case and its pixel spacing: 2D ``(H, W[, 3])`` or 3D ``(X, Y, Z)``."""
    if os.path.isdir(case.image):
        vol = readers.read_dicom_series(case.image)
        return vol.array, tuple(vol.spacing)
    if case.image.lower().endswith((".nii", ".nii.gz")):
        vol = readers.read_volume(case.image, channel=case.channel)
        return vol.array, tuple(vol.spacing)
    if case.image.lower().endswith(".dcm"):
        return readers.read_dicom_file(case.image), (1.0, 1.0)
    return readers.read_image(case.image), (1.0, 1.0)


def read_case_label(case: Case) -> np.ndarray:
    if case.label.lower().endswith((".nii", ".nii.gz")):
        return readers.read_volume(case.label).array
    return readers.read_mask(case.label)


def check_label(label: np.ndarray, path: str, class_names: tuple[str, ...] | None) -> np.ndarray:
    """Label values as uint8 class indices, checked against the declared classes.

    Without declared classes only binary masks are accepted (0/1, or 0/255 mapped to 0/1): anything
    else is ambiguous, and the error asks for a ``dataset.json``.
    """
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)) or not np.all(label == np.round(label)):
            raise DataError(f"{path}: label values must be whole numbers (class indices)")
    values = np.unique(label)
    if class_names is None:
        if set(values.tolist()) <= {0, 255}:
            return (label > 0).astype(np.uint8)
        if set(values.tolist()) <= {0, 1}:
            return label.astype(np.uint8)
        raise DataError(
            f"{path}: label values {values.tolist()[:10]} need declared classes: add a dataset.json with "
            '"labels": {"0": "background", "1": "<name>", ...}'
        )
    bad = [v for v in values.tolist() if v < 0 or v >= len(class_names)]
    if bad:
        raise DataError(f"{path}: label values {bad[:10]} are not declared (classes 0..{len(class_names) - 1}: {list(class_names)})")
    return label.astype(np.uint8)


def as_uint8(image: np.ndarray, path: str, ct_window=None, percentiles=None) -> np.ndarray:
    """Checks intensities (NaN, constant) and maps them to uint8 over the whole image or volume."""
    intensity.check_intensities(image, path)
    if image.dtype == np.uint8 and ct_window is None and percentiles is None:
        return image
    if ct_window is None and percentiles is None:
        percentiles = (0.5, 99.5)  # 16-bit, signed or float data without an explicit mapping
    return intensity.to_uint8(image, ct_window=ct_window, percentiles=percentiles)


def case_examples(case: Case, class_names, *, axis: int = 2, ct_window=None, percentiles=None,
                  empty: str = "keep", empty_every: int = 10, counts: Counts | None = None):
    """Yields ``(key, example)`` for every kept 2D slice of a case and updates ``counts``.

    Examples: ``image`` uint8 ``(H, W, C)`` (C = 1 or 3), ``label`` uint8 ``(H, W)`` when labeled,
    ``case`` (str), ``slice`` (int, 0 for 2D files), ``spacing`` float32 ``(2,)``.
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
    counts = counts if counts is not None else Counts()
    image, spacing = read_case_image(case)
    label = None
    if case.label is not None:
        label = check_label(read_case_label(case), case.label, class_names)
        spatial = image.shape if case.volume else image.shape[:2]
        if label.shape != spatial:
            raise DataError(f"{case.label}: label shape {label.shape} does not match image {case.image} shape {spatial}")
    image = as_uint8(image, case.image, ct_window, percentiles)

    if case.volume:
        if image.ndim != 3:
            raise DataError(f"{case.image}: expected a 3D volume, got shape {image.shape}")
        if not -3 <= axis < 3:
            raise ValueError(f"axis must be 0, 1 or 2 for 3D volumes, got {axis}")
        keep_spacing = tuple(float(s) for i, s in enumerate(spacing[:3]) if i != axis % 3)
        counts.slice_spacing[case.id] = float(spacing[axis % 3])
        slices = [(i, np.take(image, i, axis)[..., None],
                   None if label is None else np.take(label, i, axis)) for i in range(image.shape[axis])]
    else:
        keep_spacing = tuple(float(s) for s in spacing[:2])
        slices = [(0, image if image.ndim == 3 else image[..., None], label)]

    counts.volumes += 1
    empty_seen = 0
    for index, img, lab in slices:
        if lab is not None:
            present = np.unique(lab)
            if present.max(initial=0) == 0:
                empty_seen += 1
                keep = empty == "keep" or (empty == "subsample" and (empty_seen - 1) % empty_every == 0)
                if not keep:
                    counts.empty_slices_dropped += 1
                    continue
                counts.empty_slices += 1
            for v in present.tolist():
                if v:
                    name = class_names[v] if class_names else "foreground"
                    counts.slices_per_class[name] = counts.slices_per_class.get(name, 0) + 1
        counts.slices += 1
        example = {"image": np.ascontiguousarray(img), "case": case.id, "slice": index,
                   "spacing": np.asarray(keep_spacing, np.float32)}
        if lab is not None:
            example["label"] = np.ascontiguousarray(lab)
        yield f"{case.id}/{index}", example


def split_cases(cases: list[Case], validation: float, test: float, seed: int) -> dict[str, list[Case]]:
    """Assigns whole cases (never slices of one volume to two splits) to train/validation/test by seed."""
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise ValueError(f"validation ({validation}) and test ({test}) fractions must be in [0, 1) and sum below 1")
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = int(round(validation * len(cases)))
    n_test = int(round(test * len(cases)))
    if len(cases) - n_val - n_test < 1:
        raise DataError(f"{len(cases)} case(s) are too few for the requested validation/test fractions")
    picked = {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return {split: [cases[i] for i in sorted(idx)] for split, idx in picked.items() if len(idx)}
