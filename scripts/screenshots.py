"""Screenshots of every page of a built book in headless Chromium, as readers see it.

    python scripts/screenshots.py BOOK_HTML_DIR OUT_DIR [--widths 1280 420] [--screen 900]

Opens each chapter and notebook page of a book built by ``slicelib study`` (e.g.
``_build/html``) from the file system, with the network unused, at each width (a
desktop and a 420 px phone by default), and writes two PNGs per page and width into
OUT_DIR: ``<page>-<width>-screen.png``, the first screen (``--screen`` px tall), and
``<page>-<width>-full.png``, the whole page (at most ``--max-height`` px). Needs the
``chromium`` binary (Debian: ``apt-get install chromium``); $CHROMIUM names another.
Chromium is driven over its DevTools pipe, so nothing but the standard library is used.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PHONE_WIDTH = 420
# Pages never shot: the search page and Sphinx's generated index pages.
SKIPPED = ("search.html", "genindex.html", "index.html")


def chromium() -> str:
    """The Chromium binary: $CHROMIUM, else ``chromium`` or ``chromium-browser`` on PATH."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return str(shutil.which(name))
    raise SystemExit("screenshots: no chromium binary found (install it or set CHROMIUM)")


def book_pages(book: Path) -> list[Path]:
    """Every chapter (``book/*.html``) and notebook page (``notebooks/*.html``) of the
    built book, the front page first."""
    pages = sorted((book / "book").glob("*.html")) + sorted((book / "notebooks").glob("*.html"))
    front = [p for p in pages if p.name == "intro.html"]
    return front + [p for p in pages if p not in front and p.name not in SKIPPED]


class DevTools:
    """A headless Chromium driven over ``--remote-debugging-pipe`` (JSON messages,
    each ended by a NUL byte, written to its fd 3 and read from its fd 4)."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory()
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds() -> None:
            """In the child: our pipe ends become its fds 3 and 4 (inheritable)."""
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--hide-scrollbars",
                "--allow-file-access-from-files",
                f"--user-data-dir={self.profile.name}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # the pipes' other ends are close-on-exec in any case
            preexec_fn=child_fds,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one DevTools command (to the page when ``session``); returns its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + self.timeout
        while self._read_message(deadline).get("method") != event:
            pass

    def shoot(self, page: Path, width: int, screen: int, max_height: int) -> tuple[bytes, bytes]:
        """(first screen, whole page) of ``page`` at ``width`` CSS px, as PNG bytes."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=screen,
            deviceScaleFactor=1,
            mobile=width <= PHONE_WIDTH,
        )
        self.call("Page.enable", session=True)
        self.call("Page.navigate", session=True, url=page.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        # MathJax typesets after the load event; its promise says when it is done.
        self.call(
            "Runtime.evaluate",
            session=True,
            expression="window.MathJax && MathJax.startup ? MathJax.startup.promise : null",
            awaitPromise=True,
        )
        time.sleep(0.3)
        first = self._capture(width, screen)
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        whole = self._capture(width, min(int(size["height"]), max_height))
        return first, whole

    def _capture(self, width: int, height: int) -> bytes:
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = self.call(
            "Page.captureScreenshot",
            session=True,
            format="png",
            clip=clip,
            captureBeyondViewport=True,
        )
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self.profile.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("book", type=Path, help="the built book's html folder")
    parser.add_argument("out", type=Path, help="where the PNGs go")
    parser.add_argument("--widths", type=int, nargs="+", default=[1280, PHONE_WIDTH])
    parser.add_argument("--screen", type=int, default=900, help="first screen's height (px)")
    parser.add_argument("--max-height", type=int, default=16000, help="whole page's cap (px)")
    parser.add_argument("--only", nargs="*", default=None, help="page names (e.g. intro)")
    args = parser.parse_args(argv)
    pages = book_pages(args.book)
    if not any(p.name == "intro.html" for p in pages):
        print(f"screenshots: {args.book}: not a built book (no book/intro.html)", file=sys.stderr)
        return 2
    if args.only:
        pages = [p for p in pages if p.stem in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    browser = DevTools()
    try:
        for page in pages:
            name = f"{page.parent.name}-{page.stem}"
            for width in args.widths:
                first, whole = browser.shoot(page, width, args.screen, args.max_height)
                for kind, png in (("screen", first), ("full", whole)):
                    out = args.out / f"{name}-{width}-{kind}.png"
                    out.write_bytes(png)
                    print(out)
    finally:
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
