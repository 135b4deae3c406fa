"""Who may talk to the annotation server: the checks every request passes before it touches the scan.

The page serves patient images and writes label maps, so it guards against what local web tools that hold
private data guard against (Jupyter, TensorBoard):

* **DNS rebinding**: a page on another site whose name resolves to 127.0.0.1 would read ``/api/slice`` as
  same-origin. The ``Host`` header must name the address the server is bound to (for a loopback bind also
  ``localhost``, ``127.0.0.1`` or ``[::1]``), with the server's port; otherwise 403.
* **Cross-site requests**: a "simple" form post (``text/plain``, no preflight) from another site could add
  prompts or overwrite a saved map. Every POST must be ``Content-Type: application/json`` and, when the
  browser sends an ``Origin``, come from the page's own origin; otherwise 403. Bodies past
  :data:`MAX_BODY` bytes get 413.
* **Other people on the network**: with a non-loopback ``--host`` (or ``--token``) every request needs the
  random token printed in the URL the command shows. The page's first request carries it as ``?token=``;
  the answer sets it as an ``HttpOnly``, ``SameSite=Strict`` cookie that the browser sends from then on
  (scripts may also send it as the ``X-Samjax-Token`` header).

:func:`refusal` returns ``None`` for a request that may go on, else ``(status, reason)``; the server answers
with the reason as JSON and logs it in one line.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlparse

MAX_BODY = 1 << 20  # 1 MiB: a prompt is a few hundred bytes
COOKIE = "samjax_annotate_token"
HEADER = "X-Samjax-Token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether a bind address only answers this machine (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Guard:
    """The checks of one server bound to ``host:port`` (see the module docstring); ``token`` None: no token."""

    def __init__(self, host: str, port: int, token: str | None):
        self.host, self.port, self.token = host, port, token
        bare = host.strip("[]")
        self.wildcard = bare in ("", "0.0.0.0", "::")
        name = f"[{bare}]" if ":" in bare else bare
        names = {name.lower()}
        if is_loopback(host):
            names.update(LOOPBACK_NAMES)
        self.hosts = {f"{n}:{port}" for n in names}

    def host_refusal(self, host_header: str | None) -> str | None:
        if self.wildcard:  # any name of this machine may reach it; the token (always required here) guards it
            return None
        if (host_header or "").lower() not in self.hosts:
            return (f"Host {host_header!r} is not this server's ({', '.join(sorted(self.hosts))}): refused as a "
                    "possible DNS-rebinding request; open the address the command printed")
        return None

    def token_of(self, headers, path: str) -> str | None:
        """The token a request presents: its header, its cookie, or ``?token=``."""
        if headers.get(HEADER):
            return headers.get(HEADER)
        try:
            cookie = SimpleCookie(headers.get("Cookie", ""))
        except CookieError:
            cookie = {}
        if COOKIE in cookie:
            return cookie[COOKIE].value
        return parse_qs(urlparse(path).query).get("token", [None])[-1]

    def token_ok(self, headers, path: str) -> bool:
        given = self.token_of(headers, path)
        return self.token is None or (given is not None and hmac.compare_digest(given.encode(), self.token.encode()))

    def refusal(self, method: str, path: str, headers) -> tuple[int, str] | None:
        """``None`` when the request may go on, else ``(status, one-line reason)``."""
        reason = self.host_refusal(headers.get("Host"))
        if reason:
            return HTTPStatus.FORBIDDEN, reason
        if method == "POST":
            kind = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if kind != "application/json":
                return HTTPStatus.FORBIDDEN, (f"POST {urlparse(path).path} with Content-Type {kind or 'none'!r}: "
                                              "only application/json is accepted (cross-site form posts are refused)")
            origin = headers.get("Origin")
            if origin is not None and origin.lower() != f"http://{(headers.get('Host') or '').lower()}":
                return HTTPStatus.FORBIDDEN, f"POST from origin {origin!r}: only the page's own origin may change the annotation"
            try:
                length = int(headers.get("Content-Length") or 0)
            except ValueError:
                return HTTPStatus.BAD_REQUEST, f"Content-Length {headers.get('Content-Length')!r} is not a number"
            if length < 0:
                return HTTPStatus.BAD_REQUEST, f"Content-Length {length} is negative"
            if length > MAX_BODY:
                return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body of {length} bytes is past the {MAX_BODY}-byte limit"
        route = urlparse(path).path
        public = route == "/favicon.ico" or route.startswith("/static/")  # the page's code is no secret
        if not public and not self.token_ok(headers, path):
            return HTTPStatus.FORBIDDEN, ("missing or wrong token: open the URL the command printed (it ends in "
                                          "?token=...)")
        return None

    def cookie_header(self, path: str) -> str | None:
        """A ``Set-Cookie`` value when the page was opened with the right ``?token=``, else None."""
        if self.token is None or parse_qs(urlparse(path).query).get("token", [None])[-1] != self.token:
            return None
        return f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
