"""Screenshots of a built book in headless Chromium, as a reader first sees it.

    python scripts/screenshots.py BOOK_HTML_DIR OUT_DIR [--width 1280] [--height 2400]

Opens the front page, the results chapter, the results notebook page, the
qualitative page and the real-anatomy chapter of a book built by ``slicelib study``
(e.g. ``_build/html``) from the file system, with the network unused, and writes one PNG
per page and width (the given width and a 420 px phone width) into OUT_DIR. Needs the ``chromium``
binary (Debian: ``apt-get install chromium``); CHROMIUM names another.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PAGES: dict[str, str] = {
    "front": "book/intro.html",
    "results": "book/results.html",
    "results-notebook": "notebooks/results.html",
    "qualitative": "notebooks/qualitative.html",
    "real": "book/real.html",
}
PHONE_WIDTH = 420


def chromium() -> str:
    """The Chromium binary: $CHROMIUM, else ``chromium`` or ``chromium-browser`` on PATH."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return str(shutil.which(name))
    raise SystemExit("screenshots: no chromium binary found (install it or set CHROMIUM)")


def screenshot(page: Path, out: Path, width: int, height: int) -> None:
    """One PNG of ``page`` at ``width`` x ``height`` CSS pixels."""
    with tempfile.TemporaryDirectory() as profile:
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=8000",  # lets MathJax typeset before the shot
            f"--screenshot={out}",
            page.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"screenshots: chromium failed on {page}: {done.stderr.strip()[-300:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("book", type=Path, help="the built book's html folder")
    parser.add_argument("out", type=Path, help="where the PNGs go")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    missing = [p for p in PAGES.values() if not (args.book / p).is_file()]
    if missing:
        print(f"screenshots: {args.book}: not a built book (no {missing[0]})", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name, page in PAGES.items():
        for width in (args.width, PHONE_WIDTH):
            out = args.out / f"{name}-{width}.png"
            screenshot(args.book / page, out, width, args.height)
            print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
