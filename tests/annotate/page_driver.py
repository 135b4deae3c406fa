"""Driving the annotation page in headless Chromium (Debian's, through Playwright): open, click, wait for a status."""

import contextlib
import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


@contextlib.contextmanager
def open_page(server):
    """The page of ``server`` (an ``AnnotationServer``), loaded and showing its first slice; skips without
    Chromium, except under CI where the page must be tested."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        message = "the page test drives Debian's Chromium: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(server.url)
            page.wait_for_function("typeof state !== 'undefined' && state.info !== null && state.image !== null",
                                   timeout=60_000)
            yield page
        finally:
            browser.close()


def wait_status(page, text: str):
    """Waits until the page's status line holds ``text``; a failure shows the line."""
    try:
        page.wait_for_function(f"document.getElementById('status').textContent.includes({text!r})", timeout=60_000)
    except Exception:
        raise AssertionError(f"status: {page.locator('#status').inner_text()!r}, waiting for {text!r}") from None


def click(page, x, y, button="left"):
    """Clicks slice pixel ``(x, y)`` (column, row) on the canvas."""
    box = page.locator("#canvas").bounding_box()
    scale = page.evaluate("state.scale")
    page.mouse.click(box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale, button=button)


def canvas_rgb(page, x, y):
    """The canvas colour at slice pixel ``(x, y)``."""
    return page.evaluate(f"""() => {{
        const c = document.getElementById("canvas"), s = state.scale;
        return Array.from(c.getContext("2d").getImageData({x} * s + s / 2, {y} * s + s / 2, 1, 1).data.slice(0, 3));
    }}""")
