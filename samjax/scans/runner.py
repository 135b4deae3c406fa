"""Segmenting inputs into output files: one scan or a folder, with progress, a summary and failures kept apart.

``run_inputs`` is what ``python -m samjax.segment --input ... --output ...`` does after building the
``Segmenter``: every input is read, segmented and written (``samjax.scans.io.write_label_map``), optionally
with a JSON of per-class volumes and confidences (``stats``) and a picture of the label map over its scan
(``preview``). An input that fails is reported with its name and reason and the others go on; an output
that exists is skipped (and named) unless ``overwrite``. A folder run writes ``summary.csv``.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from samjax.errors import CheckpointError, ConfigError, DataError
from samjax.scans.io import Scan, is_dicom_series, label_map_name, list_inputs, read_scan, write_label_map

LABEL_SUFFIXES = (".nii.gz", ".nii", ".png")


def _stem(path: str) -> str:
    for suffix in LABEL_SUFFIXES:
        if path.lower().endswith(suffix):
            return path[: -len(suffix)]
    return path


def output_for(input_path: str, output: str, single: bool) -> str | None:
    """The label map path of an input: ``output`` itself when a single input names a file, else inside the
    folder ``output``; None when the name depends on what the input turns out to be (read it first)."""
    if single and output.lower().endswith(LABEL_SUFFIXES):
        return output
    name = os.path.basename(os.path.normpath(input_path))
    low = name.lower()
    if low.endswith((".nii.gz", ".nii")):
        return os.path.join(output, name)
    if low.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")):
        return os.path.join(output, os.path.splitext(name)[0] + ".png")
    return os.path.join(output, name + ".nii.gz") if os.path.isdir(input_path) else None


def preview_picture(scan: Scan, labels: np.ndarray, image_uint8: np.ndarray, axis: int, class_names=()) -> np.ndarray:
    """The scan and its label map over it, side by side, with a legend of the classes found: for a volume the
    slice with the most labeled voxels (along ``axis``), enlarged to at least 256 pixels high."""
    from PIL import Image, ImageDraw

    from samjax.data.intensity import gray_to_rgb
    from samjax.utils.overlay import PALETTE, overlay_masks

    if scan.volume:
        k = int(np.argmax(np.moveaxis(labels > 0, axis, 0).sum((1, 2))))
        image, labels = np.take(image_uint8, k, axis), np.take(labels, k, axis)
    else:
        image = image_uint8
    rgb = gray_to_rgb(image)
    classes = list(range(1, int(labels.max(initial=0)) + 1))
    masks = np.stack([labels == c for c in classes]) if classes else np.zeros((0, *labels.shape), bool)
    picture = np.concatenate([rgb, overlay_masks(rgb, masks)], axis=1)
    scale = max(1, -(-256 // picture.shape[0]))
    picture = np.repeat(np.repeat(picture, scale, 0), scale, 1)
    legend = Image.new("RGB", (picture.shape[1], 18), (0, 0, 0))
    draw, x = ImageDraw.Draw(legend), 4
    for c in classes:
        if (labels == c).any():
            name = class_names[c] if c < len(class_names) else f"label {c}"
            color = tuple(int(v) for v in PALETTE[(c - 1) % len(PALETTE)])
            draw.rectangle([x, 4, x + 9, 13], fill=color)
            draw.text((x + 13, 3), name, fill=(255, 255, 255))
            x += 13 + int(draw.textlength(name)) + 10
    return np.concatenate([picture, np.asarray(legend)], axis=0)


def run_inputs(segmenter, input_path: str, output: str, *, prompts: str | None = None, overwrite: bool = False,
               stats: bool = False, preview: bool = False, log=print) -> int:
    """Segments ``input_path`` (an input, or a folder of inputs) into ``output``; returns the exit code."""
    single = not os.path.isdir(input_path) or is_dicom_series(input_path)
    ours = {os.path.realpath(p) for p in (output, prompts) if p}  # never read our own outputs back as inputs
    inputs = [input_path] if single else [p for p in list_inputs(input_path) if os.path.realpath(p) not in ours]
    if not inputs:
        log(f"error: {input_path} holds no inputs")
        return 1
    if not single and output.lower().endswith(LABEL_SUFFIXES):
        log(f"error: --input {input_path} is a folder of inputs, so --output must be a folder, not {output}")
        return 2
    rows, skipped, failed = [], [], []
    claimed = _claims(inputs, output, single)
    bar = tqdm(inputs, desc="inputs", unit="input", disable=single, file=sys.stderr, dynamic_ncols=True)
    for path in bar:
        row = {"input": path, "output": "", "status": "", "reason": "", "seconds": ""}
        start = time.perf_counter()
        try:
            target = output_for(path, output, single)
            if target and claimed.get(_stem(target).lower(), path) != path:
                raise DataError(f"{path}: its label map {target} would replace that of {claimed[_stem(target).lower()]}; "
                                "rename one of the two inputs")
            if target and os.path.realpath(target) == os.path.realpath(path):
                raise DataError(f"{path}: the label map would replace the input itself; choose another --output")
            if target and os.path.exists(target) and not overwrite:
                skipped.append(target)
                rows.append({**row, "output": target, "status": "skipped", "reason": "exists (use --overwrite)"})
                continue
            scan = read_scan(path, channel=segmenter.preprocessing.get("channel"))
            target = target or os.path.join(output, label_map_name(scan))
            if scan.volume == target.lower().endswith(".png"):
                raise DataError(f"{path}: a {'volume' if scan.volume else '2D image'} gets a "
                                f"{'NIfTI (.nii.gz)' if scan.volume else 'PNG'} label map, not {target}")
            if os.path.exists(target) and not overwrite:
                skipped.append(target)
                rows.append({**row, "output": target, "status": "skipped", "reason": "exists (use --overwrite)"})
                continue
            prompt_file = _prompt_file(prompts, scan, single)
            slices = tqdm(total=scan.array.shape[segmenter.axis] if scan.volume else 0,
                          desc=os.path.basename(os.path.normpath(path)), unit="slice", leave=False,
                          file=sys.stderr, dynamic_ncols=True, disable=not scan.volume)

            def progress(done, total, bar=slices):
                bar.total = total
                bar.update(done - bar.n)

            try:
                result = segmenter.segment_scan(scan, prompt_file, progress=progress)
            finally:
                slices.close()
            write_label_map(scan, result.labels, target)
            summary = result.summary(scan)
            if stats:
                with open(_stem(target) + ".json", "w") as f:
                    json.dump({**summary, "output": target, "model": segmenter.source,
                               "class_names": list(segmenter.class_names)}, f, indent=2)
            if preview:
                from samjax.utils.overlay import save_png

                save_png(preview_picture(scan, result.labels, segmenter.to_uint8(scan.array, path), segmenter.axis,
                                         segmenter.class_names), _stem(target) + "_preview.png")
            row.update(output=target, status="ok", seconds=f"{time.perf_counter() - start:.2f}")
            row.update(_amounts(summary))
            rows.append(row)
            if single:
                log(f"wrote {target}: {_describe(summary)}")
        except Exception as e:  # noqa: BLE001 - one input's failure is reported and the others go on
            failed.append(path)
            known = isinstance(e, (DataError, ConfigError, CheckpointError, OSError, ValueError))
            reason = str(e) if known else f"{type(e).__name__}: {e}"
            message = reason if reason.startswith(str(path)) else f"{path}: {reason}"
            bar.write(f"failed: {message}", file=sys.stderr)
            rows.append({**row, "status": "failed", "reason": reason.replace("\n", " ")})
    bar.close()
    if skipped:
        log(f"skipped {len(skipped)} existing output(s) (use --overwrite to replace them): " + ", ".join(skipped[:10])
            + (" ..." if len(skipped) > 10 else ""))
    if not single:
        os.makedirs(output, exist_ok=True)
        _write_csv(os.path.join(output, "summary.csv"), rows)
        ok = sum(r["status"] == "ok" for r in rows)
        log(f"{ok} segmented, {len(skipped)} skipped, {len(failed)} failed of {len(rows)} input(s); "
            f"wrote {os.path.join(output, 'summary.csv')}")
    if failed:
        log(f"error: {len(failed)} input(s) failed: " + ", ".join(failed[:10]))
        return 1
    return 0


def _claims(inputs: list[str], output: str, single: bool) -> dict[str, str]:
    """Output stem (label map, JSON, preview share it) -> the first input that names it."""
    claimed: dict[str, str] = {}
    for path in inputs:
        target = output_for(path, output, single)
        if target:
            claimed.setdefault(_stem(target).lower(), path)
    return claimed


def _prompt_file(prompts: str | None, scan: Scan, single: bool) -> str | None:
    """The prompts of one input: ``prompts`` itself, or (a folder) ``prompts/NAME.json``."""
    if prompts is None:
        return None
    if not os.path.isdir(prompts):
        if not single:
            raise ConfigError("--prompts for a folder of inputs is a folder of NAME.json files, one per input")
        return prompts
    path = os.path.join(prompts, scan.name + ".json")
    if not os.path.isfile(path):
        raise DataError(f"{scan.path}: no prompts for it ({path} does not exist)")
    return path


def _amounts(summary: dict) -> dict:
    """The CSV columns of a summary: ``<class>_ml`` (volumes), ``<class>_mm2`` or ``<class>_px`` (2D)."""
    out = {}
    for name, entry in summary["classes"].items():
        key = next(k for k in ("volume_ml", "area_mm2", "area_px") if k in entry)
        out[f"{name}_{key.split('_')[1]}"] = f"{entry[key]:.4g}"
    return out


def _describe(summary: dict) -> str:
    parts = []
    for name, entry in summary["classes"].items():
        if entry["voxels"]:
            if "volume_ml" in entry:
                parts.append(f"{name} {entry['volume_ml']:.3g} mL")
            else:
                unit = "mm2" if "area_mm2" in entry else "px"
                parts.append(f"{name} {entry.get('area_mm2', entry.get('area_px')):.4g} {unit}")
    return ", ".join(parts) or "nothing found"


def _write_csv(path: str, rows: list[dict]) -> None:
    fields = ["input", "output", "status", "reason", "seconds"]
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
