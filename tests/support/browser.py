"""Headless Chromium for tests that look at a rendered page, and a look at the screenshot (Pillow).

``make test`` installs the Debian ``chromium`` package when no binary is found (the ``browser``
target). The development and CI machines run as root, where Chromium refuses to start without
``--no-sandbox``; every run gets a throwaway profile and no network (the pages are
self-contained, and a stray external URL then shows up as a missing resource, not a slow test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

#: Tried in this order on the PATH; ``CONDPAY_CHROMIUM`` (a path) comes first when set.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SCREENSHOT_TIMEOUT_S = 90.0


def find_chromium() -> Path | None:
    """The Chromium (or Chrome) binary to drive, or None when there is none."""
    explicit = os.environ.get("CONDPAY_CHROMIUM")
    if explicit:
        return Path(explicit) if Path(explicit).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def screenshot(
    html: Path | str,
    png: Path,
    width: int = 1280,
    height: int = 2000,
    *,
    chromium: Path | None = None,
    timeout_s: float = SCREENSHOT_TIMEOUT_S,
) -> Path:
    """Render ``html`` (a file, or an http:// URL as a string) in headless Chromium at ``width`` x
    ``height`` CSS pixels (scale factor 1, so the PNG has exactly that many pixels) and save the
    viewport to ``png``."""
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary (install the Debian package chromium)")
    png = png.resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="condpay-chromium-") as profile:
        command = [
            str(binary),
            "--headless",
            "--no-sandbox",  # root cannot use the sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--force-device-scale-factor=1",
            # no network: the page must not need it (a page served on 127.0.0.1 is reached there)
            "--host-resolver-rules=MAP * ~NOTFOUND"
            + (", EXCLUDE 127.0.0.1" if isinstance(html, str) else ""),
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            html if isinstance(html, str) else html.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if not png.exists():
        raise RuntimeError(
            f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
        )
    return png


# -- looking at the screenshot -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Png:
    image: Image.Image  # as decoded, in RGB

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    def distinct_colours(self, row_step: int = 1) -> set[bytes]:
        """The distinct RGB pixel values, reading every ``row_step``-th row."""
        rows = range(0, self.height, row_step)
        sampled = Image.new("RGB", (self.width, len(rows)))
        for i, y in enumerate(rows):
            sampled.paste(self.image.crop((0, y, self.width, y + 1)), (0, i))
        colours = sampled.getcolors(maxcolors=sampled.width * sampled.height) or []
        return {bytes(colour) for _, colour in colours}


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG."""
    with Image.open(path) as image:
        if image.format != "PNG":
            raise ValueError(f"{path} is not a PNG")
        return image.size


def read_png(path: Path) -> Png:
    """Decode a PNG (what Chromium writes), in RGB."""
    with Image.open(path) as image:
        if image.format != "PNG":
            raise ValueError(f"{path} is not a PNG")
        return Png(image.convert("RGB"))
