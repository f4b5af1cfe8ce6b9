"""The demo's data: scikit-learn's bundled 8x8 handwritten digits as image tasks (no download).

Images travel inline as ``data:image/png`` URLs, so the backend needs no media server. The PNG
encoder is a few lines of zlib: the demo itself needs no imaging library.
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits

DIGIT_LABELS = tuple(str(digit) for digit in range(10))
DIGITS_CONFIG = (
    "<View>\n"
    '  <Image name="image" value="$image"/>\n'
    '  <Choices name="digit" toName="image" choice="single">\n'
    + "".join(f'    <Choice value="{label}"/>\n' for label in DIGIT_LABELS)
    + "  </Choices>\n"
    "</View>"
)


@dataclass(frozen=True, slots=True)
class Item:
    """One task's data and its ground-truth label (kept by the demo, never imported with the task)."""

    data: dict[str, Any]
    label: str


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def grey_png(pixels: NDArray[np.uint8]) -> bytes:
    """An 8-bit greyscale PNG of a 2-D uint8 array."""
    height, width = pixels.shape
    rows = b"".join(b"\x00" + bytes(row) for row in pixels)  # filter type 0 (None) per row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def digit_items() -> list[Item]:
    """All 1,797 digits as image tasks (ink is bright: 0..16 scaled to 0..255)."""
    digits = load_digits()
    items = []
    for image, target in zip(digits.images, digits.target, strict=True):
        pixels = np.round(image * (255 / 16)).astype(np.uint8)
        url = "data:image/png;base64," + base64.b64encode(grey_png(pixels)).decode()
        items.append(Item({"image": url}, DIGIT_LABELS[int(target)]))
    return items


def split(items: list[Item], test_size: int, seed: int) -> tuple[list[Item], list[Item]]:
    """(pool, held-out test set), shuffled with ``seed``."""
    order = np.random.default_rng(seed).permutation(len(items))
    shuffled = [items[i] for i in order]
    return shuffled[test_size:], shuffled[:test_size]
