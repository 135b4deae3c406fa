"""The annotation page's server: the page itself and a small JSON API over a :class:`Workspace`'s open input.

Python's own ``http.server`` (threaded) serves it on localhost: one person, one browser tab, requests that
take milliseconds once a slice is embedded; no framework or ASGI server is needed for that, and the page
works offline (its HTML and JavaScript ship in ``samjax/annotate/static``, nothing comes from a CDN).

    GET  /                       the page
    GET  /api/info               the open scan (shape, axes), labels, default window, output; the inputs
    GET  /api/slice?axis&index&level&width   the slice as a grayscale PNG (window/level on the scan's own
                                 intensities); queues its neighbours' embeddings
    GET  /api/labels?axis&index  the slice's label map as a PNG (pixel value = label index)
    POST /api/prompt {axis, index, object, label, prompt: ["click", x, y, 1|0] | ["box", x0, y0, x1, y1]}
    POST /api/undo   {axis, index, object}
    POST /api/propose {axis, index}   the auto-mode run's classes on the slice (with --propose)
    POST /api/save   {overwrite}  -> 409 when the output exists and overwrite is false
    POST /api/open   {input}      opens another input of a folder (its work comes back from disk)

Every error is a JSON ``{"error": "..."}`` (400, or 409 for an existing output) that the page shows; the
server logs it in one line and keeps running. Before any of that, :mod:`samjax.annotate.guard` refuses
requests not meant for this server (another Host, a cross-site or non-JSON POST, an oversized body, a missing
token where one is required) with 403 / 413 and the reason.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image

from samjax.annotate.guard import Guard, is_loopback, new_token
from samjax.errors import DataError

STATIC = os.path.join(os.path.dirname(__file__), "static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def default_window(array: np.ndarray) -> tuple[float, float]:
    """A window that shows the scan: its 1st..99th percentiles (CT users pick a preset on the page)."""
    values = np.asarray(array).ravel()
    lo, hi = np.percentile(values[:: max(1, values.size // 200_000)], (1, 99))  # a sample is enough
    return float((lo + hi) / 2), float(max(hi - lo, 1e-6))


class AnnotationServer(ThreadingHTTPServer):
    """Serves ``workspace`` (a :class:`samjax.annotate.workspace.Workspace` with an input open) on ``host:port``."""

    daemon_threads = True

    def __init__(self, workspace, labels, host: str = "127.0.0.1", port: int = 8008, log=None,
                 token: bool | str | None = None):
        """``token``: True for a random one, a string for that one; None (default): required exactly when
        ``host`` is not a loopback address."""
        self.workspace, self.labels = workspace, tuple(labels)
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.window = default_window(workspace.current.scan.array)
        self.changes = threading.Lock()  # one change of the annotation at a time, in arrival order
        super().__init__((host, port), _Handler)
        if token is None:
            token = not is_loopback(host)
        token = new_token() if token is True else (token or None)
        self.guard = Guard(host, self.server_address[1], token)

    @property
    def annotation(self):
        """The open input's :class:`samjax.annotate.session.Annotation`."""
        return self.workspace.current

    def open(self, index: int) -> dict:
        if index != self.workspace.index:
            self.workspace.open(index)
            self.window = default_window(self.annotation.scan.array)
        return self.info()

    @property
    def url(self) -> str:
        """The server's base address (as bound)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def page_url(self) -> str:
        """The address to open: the base, with ``?token=`` when the server requires one."""
        return self.url + (f"?token={self.guard.token}" if self.guard.token else "")

    def info(self) -> dict:
        a = self.annotation
        shape = list(a.scan.array.shape if a.scan.volume else a.scan.array.shape[:2])
        return {"input": a.scan.path, "name": a.scan.name, "volume": a.scan.volume, "shape": shape,
                "labels": list(self.labels), "window": list(self.window), "output": a.output,
                "saved": os.path.exists(a.output), "axis": a.segmenter.axis if a.scan.volume else 2,
                "objects": [{"axis": k[0], "slice": k[1], "object": k[2], "label": e["label"],
                             "prompts": len(e["prompts"])} for k, e in a.objects.items()],
                "inputs": self.workspace.entries(), "current": self.workspace.index,
                "propose": a.proposer is not None}

    def slice_png(self, axis: int, index: int, level: float, width: float) -> bytes:
        if not (np.isfinite(level) and np.isfinite(width) and width > 0):
            raise DataError(f"window level {level} and width {width} must be finite, the width positive")
        a = self.annotation
        a.slice_image(axis, index)  # checks the index
        raw = np.asarray(a.scan.array)
        image = np.take(raw, index, axis) if a.scan.volume else raw
        lo = level - width / 2
        gray = np.clip((image.astype(np.float64) - lo) / max(width, 1e-6) * 255 + 0.5, 0, 255).astype(np.uint8)
        a.prefetch(axis, index)
        return _png(gray)

    def prompts(self, axis: int, index: int) -> list[dict]:
        """The objects on a slice with their prompts in the order given (``["click", x, y, 1|0]``,
        ``["box", x0, y0, x1, y1]``, ``["propose", class]``), so the page can draw them."""
        a = self.annotation
        a.slice_image(axis, index)  # checks the index
        axis = axis if a.scan.volume else 2
        return [{"object": obj, "label": e["label"], "prompts": list(e["prompts"])}
                for (ax, k, obj), e in list(a.objects.items()) if ax == axis and (k == index or not a.scan.volume)]

    def labels_png(self, axis: int, index: int) -> bytes:
        a = self.annotation
        h, w = a.slice_image(axis, index).shape[:2]
        labels = np.zeros((h, w), np.uint8)
        axis = axis if a.scan.volume else 2
        for (ax, k, obj), entry in list(a.objects.items()):  # the painting order of the label map
            if ax == axis and (k == index or not a.scan.volume):
                mask = a.mask(ax, k, obj)
                if mask is not None:
                    labels[mask] = entry["label"]
        return _png(labels)


class _Handler(BaseHTTPRequestHandler):
    server: AnnotationServer

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # requests are not logged; errors are, in one line

    def _send(self, status: int, body: bytes, content_type: str, cookie: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, payload: dict, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, message: str, status: int = 400) -> None:
        self.server.log(f"annotate: {message}")
        self._json({"error": message}, status)

    def _refused(self, method: str) -> bool:
        """Answers and logs a request the guard refuses (see ``samjax.annotate.guard``)."""
        refusal = self.server.guard.refusal(method, self.path, self.headers)
        if refusal is None:
            return False
        status, reason = refusal
        self.close_connection = True  # an unread body must not be taken for the next request
        self._error(f"refused {method} {urlparse(self.path).path} from {self.client_address[0]}: {reason}", status)
        return True

    def do_GET(self):  # noqa: N802 - the base class's name
        if self._refused("GET"):
            return
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/", "/index.html"):
                return self._static("index.html", self.server.guard.cookie_header(self.path))
            if url.path == "/favicon.ico":  # browsers ask for one; the page has none
                return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            if url.path.startswith("/static/"):
                return self._static(url.path[len("/static/"):])
            if url.path == "/api/info":
                return self._json(self.server.info())
            axis, index = int(query.get("axis", 2)), int(query.get("index", 0))
            if url.path == "/api/slice":
                level, width = self.server.window
                body = self.server.slice_png(axis, index, float(query.get("level", level)),
                                             float(query.get("width", width)))
                return self._send(200, body, "image/png")
            if url.path == "/api/labels":
                return self._send(200, self.server.labels_png(axis, index), "image/png")
            if url.path == "/api/prompts":
                return self._json({"objects": self.server.prompts(axis, index)})
            return self._error(f"no such page: {url.path}", HTTPStatus.NOT_FOUND)
        except (DataError, ValueError, OverflowError) as e:
            return self._error(str(e))
        except Exception as e:  # noqa: BLE001 - the server keeps running whatever one request does
            return self._error(f"{type(e).__name__}: {e}", HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_POST(self):  # noqa: N802
        if self._refused("POST"):
            return
        url = urlparse(self.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise DataError(f"the body must be a JSON object, got {type(body).__name__}")
            with self.server.changes:
                return self._change(url.path, body)
        except (DataError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            return self._error(what)
        except Exception as e:  # noqa: BLE001
            return self._error(f"{type(e).__name__}: {e}", HTTPStatus.INTERNAL_SERVER_ERROR)

    def _change(self, path: str, body: dict) -> None:
        a = self.server.annotation
        if path == "/api/prompt":
            label = int(body["label"])
            if not 1 <= label < max(len(self.server.labels), 2):
                raise DataError(f"label {label} is not one of 1..{len(self.server.labels) - 1}")
            start = time.perf_counter()
            mask = a.add_prompt(int(body["axis"]), int(body["index"]), int(body.get("object", label)),
                                list(body["prompt"]), label)
            return self._json({"ms": round(1000 * (time.perf_counter() - start), 1), "pixels": int(mask.sum())})
        if path == "/api/undo":
            mask = a.undo(int(body["axis"]), int(body["index"]), int(body.get("object", 1)))
            return self._json({"pixels": 0 if mask is None else int(mask.sum())})
        if path == "/api/propose":
            start = time.perf_counter()
            added = a.propose(int(body["axis"]), int(body["index"]))
            return self._json({"ms": round(1000 * (time.perf_counter() - start), 1),
                               "labels": [self.server.labels[v] if v < len(self.server.labels) else str(v)
                                          for v in added]})
        if path == "/api/open":
            return self._json(self.server.open(int(body["input"])))
        if path == "/api/save":
            try:
                path = a.save(overwrite=bool(body.get("overwrite", False)))
            except FileExistsError as e:
                return self._error(str(e), HTTPStatus.CONFLICT)
            self.server.log(f"annotate: wrote {path}")
            return self._json({"saved": path, "inputs": self.server.workspace.entries()})
        return self._error(f"no such action: {path}", HTTPStatus.NOT_FOUND)

    def _static(self, name: str, cookie: str | None = None) -> None:
        path = os.path.normpath(os.path.join(STATIC, name))
        if not path.startswith(STATIC + os.sep) or not os.path.isfile(path):
            return self._error(f"no such file: {name}", HTTPStatus.NOT_FOUND)
        with open(path, "rb") as f:
            body = f.read()
        self._send(200, body, CONTENT_TYPES.get(os.path.splitext(path)[1], "application/octet-stream"), cookie)
