"""Headless Chromium for tests that look at a rendered page, and a small PNG reader to look at the
screenshot without Pillow.

``make test`` installs the Debian ``chromium`` package when no binary is found (the ``browser``
target). The development and CI machines run as root, where Chromium refuses to start without
``--no-sandbox``; every run gets a throwaway profile and no network (the pages are
self-contained, and a stray external URL then shows up as a missing resource, not a slow test).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    html: Path,
    png: Path,
    width: int = 1280,
    height: int = 2000,
    *,
    chromium: Path | None = None,
    timeout_s: float = SCREENSHOT_TIMEOUT_S,
) -> Path:
    """Render ``html`` in headless Chromium at ``width`` x ``height`` CSS pixels (scale factor 1,
    so the PNG has exactly that many pixels) and save the viewport to ``png``."""
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
            "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: the page must not need it
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            html.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if not png.exists():
        raise RuntimeError(
            f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
        )
    return png


# -- a small PNG reader --------------------------------------------------------------------------

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (palettes not needed)


@dataclass(frozen=True, slots=True)
class Png:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    rows: list[bytes]  # unfiltered scanlines, top to bottom

    @property
    def channels(self) -> int:
        return _CHANNELS[self.colour_type]

    def pixels(self) -> Iterator[bytes]:
        step = self.channels
        for row in self.rows:
            for x in range(0, len(row), step):
                yield row[x : x + step]

    def distinct_colours(self, row_step: int = 1) -> set[bytes]:
        """The distinct pixel values, reading every ``row_step``-th row."""
        step = self.channels
        found: set[bytes] = set()
        for row in self.rows[::row_step]:
            found.update(row[x : x + step] for x in range(0, len(row), step))
        return found


def _chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset = len(_SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"PNG chunk {kind!r} fails its CRC")
        yield kind, body
        offset += 12 + length


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk."""
    data = path.read_bytes()[:24]
    if not data.startswith(_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: Path) -> Png:
    """Decode an 8-bit, non-interlaced greyscale/RGB/RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{path} is not a PNG")
    header = b""
    compressed = bytearray()
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if bit_depth != 8 or colour_type not in _CHANNELS or interlace:
        raise ValueError(f"unsupported PNG: depth {bit_depth}, colour {colour_type}, {interlace=}")
    bpp = _CHANNELS[colour_type]
    stride = width * bpp
    raw = zlib.decompress(bytes(compressed))
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                upper_left = previous[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, previous[i], upper_left)) & 0xFF
        elif kind != 0:
            raise ValueError(f"PNG row {y} has unknown filter {kind}")
        previous = bytes(line)
        rows.append(previous)
    return Png(width, height, bit_depth, colour_type, rows)
