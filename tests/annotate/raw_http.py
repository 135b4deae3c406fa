"""One raw HTTP request to the annotation server, every header under the test's control (Host included)."""

import http.client


def send(port: int, method: str, path: str, data: bytes = b"", headers: dict | None = None, host: str | None = None):
    """``(status, content type, body bytes, response)``. POSTs default to ``application/json`` with the body's
    length; a ``Content-Length`` other than the body's sends the header alone (an oversized claim)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest(method, path, skip_host=True)
    headers = {"Host": host or f"127.0.0.1:{port}", **(headers or {})}
    if method == "POST":
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(data)))
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    if data and headers["Content-Length"] == str(len(data)):
        conn.send(data)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type", ""), body, response
