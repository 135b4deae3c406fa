"""An annotation session: one scan, a SAM, and the masks a person makes with clicks and boxes, kept on disk.

The scan's intensities are mapped to uint8 once, as the model's training data were (``Segmenter.to_uint8``),
and cut along any axis. A slice's image embedding is computed once and cached (``SamPredictor.embed``);
:meth:`Annotation.prefetch` queues the slice in view and its neighbours, nearest first, for a background
thread, so a click only runs the prompt encoder and mask decoder. Each object on a slice keeps its prompts
in order: the first click alone picks the best of SAM's three masks by predicted IoU, every later prompt
gives one mask with the previous low-res logits fed back, as in SAM's interactive training. Undo replays the
remaining prompts, so it returns exactly the mask before the last one. Every change is written at once to a
progress file next to the output (``<output>.progress.json``); a new session on the same output replays it.

With an auto-mode run beside the prompted model (``proposer``), :meth:`Annotation.propose` fills a slice with
that run's class map, one object per class found (classes already drawn on the slice are left alone). A
proposed object is corrected like any other: later clicks go to SAM with the proposal's bounding box as the
box prompt; undo takes the proposal back.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections import OrderedDict

import numpy as np

from samjax.errors import DataError
from samjax.predictor import SamPredictor
from samjax.scans.io import Scan, write_label_map


class Annotation:
    """Masks drawn on ``scan`` with ``segmenter``'s model (a prompted SAM), saved to ``output``.

    Args:
      scan: the scan (``samjax.scans.io.read_scan``).
      segmenter: a ``samjax.scans.segmenter.Segmenter`` (its model, class names and intensity mapping).
      output: the label map to write (``.nii.gz`` for volumes, ``.png`` for 2D images).
      cache_slices: how many slice embeddings are kept (least recently used go first).
      proposer: an auto-mode ``Segmenter`` (one mask per class) for :meth:`propose`, or None.
      proposal_labels: ``{proposer class index: label value}`` (default: the same numbers).
    """

    def __init__(self, scan: Scan, segmenter, output: str, cache_slices: int = 64, proposer=None,
                 proposal_labels=None):
        self.scan, self.segmenter, self.output = scan, segmenter, output
        self.proposer, self.proposal_labels = proposer, dict(proposal_labels or {})
        self._proposals: OrderedDict = OrderedDict()  # (axis, slice) -> the proposer's class map, a few kept
        self._proposer_image: np.ndarray | None = None  # the scan in the proposer's uint8 mapping, made on first use
        self.image = segmenter.to_uint8(scan.array, scan.path)
        if not scan.volume and self.image.ndim == 2:
            self.image = self.image[..., None]  # 2D: one "slice" along axis 2, channels kept
        self.predictor = SamPredictor(segmenter.model)
        self.objects: dict[tuple[int, int, int], dict] = {}  # (axis, slice, object) -> label, prompts, masks
        self._cache: OrderedDict = OrderedDict()
        self._cache_slices = int(cache_slices)
        self._lock = threading.RLock()  # the predictor holds one current image
        self._cache_lock = threading.Lock()
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._wanted: set = set()
        self._closed = False
        self._worker = threading.Thread(target=self._embed_loop, daemon=True)
        self._worker.start()
        self.embedded = 0  # embeddings computed so far (cache misses)
        self._load_progress()

    # --- slices and embeddings ---------------------------------------------------------------
    @property
    def progress_path(self) -> str:
        return self.output + ".progress.json"

    def num_slices(self, axis: int) -> int:
        return self.image.shape[axis] if self.scan.volume else 1

    def slice_image(self, axis: int, index: int) -> np.ndarray:
        """The model's uint8 view of slice ``index`` along ``axis``: ``(H, W)`` (or ``(H, W, 3)``)."""
        if not self.scan.volume:
            return self.image[..., 0] if self.image.shape[-1] == 1 else self.image
        if not (0 <= axis < 3 and 0 <= index < self.image.shape[axis]):
            raise DataError(f"slice {index} along axis {axis} is outside the scan of shape {self.image.shape}")
        return np.take(self.image, index, axis)

    def _key(self, axis: int, index: int) -> tuple[int, int]:
        return (2, 0) if not self.scan.volume else (int(axis), int(index))

    def embedding(self, axis: int, index: int):
        """The slice's embedding, from the cache or computed now. The encoder runs outside the predictor's
        lock, so a click on an embedded slice never waits behind a neighbour being embedded."""
        key = self._key(axis, index)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        emb = self.predictor.embed(self.slice_image(*key))  # reads the model only: safe beside a click
        with self._cache_lock:
            if key not in self._cache:
                self.embedded += 1
                self._cache[key] = emb
                while len(self._cache) > self._cache_slices:
                    self._cache.popitem(last=False)
            return self._cache.get(key, emb)

    def cached(self, axis: int, index: int) -> bool:
        return self._key(axis, index) in self._cache

    def prefetch(self, axis: int, index: int, radius: int = 3) -> None:
        """Queues the slice and its neighbours (nearest first) for the background thread."""
        n = self.num_slices(axis)
        for distance in range(radius + 1):
            for k in {index - distance, index + distance}:
                key = self._key(axis, k)
                if 0 <= k < n and key not in self._wanted and key not in self._cache:
                    self._wanted.add(key)
                    self._queue.put((distance, key))

    def close(self) -> None:
        """Stops the background thread and frees the embeddings (the work is on disk)."""
        self._closed = True
        self._queue.put((-1, None))
        with self._cache_lock:
            self._cache.clear()

    def _embed_loop(self) -> None:
        while True:
            _, key = self._queue.get()
            if self._closed:
                return
            try:
                self.embedding(*key)
            except Exception:  # noqa: BLE001 - a failing slice is reported when it is clicked, not here
                pass
            finally:
                self._wanted.discard(key)

    # --- prompts -------------------------------------------------------------------------------
    def add_prompt(self, axis: int, index: int, obj: int, prompt: list, label: int) -> np.ndarray:
        """Adds ``["click", x, y, 1|0]`` or ``["box", x0, y0, x1, y1]`` to an object; returns its mask ``(H, W)``."""
        h, w = self.slice_image(*self._key(axis, index)).shape[:2]
        kind, *values = prompt
        if kind not in ("click", "box") or len(values) != (3 if kind == "click" else 4):
            raise DataError(f"a prompt is [\"click\", x, y, 1|0] or [\"box\", x0, y0, x1, y1], got {prompt!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise DataError(f"a prompt's values are numbers, got {prompt!r}")
        if kind == "click" and values[2] not in (0, 1):
            raise DataError(f"a click's label is 1 (inside) or 0 (outside), got {values[2]!r}")
        xs, ys = (values[0::2][:2], values[1::2][:2]) if kind == "box" else ([values[0]], [values[1]])
        if not all(0 <= x <= w for x in xs) or not all(0 <= y <= h for y in ys):
            raise DataError(f"the {kind} at {values[:4 if kind == 'box' else 2]} lies outside the {w} x {h} slice")
        key = (*self._key(axis, index), int(obj))
        before = self.objects.get(key)
        entry = {"label": int(label), "prompts": [*(before or {}).get("prompts", []), [kind, *map(float, values)]],
                 "mask": None}
        self.objects[key] = entry
        try:
            self._replay(key)
        except BaseException:  # the prompt is not taken: the object stays as it was
            if before is None:
                del self.objects[key]
            else:
                self.objects[key] = before
            raise
        self._save_progress()
        return entry["mask"]

    def undo(self, axis: int, index: int, obj: int) -> np.ndarray | None:
        """Takes the object's last prompt back; its mask as before that prompt (None when none is left)."""
        key = (*self._key(axis, index), int(obj))
        entry = self.objects.get(key)
        if entry is None or not entry["prompts"]:
            return None
        entry["prompts"].pop()
        if not entry["prompts"]:
            del self.objects[key]
            self._save_progress()
            return None
        self._replay(key)
        self._save_progress()
        return entry["mask"]

    def propose(self, axis: int, index: int) -> list[int]:
        """Adds the proposer's mask of every class it finds on the slice as object ``1000 + label`` (object
        number 1 of that label, the page's numbering), except labels the slice already has; returns the
        labels added."""
        if self.proposer is None:
            raise DataError("no auto-mode run to propose classes with: start with --propose RUN")
        key = self._key(axis, index)
        classes = self._proposal(*key)
        taken = {e["label"] for k, e in self.objects.items() if k[:2] == key}
        added = []
        for c in (int(v) for v in np.unique(classes) if v > 0):
            label = self.proposal_labels.get(c, c)
            if label in taken:
                continue
            self.objects[(*key, 1000 + label)] = {"label": label, "prompts": [["propose", c]], "mask": None}
            added.append(label)
        self._save_progress()
        return added

    def _proposal(self, axis: int, index: int) -> np.ndarray:
        """The proposer's class map ``(H, W)`` of a slice, in the proposer's own intensity mapping."""
        if (axis, index) not in self._proposals:
            if self._proposer_image is None:
                image = self.proposer.to_uint8(self.scan.array, self.scan.path)
                self._proposer_image = image if self.scan.volume or image.ndim == 3 else image[..., None]
            view = (np.take(self._proposer_image, index, axis) if self.scan.volume else self._proposer_image)
            self._proposals[(axis, index)] = self.proposer.classify((view if view.ndim == 3 else view[..., None])[None])[0][0]
            while len(self._proposals) > 8:
                self._proposals.popitem(last=False)
        return self._proposals[(axis, index)]

    def mask(self, axis: int, index: int, obj: int) -> np.ndarray | None:
        key = (*self._key(axis, index), int(obj))
        entry = self.objects.get(key)
        if entry is not None and entry["mask"] is None:
            self._replay(key)
        return None if entry is None else entry["mask"]

    def _replay(self, key) -> None:
        """Runs the object's prompts in order (each step feeding its low-res logits to the next)."""
        entry = self.objects[key]
        if entry["prompts"][0][0] == "propose" and self.proposer is None:
            raise DataError(f"{self.progress_path} holds classes proposed by an auto-mode run: start with --propose "
                            "RUN to show them")
        prompts = entry["prompts"]
        if prompts[0][0] == "propose":
            proposal = self._proposal(key[0], key[1]) == int(prompts[0][1])
            entry["mask"] = proposal
            if len(prompts) == 1 or not proposal.any():
                return
            rows, cols = np.nonzero(proposal)  # the proposal's box, in pixel edges, for the clicks after it
            prompts = [["box", cols.min(), rows.min(), cols.max() + 1.0, rows.max() + 1.0], *prompts[1:]]
        with self._lock:
            self.predictor.set_embedding(self.embedding(key[0], key[1]))
            low_res, box, points, labels = None, None, [], []
            for kind, *values in prompts:
                if kind == "box":
                    box = np.array(values)
                else:
                    points.append(values[:2])
                    labels.append(int(values[2]))
                coords = np.array(points) if points else None
                single_click = box is None and len(points) == 1
                masks, iou, logits = self.predictor.predict(
                    coords, np.array(labels) if points else None, box,
                    mask_input=None if low_res is None else low_res[None], multimask_output=single_click)
                best = int(np.argmax(iou))
                low_res = logits[best]
            entry["mask"] = masks[best]

    # --- the label map --------------------------------------------------------------------------
    def label_map(self) -> np.ndarray:
        """Every object's mask painted with its label, in the scan's grid (objects made later over earlier ones)."""
        spatial = self.scan.array.shape if self.scan.volume else self.scan.array.shape[:2]
        labels = np.zeros(spatial, np.uint8)
        for key in list(self.objects):
            axis, index, obj = key
            mask = self.mask(axis, index, obj)
            if mask is None:
                continue
            if self.scan.volume:
                view = np.moveaxis(labels, axis, 0)[index]  # a view: painting it paints the volume
                view[mask] = self.objects[key]["label"]
            else:
                labels[mask] = self.objects[key]["label"]
        return labels

    def save(self, overwrite: bool = False) -> str:
        """Writes the label map to ``output`` in the scan's geometry; an existing file only with ``overwrite``."""
        if os.path.exists(self.output) and not overwrite:
            raise FileExistsError(f"{self.output} exists; confirm to replace it")
        write_label_map(self.scan, self.label_map(), self.output)
        return self.output

    # --- progress on disk ------------------------------------------------------------------------
    def _save_progress(self) -> None:
        state = {"input": os.path.abspath(self.scan.path), "objects": [
            {"axis": k[0], "slice": k[1], "object": k[2], "label": e["label"], "prompts": e["prompts"]}
            for k, e in self.objects.items()]}  # in the order they were made: the painting order
        os.makedirs(os.path.dirname(os.path.abspath(self.progress_path)), exist_ok=True)
        tmp = self.progress_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())  # a crash leaves the old file or the new one, whole
        os.replace(tmp, self.progress_path)

    def _load_progress(self) -> None:
        if not os.path.isfile(self.progress_path):
            return
        try:
            with open(self.progress_path) as f:
                state = json.load(f)
            objects = {(int(o["axis"]), int(o["slice"]), int(o["object"])):
                       {"label": int(o["label"]), "prompts": [list(p) for p in o["prompts"]], "mask": None}
                       for o in state["objects"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self.progress_path}: the saved work cannot be read ({e}); move it away to start "
                            "afresh") from None
        if state.get("input") != os.path.abspath(self.scan.path):
            raise DataError(f"{self.progress_path} holds work on {state.get('input')}, not {self.scan.path}; "
                            "choose another output")
        self.objects = objects
