"""A bounded fuzz of the live annotation server (fixed seed, a time limit): malformed and hostile requests get a
4xx naming the reason, valid ones a 200, the server keeps answering, the progress file is valid JSON after every
request, two clients clicking and undoing at once lose nothing, and a new server on the same output replays the
work to the same label map."""

import http.client
import json
import os
import threading
import time

import numpy as np
import pytest

from raw_http import send
from samjax.annotate.guard import MAX_BODY

SHAPE = (24, 28, 3)  # rows, columns, slices: a slice is 28 wide, 24 high


def _send(port, method, path, data=b"", headers=None):
    return send(port, method, path, data, headers)[:3]


def _valid_prompt(rng):
    obj = int(rng.integers(1, 4))
    if rng.random() < 0.25:
        x0, y0 = rng.uniform(0, 14), rng.uniform(0, 12)
        prompt = ["box", x0, y0, x0 + rng.uniform(2, 14), y0 + rng.uniform(2, 12)]
    else:
        prompt = ["click", rng.uniform(0, 28), rng.uniform(0, 24), int(rng.integers(0, 2))]
    return {"axis": 2, "index": int(rng.integers(0, 3)), "object": obj, "label": int(rng.integers(1, 3)),
            "prompt": prompt}


def _hostile(rng):
    """``(method, path, body bytes, headers)`` of a malformed, out-of-range or unknown request."""
    base = _valid_prompt(rng)
    kind = int(rng.integers(0, 14))
    if kind == 0:
        return "POST", "/api/prompt", b'{"axis": 2, "index": ', {}
    if kind == 1:
        return "POST", "/api/prompt", json.dumps({**base, "axis": "two"}).encode(), {}
    if kind == 2:  # NaN and infinities: json.dumps writes them as the bare words Python's json reads back
        bad = rng.choice([float("nan"), float("inf"), -float("inf"), 1e308])
        field = rng.choice(["axis", "index", "object", "label"])
        return "POST", "/api/prompt", json.dumps({**base, field: bad}).encode(), {}
    if kind == 3:
        prompt = list(base["prompt"])
        prompt[1 + int(rng.integers(0, len(prompt) - 1))] = rng.choice([float("nan"), -5.0, 1e9, "x", None, True])
        return "POST", "/api/prompt", json.dumps({**base, "prompt": prompt}).encode(), {}
    if kind == 4:
        return "POST", "/api/prompt", json.dumps({**base, "axis": int(rng.choice([-1, 3, 99]))}).encode(), {}
    if kind == 5:
        return "POST", "/api/prompt", json.dumps({**base, "index": int(rng.choice([-1, 3, 10**12]))}).encode(), {}
    if kind == 6:
        return "POST", "/api/prompt", json.dumps({**base, "prompt": ["click", 3, 3, 0.5]}).encode(), {}
    if kind == 7:
        return "POST", rng.choice(["/api/delete", "/api/../etc/passwd", "/api/prompt/x"]), b"{}", {}
    if kind == 8:
        missing = dict(base)
        del missing[rng.choice(["axis", "index", "label", "prompt"])]
        return "POST", "/api/prompt", json.dumps(missing).encode(), {}
    if kind == 9:
        return "POST", "/api/prompt", b"", {"Content-Length": str(MAX_BODY + int(rng.integers(1, 10**6)))}
    if kind == 10:
        not_an_object = [[1, 2], "undo", 3, None][int(rng.integers(0, 4))]
        return "POST", rng.choice(["/api/undo", "/api/prompt", "/api/save"]), json.dumps(not_an_object).encode(), {}
    if kind == 11:
        return "POST", "/api/open", json.dumps({"input": int(rng.choice([-1, 5, 10**9]))}).encode(), {}
    if kind == 12:
        return "GET", rng.choice(["/api/slice?axis=2&index=-1", "/api/slice?axis=7&index=0", "/api/labels?axis=x",
                                  "/api/slice?axis=2&index=0&level=nan&width=inf", "/api/prompts?index=99",
                                  "/static/../server.py", "/nowhere"]), b"", {}
    return "POST", "/api/prompt", b"[" * 50_000 + b"]" * 50_000, {}  # deep nesting


def _check_progress(path):
    with open(path) as f:
        state = json.load(f, parse_constant=lambda word: pytest.fail(f"progress file holds {word}"))
    assert set(state) == {"input", "objects"}
    return state


def test_fuzzed_requests_get_reasons_and_lose_nothing(tmp_path, start_server):
    hu = np.full(SHAPE, -100, np.int16)
    hu[6:18, 8:22] = 200
    output = tmp_path / "out.nii.gz"
    server = start_server(hu, np.eye(4), "organ,fat", output, 4)
    server.log = lambda line: None
    port = server.server_address[1]
    progress = str(output) + ".progress.json"
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 240
    statuses = {}
    for _ in range(300):
        if time.monotonic() > deadline:
            break
        if rng.random() < 0.3:
            method, path, data, headers = "POST", "/api/prompt", json.dumps(_valid_prompt(rng)).encode(), {}
        elif rng.random() < 0.1:
            method, path, data = "POST", "/api/undo", json.dumps({"axis": 2, "index": int(rng.integers(0, 3)),
                                                                 "object": int(rng.integers(1, 4))}).encode()
            headers = {}
        else:
            method, path, data, headers = _hostile(rng)
        status, kind, body = _send(port, method, path, data, headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status == 200 or 400 <= status < 500, (status, method, path, data[:200], body[:300])
        if status != 200:
            assert kind == "application/json" and json.loads(body)["error"], body
        if (tmp_path / "out.nii.gz.progress.json").exists():
            _check_progress(progress)
    print(statuses)
    assert statuses.get(200, 0) >= 50 and len([s for s in statuses if s >= 400]) >= 3, statuses

    errors = []

    def client(seed):  # two people on one annotation: clicks and undos interleave, each answered
        r = np.random.default_rng(seed)
        for _ in range(15):
            body = _valid_prompt(r) if r.random() < 0.7 else {"axis": 2, "index": 1, "object": 1}
            status, _, answer = _send(port, "POST", "/api/prompt" if "prompt" in body else "/api/undo",
                                      json.dumps(body).encode())
            if status != 200:
                errors.append(answer)

    threads = [threading.Thread(target=client, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    state = _check_progress(progress)
    assert state["objects"] and _send(port, "GET", "/api/info")[0] == 200  # still answering

    before = server.annotation.label_map()
    prompts = {k: list(e["prompts"]) for k, e in server.annotation.objects.items()}
    again = start_server(None, None, "organ,fat", output, 4)  # a new server on the same output
    assert {k: e["prompts"] for k, e in again.annotation.objects.items()} == prompts
    np.testing.assert_array_equal(again.annotation.label_map(), before)


def test_a_server_killed_mid_click_loses_at_most_that_click(tmp_path, start_server):
    import signal
    import subprocess
    import sys

    import nibabel as nib

    hu = np.full(SHAPE, -100, np.int16)
    hu[6:18, 8:22] = 200
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "ct.nii.gz")
    output = tmp_path / "out.nii.gz"
    script = os.path.join(os.path.dirname(__file__), "serve_tiny.py")
    process = subprocess.Popen([sys.executable, script, "4", "--input", str(tmp_path / "ct.nii.gz"), "--sam", "sam",
                                "--labels", "organ", "--ct-window", "40,400", "--output", str(output), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(process.stdout.readline().strip().rstrip("/").rsplit(":", 1)[1])
        clicks = [["click", 14.5, 12.5, 1], ["click", 4.5, 3.5, 0], ["click", 20.5, 15.5, 1], ["click", 9.5, 9.5, 1]]
        for click in clicks[:3]:
            body = {"axis": 2, "index": 1, "object": 1, "label": 1, "prompt": click}
            assert _send(port, "POST", "/api/prompt", json.dumps(body).encode())[0] == 200
        last = threading.Thread(target=lambda: _send_quietly(port, {"axis": 2, "index": 1, "object": 1, "label": 1,
                                                                    "prompt": clicks[3]}))
        last.start()
        time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        last.join()
    finally:
        process.kill()
        process.wait()
    state = _check_progress(str(output) + ".progress.json")
    kept = [[float(v) if i else v for i, v in enumerate(c)] for c in clicks]
    assert [o["prompts"] for o in state["objects"]] in ([kept[:3]], [kept])
    again = start_server(None, None, "organ", output, 4)  # the work comes back, and the page goes on
    assert again.annotation.objects[(2, 1, 1)]["prompts"] == state["objects"][0]["prompts"]
    body = {"axis": 2, "index": 1, "object": 1, "label": 1, "prompt": clicks[3]}
    assert _send(again.server_address[1], "POST", "/api/prompt", json.dumps(body).encode())[0] == 200


def _send_quietly(port, body):
    try:
        _send(port, "POST", "/api/prompt", json.dumps(body).encode())
    except (OSError, http.client.HTTPException):
        pass  # the server died under this request
