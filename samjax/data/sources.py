"""Finding the cases of a user's data folder: paired 2D image/mask folders and nnU-Net/MSD folders.

Two layouts are understood (``find_cases(source, "auto")`` tells them apart):

- **folder**: ``images/`` and ``masks/`` (or ``labels/``), one 2D file per case, PNG/JPG/TIFF/DICOM,
  matched by file stem (``images/scan_01.png`` <-> ``masks/scan_01.png``). Class names come from an
  optional ``dataset.json`` or ``classes.json`` (see ``read_class_names``).
- **nnunet**: ``dataset.json`` + ``imagesTr/`` + ``labelsTr/`` of NIfTI volumes, nnU-Net v2
  (``case_0000.nii.gz``, one file per channel) or the Decathlon's v1 (``case.nii.gz``); an image may
  also be a folder of DICOM files (``imagesTr/case/``), read as one series.

Nothing is skipped: an image without a mask, a mask without an image, or a file of an unknown kind is
a ``DataError`` that names it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from samjax.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")
VOLUME_SUFFIXES = (".nii.gz", ".nii")
FORMATS = ("auto", "folder", "nnunet")
_HIDDEN = re.compile(r"^(\.|__MACOSX$|Thumbs\.db$|desktop\.ini$)")


@dataclasses.dataclass(frozen=True)
class Case:
    """One image (2D file, 3D volume or DICOM series folder) and its label file (``None``: unlabeled).

    ``channel`` picks a volume of a 4D Decathlon image (``None``: the file is one 3D volume).
    """

    id: str
    image: str
    label: str | None
    volume: bool
    channel: int | None = None


def _stem(name: str) -> str:
    low = name.lower()
    for suffix in VOLUME_SUFFIXES + IMAGE_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def _listdir(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not _HIDDEN.match(n))


def read_class_names(path: str) -> tuple[str, ...]:
    """Class names by label value from a ``dataset.json``/``classes.json`` ``labels`` entry.

    Accepts nnU-Net v1 / Decathlon (``{"0": "background", "1": "liver"}``), nnU-Net v2
    (``{"background": 0, "liver": 1}``) and a plain list (``["background", "liver"]``). Values must
    be 0..C-1 with 0 the background; nnU-Net v2 region labels (lists of values) are refused.
    """
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read JSON: {e}") from e
    labels = meta.get("labels") if isinstance(meta, dict) else meta
    if labels is None:
        raise DataError(f"{path}: no 'labels' entry declaring the class names")
    if isinstance(labels, list):
        by_value = dict(enumerate(labels))
    elif isinstance(labels, dict):
        by_value = {}
        for key, value in labels.items():
            if isinstance(value, (list, tuple)):
                raise DataError(f"{path}: label {key!r} is a region {value}; region labels are not supported")
            if isinstance(value, str) and str(key).lstrip("-").isdigit():
                by_value[int(key)] = value  # v1: "1": "liver"
            elif isinstance(value, int):
                by_value[value] = str(key)  # v2: "liver": 1
            else:
                raise DataError(f"{path}: cannot read label entry {key!r}: {value!r}")
    else:
        raise DataError(f"{path}: 'labels' must be a dict or a list, got {type(labels).__name__}")
    values = sorted(by_value)
    if values != list(range(len(values))):
        raise DataError(f"{path}: label values must be 0..{len(values) - 1} without gaps, got {values}")
    if len(values) < 2:
        raise DataError(f"{path}: at least one foreground class must be declared besides background")
    return tuple(str(by_value[v]) for v in values)


def detect_format(source: str) -> str:
    """``nnunet`` if ``source`` has ``imagesTr/``, ``folder`` if it has ``images/``; else a DataError."""
    if os.path.isdir(os.path.join(source, "imagesTr")):
        return "nnunet"
    if os.path.isdir(os.path.join(source, "images")):
        return "folder"
    raise DataError(
        f"{source}: cannot tell the layout: expected imagesTr/ + labelsTr/ + dataset.json (nnU-Net/Decathlon) "
        "or images/ + masks/ (paired 2D files); pass --format to say which"
    )


def find_cases(source: str, fmt: str = "auto", labeled: bool = True, channel: int = 0):
    """Returns ``(format, cases, class_names or None)`` for a data folder; see the module docstring.

    ``channel`` picks the nnU-Net v2 channel file (``case_0001.nii.gz`` for ``channel=1``).
    """
    if not os.path.isdir(source):
        raise DataError(f"{source}: no such folder")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    fmt = detect_format(source) if fmt == "auto" else fmt
    cases, names = (_nnunet_cases if fmt == "nnunet" else _folder_cases)(source, labeled, channel)
    if not cases:
        raise DataError(f"{source}: no images found")
    return fmt, cases, names


def _pair(source: str, images: dict, labels: dict | None, labels_dir: str, volume_of) -> list[Case]:
    if labels is None:
        return [Case(k, images[k], None, volume_of(images[k])) for k in sorted(images)]
    missing = sorted(set(images) - set(labels))
    orphans = sorted(set(labels) - set(images))
    if missing:
        raise DataError(f"{source}: {len(missing)} image(s) have no mask in {labels_dir}/, e.g. {missing[:5]}")
    if orphans:
        raise DataError(f"{source}: {len(orphans)} mask(s) in {labels_dir}/ have no image, e.g. {orphans[:5]}")
    return [Case(k, images[k], labels[k], volume_of(images[k])) for k in sorted(images)]


def _index(folder: str, suffixes: tuple[str, ...], allow_dirs: bool = False) -> dict[str, str]:
    """Stem -> path for every file of ``folder``; an unknown file or a duplicate stem is an error."""
    found: dict[str, str] = {}
    for name in _listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and allow_dirs:
            key = name
        elif os.path.isfile(path) and name.lower().endswith(suffixes):
            key = _stem(name)
        else:
            raise DataError(f"{path}: not a supported file (expected {', '.join(suffixes)})")
        if key in found:
            raise DataError(f"{folder}: two files have the stem {key!r}: {os.path.basename(found[key])}, {name}")
        found[key] = path
    return found


def _folder_cases(source: str, labeled: bool, channel: int = 0):
    images = _index(os.path.join(source, "images"), IMAGE_SUFFIXES)
    labels, labels_dir = None, "masks"
    if labeled:
        for labels_dir in ("masks", "labels"):
            if os.path.isdir(os.path.join(source, labels_dir)):
                labels = _index(os.path.join(source, labels_dir), IMAGE_SUFFIXES)
                break
        else:
            raise DataError(f"{source}: no masks/ (or labels/) folder; pass --unlabeled for images without masks")
    names = None
    for meta in ("dataset.json", "classes.json"):
        if os.path.isfile(os.path.join(source, meta)):
            names = read_class_names(os.path.join(source, meta))
            break
    return _pair(source, images, labels, labels_dir, lambda p: False), names


def _nnunet_cases(source: str, labeled: bool, channel: int = 0):
    meta = os.path.join(source, "dataset.json")
    if not os.path.isfile(meta):
        raise DataError(f"{source}: nnU-Net/Decathlon folders need a dataset.json declaring the labels")
    names = read_class_names(meta)
    labels = None
    if labeled:
        if not os.path.isdir(os.path.join(source, "labelsTr")):
            raise DataError(f"{source}: no labelsTr/ folder; pass --unlabeled for images without labels")
        labels = _index(os.path.join(source, "labelsTr"), VOLUME_SUFFIXES)
    raw = _index(os.path.join(source, "imagesTr"), VOLUME_SUFFIXES, allow_dirs=True)
    images: dict[str, str] = {}
    channels: dict[str, dict[int, str]] = {}
    for key, path in raw.items():
        m = re.fullmatch(r"(.+)_(\d{4})", key)
        if m and not os.path.isdir(path) and not (labels and key in labels):
            channels.setdefault(m.group(1), {})[int(m.group(2))] = path  # nnU-Net v2: a file per channel
        else:
            images[key] = path
    for key, files in channels.items():
        if channel not in files:
            raise DataError(f"{source}: case {key!r} has channels {sorted(files)} in imagesTr/ but not channel {channel}")
        images[key] = files[channel]
    cases = _pair(source, images, labels, "labelsTr", lambda p: True)
    # Decathlon (v1) images hold their channels in a 4th axis; v2 files and DICOM folders are 3D.
    cases = [c if c.id in channels or os.path.isdir(c.image) else dataclasses.replace(c, channel=channel)
             for c in cases]
    return cases, names
