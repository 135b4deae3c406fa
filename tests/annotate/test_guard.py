"""The annotation server refuses requests not meant for it: another Host (DNS rebinding), cross-site and non-JSON
posts, oversized bodies, and without the printed URL's token where one is required; each refusal is one line in
the terminal, and the page's own requests go through."""

import json
from urllib.parse import urlparse

import numpy as np
import pytest

from raw_http import send
from samjax.annotate.guard import COOKIE, HEADER, MAX_BODY, Guard, is_loopback


def _request(server, method, path, body=None, headers=None, host=None):
    """``(status, json or bytes, response)`` of one raw request; ``host`` replaces the Host header."""
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, kind, raw, response = send(server.server_address[1], method, path, data, headers, host)
    return status, (json.loads(raw) if kind == "application/json" else raw), response


@pytest.fixture()
def hu():
    hu = np.full((24, 28, 3), -100, np.int16)
    hu[6:18, 8:22] = 200
    return hu


def test_requests_from_elsewhere_are_refused_with_one_line_each(tmp_path, start_server, hu):
    server = start_server(hu, np.eye(4), "organ", tmp_path / "out.nii.gz", 3)
    lines = []
    server.log = lines.append
    port = server.server_address[1]
    click = {"axis": 2, "index": 1, "object": 1, "label": 1, "prompt": ["click", 14.5, 12.5, 1]}
    assert server.page_url == server.url  # loopback: no token unless --token

    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert _request(server, "GET", "/api/info", host=host)[0] == 200
    status, body, _ = _request(server, "GET", "/api/slice?axis=2&index=1", host=f"evil.example:{port}")
    assert status == 403 and "DNS-rebinding" in body["error"]
    assert _request(server, "GET", "/api/info", host="localhost:1")[0] == 403  # another port

    status, body, _ = _request(server, "POST", "/api/prompt", click, {"Content-Type": "text/plain"})
    assert status == 403 and "application/json" in body["error"]
    status, body, _ = _request(server, "POST", "/api/save", {"overwrite": True}, {"Origin": "http://evil.example"})
    assert status == 403 and "origin 'http://evil.example'" in body["error"]
    status, body, _ = _request(server, "POST", "/api/prompt", b"", {"Content-Length": str(MAX_BODY + 1)})
    assert status == 413 and "limit" in body["error"]
    assert not server.annotation.objects  # nothing refused reached the annotation, nor the disk
    assert not (tmp_path / "out.nii.gz").exists() and not (tmp_path / "out.nii.gz.progress.json").exists()

    status, body, _ = _request(server, "POST", "/api/prompt", click, {"Origin": f"http://127.0.0.1:{port}"})
    assert status == 200 and body["pixels"] > 0  # the page's own request
    assert _request(server, "POST", "/api/prompt", click, {"Content-Type": "application/json; charset=utf-8"})[0] == 200
    assert len(server.annotation.objects[(2, 1, 1)]["prompts"]) == 2

    refusals = [line for line in lines if "refused" in line]
    assert len(refusals) == 5 and all("\n" not in line and line.startswith("annotate: refused") for line in refusals)


@pytest.mark.parametrize("flags", [("--host", "0.0.0.0"), ("--token",)], ids=["network", "asked"])
def test_the_token_is_asked_for_and_kept_in_a_cookie(tmp_path, start_server, hu, flags):
    server = start_server(hu, np.eye(4), "organ", tmp_path / "out.nii.gz", 3, *flags)
    token = server.guard.token
    assert token and len(token) >= 24 and server.page_url == f"{server.url}?token={token}"
    status, body, _ = _request(server, "GET", "/api/info")
    assert status == 403 and "token" in body["error"]
    assert _request(server, "GET", "/?token=wrong")[0] == 403
    assert _request(server, "GET", "/static/app.js")[0] == 200  # the page's code is no secret

    status, page, response = _request(server, "GET", urlparse(server.page_url).path + "?" + urlparse(server.page_url).query)
    cookie = response.getheader("Set-Cookie")
    assert status == 200 and b"/static/app.js" in page
    assert cookie.startswith(f"{COOKIE}={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert _request(server, "GET", "/api/info", headers={"Cookie": f"{COOKIE}={token}"})[0] == 200
    assert _request(server, "GET", "/api/info", headers={HEADER: token})[0] == 200
    assert _request(server, "GET", "/api/info", headers={"Cookie": f"{COOKIE}=x{token}"})[0] == 403
    click = {"axis": 2, "index": 1, "object": 1, "label": 1, "prompt": ["click", 14.5, 12.5, 1]}
    assert _request(server, "POST", "/api/prompt", click)[0] == 403
    assert _request(server, "POST", "/api/save", {"overwrite": True})[0] == 403
    assert not (tmp_path / "out.nii.gz").exists() and not (tmp_path / "out.nii.gz.progress.json").exists()
    assert _request(server, "POST", "/api/prompt", click, {HEADER: token})[0] == 200


def test_the_guard_knows_its_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    lan = Guard("192.168.1.5", 8008, "t")
    assert lan.host_refusal("192.168.1.5:8008") is None and lan.host_refusal("localhost:8008")
    assert Guard("0.0.0.0", 8008, "t").host_refusal("whatever:8008") is None  # any name; the token guards it
