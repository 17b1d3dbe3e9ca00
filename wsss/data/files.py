"""Reading image and mask files, whatever data set layout they come from (one decoder for all).

Images are read in stored pixel order (an EXIF rotation tag is not applied), as VOC's and COCO's
masks were drawn; a file that decodes is read whatever its name says (a PNG named ``.jpg``, bytes
after a JPEG's end), and :func:`read_image_notes` reports such oddities for the caller to
summarise. Masks are palette or grey PNGs of class indices (0 = background, 255 = ignore).
Every fault is a :class:`DataError` naming the file and what is wrong with it.
"""
from __future__ import annotations

import io
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from ..errors import DataError

#: A scored mask with no class id at all may leave this share of its pixels at 255 (VOC's thin
#: boundary band stays far below it); more is a binary mask with 255 for objects.
MAX_IGNORE_SHARE_WITHOUT_CLASS = 0.25
#: What usually makes a mask contradict its image's labels (part of the error message).
DISAGREE_HINT = ("masks and labels disagree; usual causes: an RGB mask converted with PIL's quantize() "
                 "(ids remapped), a classes.txt in another order than the masks, binary masks with "
                 "255 for objects")
IGNORE = 255


#: cv2 flags of every image read: 3-channel colour, pixels in stored order (no EXIF rotation).
READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


EXIF_ORIENTATION = 0x0112


#: File name suffix -> the image format it promises.
SUFFIX_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WebP"}


def read_text(path: Path) -> str:
    """A UTF-8 text file's contents (a leading byte-order mark dropped); not UTF-8 is a DataError."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 array (H, W, 3) in stored pixel order (an EXIF rotation tag is not applied, as
    VOC's masks were drawn on the stored pixels); a missing, truncated or undecodable file is a
    :class:`DataError`. The data's format counts, not the file's name (a PNG named .jpg reads)."""
    return _decode(path)[0]


def read_image_notes(path: Path) -> tuple[np.ndarray, dict]:
    """:func:`read_image` plus what is odd about the file but harmless, as a dict of the keys
    ``format`` (the data's format where the name promises another), ``trailing`` (bytes after
    the image data's end) and ``orientation`` (an EXIF Orientation tag other than 1)."""
    rgb, data, fmt, end = _decode(path)
    notes: dict = {}
    promised = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if promised and fmt != promised:
        notes["format"] = fmt or "unknown"
    if end < len(data):
        notes["trailing"] = len(data) - end
    orientation = exif_orientation(data)
    if orientation not in (None, 1):
        notes["orientation"] = orientation
    return rgb, notes


def _decode(path: Path) -> tuple[np.ndarray, bytes, str | None, int]:
    """(RGB pixels, the file's bytes, their format or None, where the image data ends)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    fmt = sniff_format(data)
    end = data_end(data, fmt)
    if end is None:
        raise DataError(f"{path}: truncated {fmt}: {_END_OF[fmt]}")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), READ_FLAGS) if data else None
    if img is None:
        what = f"{fmt} data that does not decode" if fmt else "neither JPEG, PNG nor WebP data"
        raise DataError(f"{path}: not a readable image ({what})")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), data, fmt, end


def sniff_format(data: bytes) -> str | None:
    """The image format of ``data`` from its first bytes: JPEG, PNG, WebP, BMP, TIFF, GIF or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:4] == b"GIF8":
        return "GIF"
    return None


#: What a truncated file of each checked format lacks (part of the error message).
_END_OF = {
    "JPEG": "the data ends before the end-of-image marker (FFD9)",
    "PNG": "the data ends before the IEND chunk",
    "WebP": "the file is shorter than its RIFF header says",
}


#: A JPEG marker: 0xFF then a code that is neither stuffing (00), a restart (D0-D7) nor fill (FF).
_JPEG_MARKER = re.compile(b"\xff[^\x00\xd0-\xd7\xff]")


def data_end(data: bytes, fmt: str | None) -> int | None:
    """Offset just past the image data of a JPEG, PNG or WebP file (``len(data)`` for other
    formats), or None where the file ends before its data does (truncated)."""
    if fmt == "JPEG":
        return _jpeg_end(data)
    if fmt == "PNG":
        return _png_end(data)
    if fmt == "WebP":
        end = int.from_bytes(data[4:8], "little") + 8
        return end if end <= len(data) else None
    return len(data)


def _jpeg_end(data: bytes) -> int | None:
    """Offset just past the EOI marker, found by walking the marker segments (skipped by their
    length, so an EXIF thumbnail's own FFD9 is never taken for the end) and the entropy-coded
    scans (in which 0xFF is always followed by 00 or a restart code); None if the data stops first."""
    pos = 2
    while True:
        marker = _JPEG_MARKER.search(data, pos)
        if marker is None:
            return None
        code, pos = data[marker.start() + 1], marker.end()
        if code == 0xD9:
            return pos
        if code in (0x01, 0xD8):            # TEM, SOI: no length
            continue
        if pos + 2 > len(data):
            return None
        pos += int.from_bytes(data[pos:pos + 2], "big")
        if pos > len(data):
            return None


def _png_end(data: bytes) -> int | None:
    """Offset just past the IEND chunk, walking the chunks by their lengths; None if cut short."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        pos += 12 + length                  # length, type, data, CRC
        if pos > len(data):
            return None
        if kind == b"IEND":
            return pos
    return None


def exif_orientation(data: bytes) -> int | None:
    """The EXIF Orientation tag of an image file's bytes (headers only, no decode), or None."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(EXIF_ORIENTATION)
    except Exception:                       # no or malformed EXIF: nothing to report
        return None
    return value if isinstance(value, int) else None


def read_mask(path) -> np.ndarray:
    """Class-index mask (H, W) uint8 from a palette or grey PNG (values 0..C or 255); ``path`` is a
    file or anything with ``read_bytes()`` (a pack member)."""
    try:
        data = path.read_bytes() if hasattr(path, "read_bytes") else Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            if im.mode not in ("P", "L"):
                raise DataError(f"{path}: mask must be a palette or greyscale PNG, got mode {im.mode}")
            return np.array(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found") from None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable PNG ({exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image in stored pixel order after a full decode (so corruption is caught)."""
    h, w = read_image(path).shape[:2]
    return h, w


@lru_cache(maxsize=1)
def voc_palette() -> np.ndarray:
    """The standard 256-entry VOC colour map (256, 3) uint8: the index's bits spread over R, G, B."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        pal[i] = rgb
    return pal


def palette_png(mask: np.ndarray) -> bytes:
    """A label map (H, W) uint8 as palette-PNG bytes with the VOC colours (255 = ignore)."""
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L")
    im.putpalette(voc_palette().ravel().tolist())
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def check_mask_values(mpath: Path, mask: np.ndarray, labels: Sequence[int], class_index: dict[str, int],
                      xml_name: str) -> list[int]:
    """The class ids (values other than 0 and 255) of a scored mask, sorted.

    Refused: a value outside 0..C and 255; a class id that is not among the image's ``labels``;
    no class id at all while 255 covers more than a boundary band would (a binary mask with 255
    for objects). Labels without pixels stay allowed (VOC paints some objects 255 whole).
    """
    counts = np.bincount(mask.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    bad = present[(present > len(class_index)) & (present != IGNORE)]
    if bad.size:
        raise DataError(f"{mpath}: mask holds values {bad.tolist()} outside 0..{len(class_index)} and 255")
    ids = [int(v) for v in present if v not in (0, IGNORE)]
    names = {k: n for n, k in class_index.items()}
    said = f"the image's labels ({xml_name}) are {list(labels)} ({_names(labels, names)})"
    if set(ids) - set(labels):
        raise DataError(f"{mpath}: mask holds class ids {ids} ({_names(ids, names)}) but {said}: {DISAGREE_HINT}")
    ignored = counts[IGNORE] / mask.size
    if not ids and ignored > MAX_IGNORE_SHARE_WITHOUT_CLASS:
        raise DataError(f"{mpath}: mask holds no class id but 255 (ignore) covers {ignored:.0%} of its pixels "
                        f"while {said}: {DISAGREE_HINT}")
    return ids


def _names(ids: Sequence[int], names: dict[int, str]) -> str:
    return ", ".join(names.get(k, "?") for k in ids)
