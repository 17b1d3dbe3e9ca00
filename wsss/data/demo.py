"""A small synthetic weakly supervised segmentation data set in the PASCAL VOC 2012 layout.

:func:`generate_demo` writes, with no download and deterministically from a seed::

    root/JPEGImages/<id>.jpg               RGB JPEG, quality 90
    root/Annotations/<id>.xml              VOC XML, one <object> per visible object
    root/SegmentationClass/<id>.png        palette PNG (VOC colour map): 0 = background,
                                           k = class k (1..C), 255 = ignore band at boundaries
    root/ImageSets/Segmentation/{train_aug,train,val}.txt
    root/classes.txt                       foreground class names in index order

so the reader of real VOC (:mod:`wsss.data.voc`) reads it unchanged.

What makes it a fair, small test of WSSS:

* Classes are defined by SHAPE (:data:`DEMO_CLASSES`), not by colour alone: an object's hue
  comes from one of two 60-degree hue sectors, each sector shared by two classes, so colour
  narrows a class down to two candidates and only the shape tells them apart (as in real data,
  where colour correlates with class without defining it). Objects are saturated, backgrounds
  and clutter are muted: a from-scratch network finds objects within a CPU demo's budget.
* Backgrounds are cluttered (colour gradient, low-frequency noise, thin lines, short curves,
  small irregular blobs), and none of the clutter has a class shape.
* Objects vary in size, position, rotation, may be cut by the border (at most ~30 %) and may
  occlude one another; every object keeps at least 35 % of its area and 150 labelled pixels
  visible, so image-level labels (the classes of the visible objects) are always right.
* Masks are hard (``cv2.LINE_8``) and carry a VOC-like 255 band ~1 px each side of every label
  change; the image edges are softened slightly, the mask is not.

Variants (:data:`VARIANTS`, ``data.demo.variant``) change what makes WSSS hard, each a
:class:`DemoStyle`: the objects' size range, the background (``muted`` clutter as above, or
``busy``: a dead-leaves scene of overlapping irregular patches in saturated colours and
natural-looking textures, the statistics of natural images without any class shape), and the
objects' texture (``synthetic``: stripes, gradients, flat colour; or ``natural``: fractal,
marbled or cellular patterns tinted with the object's colour). ``standard`` is the demo as it
has always been (byte-identical files).

Image ``i`` is drawn from its own generator ``numpy.random.default_rng([seed, i])``, so it does not
depend on any other image and no global random state is used or changed.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import escape

import cv2
import numpy as np

from ..io import write_bytes
from .files import palette_png

DEMO_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "star", "cross", "ring")
"""Foreground class names; class ``k`` (1-based) is ``DEMO_CLASSES[k - 1]``, 0 is background."""

IGNORE = 255
ID_PREFIX = "demo_"

# Geometry and acceptance rules (see the module docstring).
_EXTENT_RANGE = (0.18, 0.65)   # object extent as a fraction of the short image side
_MAX_BORDER_CUT = 0.30         # at most this fraction of an object may lie outside the image
_MIN_VISIBLE_FRACTION = 0.35   # visible part of an object / its whole area
_MIN_VISIBLE_PIXELS = 150      # labelled (not ignore) visible pixels per object
_MAX_ATTEMPTS = 50             # layouts tried per image before the fallback
_MAX_PLACEMENTS = 20           # positions tried per object before centring it
_MIN_IMAGE_SIDE = 32           # below this even the fallback object could be too small
_JPEG_QUALITY = 90


# --------------------------------------------------------------------------------------------
# Shapes. Each draws value 1 into a uint8 ``canvas`` centred at ``centre`` (x, y) with extent
# ``d`` pixels (about its diameter) and rotation ``angle`` (radians), with hard LINE_8 edges.
# Every shape stays within 0.62 * d of its centre, whatever the rotation.
# --------------------------------------------------------------------------------------------
_SHIFT = 4                     # fixed-point bits for sub-pixel vertex positions in cv2
_SCALE = 1 << _SHIFT


def _fill_polygon(canvas: np.ndarray, centre: tuple[int, int], pts: np.ndarray, angle: float) -> None:
    """Rotate local polygon vertices ``pts`` (N, 2) by ``angle``, move them to ``centre``, fill."""
    c, s = math.cos(angle), math.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    rot += np.asarray(centre, dtype=np.float64)
    fixed = np.round(rot * _SCALE).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], 1, lineType=cv2.LINE_8, shift=_SHIFT)


def _regular_vertices(n: int, radius: np.ndarray | float, phase: float = -math.pi / 2) -> np.ndarray:
    """Vertices at ``n`` equal angles from ``phase`` with the given radius (scalar or per vertex)."""
    t = phase + np.arange(n) * (2 * math.pi / n)
    return np.stack([np.cos(t), np.sin(t)], axis=1) * np.asarray(radius, dtype=np.float64)[..., None]


def _circle(canvas: np.ndarray, centre: tuple[int, int], radius: float, value: int) -> None:
    cv2.circle(canvas, (centre[0] * _SCALE, centre[1] * _SCALE), int(round(radius * _SCALE)),
               value, thickness=-1, lineType=cv2.LINE_8, shift=_SHIFT)


def _draw_disc(canvas, centre, d, angle, rng) -> None:
    _circle(canvas, centre, d / 2, 1)


def _draw_ring(canvas, centre, d, angle, rng) -> None:
    # inner/outer radius ratio kept moderate so the ring stays thick enough to survive the band
    _circle(canvas, centre, d / 2, 1)
    _circle(canvas, centre, d / 2 * rng.uniform(0.40, 0.60), 0)


def _draw_square(canvas, centre, d, angle, rng) -> None:
    h = 0.8 * d / 2            # side 0.8 d: half-diagonal 0.57 d
    _fill_polygon(canvas, centre, np.array([[-h, -h], [h, -h], [h, h], [-h, h]]), angle)


def _draw_triangle(canvas, centre, d, angle, rng) -> None:
    _fill_polygon(canvas, centre, _regular_vertices(3, 0.6 * d), angle)


def _draw_star(canvas, centre, d, angle, rng) -> None:
    outer = 0.55 * d
    radii = np.tile([outer, outer * rng.uniform(0.40, 0.52)], 5)   # five points
    _fill_polygon(canvas, centre, _regular_vertices(10, radii), angle)


def _draw_cross(canvas, centre, d, angle, rng) -> None:
    a, w = d / 2, d * rng.uniform(0.15, 0.19)    # arm half-length and half-width
    pts = np.array([[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w],
                    [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w]])
    _fill_polygon(canvas, centre, pts, angle)


_ShapeFn = Callable[[np.ndarray, tuple, float, float, np.random.Generator], None]

#: class name -> (drawing function, rotation invariant?)
_SHAPES: dict[str, tuple[_ShapeFn, bool]] = {
    "disc": (_draw_disc, True),
    "square": (_draw_square, False),
    "triangle": (_draw_triangle, False),
    "star": (_draw_star, False),
    "cross": (_draw_cross, False),
    "ring": (_draw_ring, True),
}
assert tuple(_SHAPES) == DEMO_CLASSES
_SHAPE_REACH = 0.62            # max distance of any shape pixel from its centre, in units of d


# --------------------------------------------------------------------------------------------
# Layout: which objects go where, and whether the result is acceptable.
# --------------------------------------------------------------------------------------------
@dataclass
class _Object:
    """One placed object: its hard mask in a square patch and the patch's position."""

    cls: int                   # class index 1..C
    patch: np.ndarray          # uint8 (P, P), 1 inside the shape
    y0: int                    # image row of patch[0, 0] (may be negative)
    x0: int                    # image column of patch[0, 0]
    area: int                  # pixels of the whole shape, inside the image or not
    truncated: bool            # part of the shape lies outside the image

    def clip(self, h: int, w: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """(image slices, patch slices) of the part of the patch inside an (h, w) image."""
        ph, pw = self.patch.shape
        ya, yb = max(self.y0, 0), min(self.y0 + ph, h)
        xa, xb = max(self.x0, 0), min(self.x0 + pw, w)
        return ((slice(ya, yb), slice(xa, xb)),
                (slice(ya - self.y0, yb - self.y0), slice(xa - self.x0, xb - self.x0)))


def _shape_patch(cls: int, d: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    pad = int(math.ceil(_SHAPE_REACH * d)) + 3    # + margin for the soft edge of the image
    patch = np.zeros((2 * pad + 1, 2 * pad + 1), np.uint8)
    _SHAPES[DEMO_CLASSES[cls - 1]][0](patch, (pad, pad), d, angle, rng)
    return patch


def _sample_object(rng: np.random.Generator, h: int, w: int, extent: tuple[float, float]) -> _Object:
    """A random class, size (``extent`` of the short side), rotation and position, cut by the
    border by at most ~30 %."""
    cls = int(rng.integers(1, len(DEMO_CLASSES) + 1))
    d = rng.uniform(*extent) * min(h, w)
    invariant = _SHAPES[DEMO_CLASSES[cls - 1]][1]
    angle = 0.0 if invariant else rng.uniform(0.0, 2 * math.pi)
    patch = _shape_patch(cls, d, angle, rng)
    area = int(np.count_nonzero(patch))
    half = patch.shape[0] // 2
    obj = _Object(cls, patch, 0, 0, area, False)
    for _ in range(_MAX_PLACEMENTS):
        obj.y0 = int(rng.integers(0, h)) - half
        obj.x0 = int(rng.integers(0, w)) - half
        inside = int(np.count_nonzero(patch[obj.clip(h, w)[1]]))
        if inside >= (1.0 - _MAX_BORDER_CUT) * area:
            break
    else:                      # centred: a shape reaches 0.62 d, so up to d = 0.8 short sides it fits
        obj.y0, obj.x0 = h // 2 - half, w // 2 - half
        inside = int(np.count_nonzero(patch[obj.clip(h, w)[1]]))
    obj.truncated = inside < area
    return obj


def _ignore_band(label: np.ndarray) -> np.ndarray:
    """True where the label changes within the 3x3 neighbourhood (morphological gradient != 0).

    The image border is not a label change (cv2's default morphology border is neutral).
    """
    grad = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return grad != 0


def _compose(objects: list[_Object], h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint objects in order (later ones occlude earlier ones).

    Returns ``inst`` (0 = none, i + 1 = object i), the final VOC mask (with the 255 band) and
    a per-object "acceptable" flag.
    """
    inst = np.zeros((h, w), np.uint8)
    for i, obj in enumerate(objects):
        img_sl, patch_sl = obj.clip(h, w)
        inst[img_sl][obj.patch[patch_sl] > 0] = i + 1
    lut = np.array([0] + [o.cls for o in objects], np.uint8)
    label = lut[inst]
    band = _ignore_band(label)
    n = len(objects) + 1
    visible = np.bincount(inst.ravel(), minlength=n)[1:]
    labelled = np.bincount(inst[~band], minlength=n)[1:]
    areas = np.array([o.area for o in objects])
    ok = (visible >= _MIN_VISIBLE_FRACTION * areas) & (labelled >= _MIN_VISIBLE_PIXELS)
    label[band] = IGNORE
    return inst, label, ok


def _layout(rng: np.random.Generator, h: int, w: int, max_objects: int,
            extent: tuple[float, float] = _EXTENT_RANGE) -> list[_Object]:
    """Objects for one image such that every one stays visible enough (see module docstring).

    Whole layouts are resampled until one passes. On the last attempt the failing objects are
    dropped instead (removing objects rarely hurts the others, so this is repeated until all
    pass); if nothing is left, one centred disc is used. All of it is deterministic in ``rng``.
    """
    for attempt in range(_MAX_ATTEMPTS):
        n = int(rng.integers(1, max_objects + 1))
        objects = [_sample_object(rng, h, w, extent) for _ in range(n)]
        ok = _compose(objects, h, w)[2]
        if ok.all():
            return objects
    while objects:
        objects = [o for o, good in zip(objects, ok) if good]
        if not objects:
            break
        ok = _compose(objects, h, w)[2]
        if ok.all():
            return objects
    d = 0.6 * min(h, w)
    patch = _shape_patch(1, d, 0.0, rng)
    half = patch.shape[0] // 2
    return [_Object(1, patch, h // 2 - half, w // 2 - half, int(np.count_nonzero(patch)), False)]


# --------------------------------------------------------------------------------------------
# Appearance: background clutter, object colours and textures, noise. All float32 RGB 0..255.
# --------------------------------------------------------------------------------------------
def _ramp(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A linear 0..1 ramp over an (h, w) grid along a random direction."""
    t = rng.uniform(0, 2 * math.pi)
    proj = np.arange(w, dtype=np.float32)[None, :] * math.cos(t) + np.arange(h, dtype=np.float32)[:, None] * math.sin(t)
    lo, hi = float(proj.min()), float(proj.max())
    return (proj - lo) / max(hi - lo, 1e-6)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour gradient + low-frequency colour noise + thin lines, short curves, small blobs."""
    ca, cb = np.array(_muted(rng)), np.array(_muted(rng))
    t = _ramp(rng, h, w)[..., None]
    img = (ca * (1 - t) + cb * t).astype(np.float32)
    gh, gw = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    low = rng.standard_normal((gh, gw, 3), dtype=np.float32) * np.float32(rng.uniform(10, 30))
    img += cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)

    short = min(h, w)
    for _ in range(int(rng.integers(2, 7))):           # thin straight lines, possibly long
        p, q = rng.integers(0, [w, h], size=(2, 2))
        cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), _muted(rng),
                 int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 5))):           # short quadratic Bezier curves
        c0 = rng.uniform(0, [w, h])
        ctrl = c0 + rng.uniform(-0.15, 0.15, (3, 2)) * short
        s = np.linspace(0, 1, 16)[:, None]
        curve = (1 - s) ** 2 * ctrl[0] + 2 * s * (1 - s) * ctrl[1] + s ** 2 * ctrl[2]
        cv2.polylines(img, [np.round(curve).astype(np.int32)], False, _muted(rng),
                      int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 6))):           # small irregular blobs (<= ~6 % of side)
        c0 = rng.uniform(0, [w, h])
        radii = rng.uniform(0.02, 0.06) * short * rng.uniform(0.45, 1.0, 9)
        pts = _regular_vertices(9, radii, rng.uniform(0, 2 * math.pi)) + c0
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], _muted(rng), cv2.LINE_AA)
    return img.astype(np.float32)


def _muted(rng: np.random.Generator) -> tuple[float, float, float]:
    """A random colour pulled most of the way towards its own grey: backgrounds and clutter are
    dull, so objects stand out by colourfulness but not by any class-specific colour."""
    c = rng.uniform(0, 255, 3)
    c = c + rng.uniform(0.55, 0.85) * (c.mean() - c)
    return tuple(float(v) for v in c)


# Busy scenes and natural-looking textures (variants other than ``standard``).
def _fractal(rng: np.random.Generator, h: int, w: int, octaves: int = 5, decay: float | None = None) -> np.ndarray:
    """1/f-like noise in [0, 1], (h, w) float32: octaves of random grids, each twice as fine and
    ``decay`` (0.45-0.7) times as strong as the last, cubic-upsampled and summed."""
    decay = rng.uniform(0.45, 0.7) if decay is None else decay
    out = np.zeros((h, w), np.float32)
    cells, amp = int(rng.integers(2, 4)), 1.0
    for _ in range(octaves):
        grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        out += np.float32(amp) * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        cells, amp = cells * 2, amp * decay
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _pattern_natural(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A grey natural-looking pattern in [0, 1], (h, w): fractal noise (stone, foliage), marble
    (a sine warped by fractal noise: wood, marble) or cells (a cellular, leathery pattern)."""
    kind = int(rng.integers(3))
    if kind == 0:
        return _fractal(rng, h, w)
    if kind == 1:
        t = _ramp(rng, h, w) * np.float32(rng.uniform(2, 6) * 2 * math.pi)
        warp = _fractal(rng, h, w) * np.float32(rng.uniform(3, 9))
        return 0.5 + 0.5 * np.sin(t + warp)
    n = int(rng.integers(6, 30))                        # distance to the nearest of n random points
    pts = rng.uniform(0, [w, h], size=(n, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.min((xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2, axis=-1) ** 0.5
    return np.clip(d / max(float(d.max()), 1e-6), 0, 1) ** 0.7


def _tinted(rng: np.random.Generator, pattern: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(h, w) pattern in [0, 1] -> (h, w, 3) float32: dark to light shades of ``colour``."""
    dark = colour * np.float32(rng.uniform(0.15, 0.45))
    light = colour + np.float32(rng.uniform(0.0, 0.35)) * (255 - colour)
    return dark + (light - dark) * pattern[..., None]


def _vivid(rng: np.random.Generator) -> np.ndarray:
    """A colour of any hue, from muted to as saturated as the objects' (RGB float32)."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(40, 255), rng.uniform(70, 255)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _blob(rng: np.random.Generator, h: int, w: int, radius: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """One irregular patch: a polygon of 9-15 vertices whose radius wanders between 30 % and
    100 % of ``radius`` around it, squashed and turned (no class shape: neither round nor
    regular nor pointed). Returns its uint8 mask over its box in an (h, w) image, and the box."""
    n = int(rng.integers(9, 16))
    knots = rng.uniform(0.3, 1.0, int(rng.integers(3, 7)))
    radii = np.interp(np.linspace(0, len(knots), n, endpoint=False), np.arange(len(knots) + 1),
                      np.append(knots, knots[0])) * radius
    pts = _regular_vertices(n, radii, rng.uniform(0, 2 * math.pi)) * [1.0, rng.uniform(0.35, 1.0)]
    t = rng.uniform(0, math.pi)
    pts = pts @ np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) + rng.uniform(0, [w, h])
    x0, y0 = (max(0, int(v)) for v in np.floor(pts.min(axis=0)))
    x1, y1 = min(w, int(np.ceil(pts[:, 0].max())) + 1), min(h, int(np.ceil(pts[:, 1].max())) + 1)
    box = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
    mask = np.zeros((box[0].stop - y0, box[1].stop - x0), np.uint8)
    if mask.size:
        cv2.fillPoly(mask, [np.round((pts - [x0, y0]) * _SCALE).astype(np.int32)], 1, cv2.LINE_8, shift=_SHIFT)
    return mask, box


def _background_busy(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A dead-leaves scene: 20-60 irregular patches, larger ones first and smaller ones over
    them (radii from 4 % to 60 % of the short side, small ones far more often, as in natural
    images), each filled with a tinted natural pattern or a shaded colour from a palette of
    3-6 colours, muted to saturated, over a tinted fractal ground; then strokes, a light blur
    and sensor noise."""
    short = min(h, w)
    palette = [_vivid(rng) for _ in range(int(rng.integers(3, 7)))]
    img = _tinted(rng, _fractal(rng, h, w), palette[0])
    radii = np.sort(short * 0.04 * (1 - rng.uniform(0, 0.93, int(rng.integers(20, 61)))) ** -1.0)[::-1]
    for r in np.minimum(radii, 0.6 * short):
        mask, box = _blob(rng, h, w, float(r))
        bh, bw = mask.shape
        colour = np.clip(palette[int(rng.integers(len(palette)))] + rng.normal(0, 18, 3), 0, 255).astype(np.float32)
        if bh < 2 or bw < 2:
            continue
        if rng.uniform() < 0.6:
            fill = _tinted(rng, _pattern_natural(rng, bh, bw), colour)
        else:
            fill = colour + np.float32(rng.uniform(20, 60)) * (_ramp(rng, bh, bw)[..., None] - 0.5)
        region = img[box]
        region[mask > 0] = fill[mask > 0]
    for _ in range(int(rng.integers(0, 6))):             # twigs, cracks, wires
        p, q = rng.integers(0, [w, h], size=(2, 2))
        colour = tuple(float(v) for v in palette[int(rng.integers(len(palette)))] * rng.uniform(0.3, 1.2))
        cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), colour, int(rng.integers(1, 3)), cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0))
    return np.clip(img, 0, 255).astype(np.float32)


def _texture_natural(rng, h, w, c1, c2) -> np.ndarray:
    """A natural-looking pattern, its shades between grey and the object's colour (a 50-90 %
    tint), with pixel noise."""
    pattern = _pattern_natural(rng, h, w)
    grey = np.full(3, float(c1.mean()), np.float32)
    tint = np.float32(rng.uniform(0.5, 0.9))
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(3, 10))
    return _tinted(rng, pattern, grey + tint * (c1 - grey)) + noise


#: hue sectors (60 degrees each); class k draws from sector k-1 or k (mod 6), so every sector is
#: shared by two classes: colour narrows the class down to two candidates, shape decides.
_HUE_SECTORS = 6


def _object_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """A saturated colour for class ``cls`` (1..C) from one of its two shared hue sectors."""
    sector = (cls - 1 + int(rng.integers(2))) % _HUE_SECTORS
    hue = (sector + rng.uniform()) * 180.0 / _HUE_SECTORS          # OpenCV hue: 0..180
    hsv = np.array([[[hue, rng.uniform(150, 255), rng.uniform(120, 255)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture_stripes(rng, h, w, c1, c2) -> np.ndarray:
    """Two-colour stripes at a random angle, period and sharpness."""
    t = rng.uniform(0, math.pi)
    proj = np.arange(w, dtype=np.float32)[None, :] * math.cos(t) + np.arange(h, dtype=np.float32)[:, None] * math.sin(t)
    wave = np.sin(proj * np.float32(2 * math.pi / rng.uniform(4, 16)) + np.float32(rng.uniform(0, 2 * math.pi)))
    s = np.clip(0.5 + 0.5 * wave * np.float32(rng.uniform(1, 5)), 0, 1)[..., None]
    return c1 * s + c2 * (1 - s)


def _texture_gradient(rng, h, w, c1, c2) -> np.ndarray:
    """A linear two-colour gradient with pixel noise."""
    t = _ramp(rng, h, w)[..., None]
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(4, 12))
    return c1 * (1 - t) + c2 * t + noise


def _texture_flat(rng, h, w, c1, c2) -> np.ndarray:
    """A flat colour with pixel noise."""
    return c1 + rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(4, 16))


_TEXTURES = {"synthetic": (_texture_stripes, _texture_gradient, _texture_flat), "natural": (_texture_natural,)}
_BACKGROUNDS = {"muted": _background, "busy": _background_busy}


@dataclass(frozen=True)
class DemoStyle:
    """What a demo variant changes: object ``extent`` (low, high) as fractions of the image's
    short side, the ``background`` kind (``muted`` | ``busy``) and the objects' ``texture``
    (``synthetic`` | ``natural``). See the module docstring."""

    extent: tuple[float, float] = _EXTENT_RANGE
    background: str = "muted"
    texture: str = "synthetic"

    def __post_init__(self):
        lo, hi = self.extent
        if not 0.05 <= lo <= hi <= 0.8:
            raise ValueError(f"extent must satisfy 0.05 <= low <= high <= 0.8, got {list(self.extent)}")
        if self.background not in _BACKGROUNDS:
            raise ValueError(f"background must be one of {', '.join(_BACKGROUNDS)}, got {self.background!r}")
        if self.texture not in _TEXTURES:
            raise ValueError(f"texture must be one of {', '.join(_TEXTURES)}, got {self.texture!r}")


#: The named variants (``data.demo.variant``): one set of defaults must hold on all of them.
VARIANTS: dict[str, DemoStyle] = {
    "standard": DemoStyle(),                                          # the demo as it always was
    "large": DemoStyle(extent=(0.40, 0.80)),                          # objects fill most of the image
    "busy": DemoStyle(background="busy"),                             # cluttered, colourful scenes
    "natural": DemoStyle(extent=(0.30, 0.75), background="busy", texture="natural"),   # all of it
}


def demo_style(variant: str = "standard", extent=None, background: str | None = None,
               texture: str | None = None) -> DemoStyle:
    """The style of ``variant`` with any of its three properties overridden (None: the variant's)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    base = VARIANTS[variant]
    return DemoStyle(extent=tuple(extent) if extent is not None else base.extent,
                     background=background or base.background, texture=texture or base.texture)


def _paint_object(rng: np.random.Generator, img: np.ndarray, obj: _Object, texture: str = "synthetic") -> None:
    """Blend a textured object into ``img`` in place, with a slightly soft edge."""
    h, w = img.shape[:2]
    img_sl, patch_sl = obj.clip(h, w)
    region = img[img_sl]
    c1 = _object_colour(rng, obj.cls)
    c2 = np.clip(c1 + rng.normal(0, 30, 3), 0, 255).astype(np.float32)
    kinds = _TEXTURES[texture]
    tex = kinds[int(rng.integers(len(kinds)))](rng, region.shape[0], region.shape[1], c1, c2)
    # soft alpha from the hard mask: the image edge is anti-aliased, the label mask stays hard
    alpha = cv2.GaussianBlur(obj.patch.astype(np.float32), (0, 0), rng.uniform(0.5, 0.9))[patch_sl][..., None]
    region += alpha * (tex - region)   # region is a view of img


def _render(rng: np.random.Generator, h: int, w: int, max_objects: int, style: DemoStyle = DemoStyle()):
    """Render one sample: RGB uint8 image, VOC mask, instance map and its objects."""
    objects = _layout(rng, h, w, max_objects, style.extent)
    inst, label, _ = _compose(objects, h, w)
    img = _BACKGROUNDS[style.background](rng, h, w)
    for obj in objects:
        _paint_object(rng, img, obj, style.texture)
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(2, 6))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), label, inst, objects


def _render_sample(seed: int, index: int, min_size: int, max_size: int, max_objects: int = 3,
                   style: DemoStyle = DemoStyle()):
    """Image ``index`` of the set with ``seed``: (image RGB uint8, mask uint8, inst uint8, objects).

    ``inst`` is 0 for background and ``i + 1`` where object ``i`` (in painting order) is visible.
    """
    rng = np.random.default_rng([seed, index])
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    return _render(rng, h, w, max_objects, style)


# --------------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------------
def _jpeg_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _xml_bytes(image_id: str, h: int, w: int, inst: np.ndarray, objects: list[_Object]) -> bytes:
    """VOC annotation: one <object> per visible object, bbox of its visible pixels (1-based)."""
    lines = [
        "<annotation>",
        "\t<folder>VOC2012</folder>",
        f"\t<filename>{escape(image_id)}.jpg</filename>",
        "\t<source><database>WSSS synthetic shapes demo</database></source>",
        f"\t<size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
        "\t<segmented>1</segmented>",
    ]
    for i, obj in enumerate(objects):
        ys, xs = np.nonzero(inst == i + 1)
        if ys.size == 0:        # cannot happen for accepted layouts; never label the invisible
            continue
        lines += [
            "\t<object>",
            f"\t\t<name>{DEMO_CLASSES[obj.cls - 1]}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            "\t\t<difficult>0</difficult>",
            f"\t\t<bndbox><xmin>{xs.min() + 1}</xmin><ymin>{ys.min() + 1}</ymin>"
            f"<xmax>{xs.max() + 1}</xmax><ymax>{ys.max() + 1}</ymax></bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _check_args(seed, n_train_aug, n_train, n_val, min_size, max_size, max_objects) -> None:
    ints = dict(seed=seed, n_train_aug=n_train_aug, n_train=n_train, n_val=n_val,
                min_size=min_size, max_size=max_size, max_objects=max_objects)
    for name, v in ints.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if n_train_aug < 1 or not 0 <= n_train <= n_train_aug or n_val < 0:
        raise ValueError(f"need n_train_aug >= 1, 0 <= n_train <= n_train_aug, n_val >= 0; "
                         f"got {n_train_aug}, {n_train}, {n_val}")
    if not _MIN_IMAGE_SIDE <= min_size <= max_size:
        raise ValueError(f"need {_MIN_IMAGE_SIDE} <= min_size <= max_size, got {min_size}, {max_size}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")


def _write_sample(i: int, *, root: Path, ids: list[str], seed: int, min_size: int, max_size: int,
                  max_objects: int, style: DemoStyle) -> list[int]:
    """Render image ``i`` and write its JPEG, mask and XML; return the classes its mask holds."""
    img, mask, inst, objects = _render_sample(seed, i, min_size, max_size, max_objects, style)
    h, w = mask.shape
    write_bytes(root / "JPEGImages" / f"{ids[i]}.jpg", _jpeg_bytes(img))
    write_bytes(root / "SegmentationClass" / f"{ids[i]}.png", palette_png(mask))
    write_bytes(root / "Annotations" / f"{ids[i]}.xml", _xml_bytes(ids[i], h, w, inst, objects))
    return [int(k) for k in np.unique(mask) if 0 < k <= len(DEMO_CLASSES)]


def generate_demo(root, *, seed: int, n_train_aug: int, n_train: int, n_val: int,
                  min_size: int, max_size: int, max_objects: int = 3, style: DemoStyle = DemoStyle(),
                  progress: bool = False, workers: int = 1) -> dict:
    """Write the demo VOC2012 folder at `root` (a pathlib.Path or str; created; must be empty or absent).
    Returns a small summary dict: {"num_images": int, "splits": {name: count}, "class_counts": {name: count}}.

    Ids are ``demo_000000`` ... in generation order: the first ``n_train_aug`` form ``train_aug``
    (of which the first ``n_train`` are ``train``), the next ``n_val`` form ``val``. Each image's
    width and height are drawn uniformly from ``[min_size, max_size]`` and it holds
    ``1..max_objects`` objects, drawn in ``style`` (a :class:`DemoStyle`, e.g. ``VARIANTS["busy"]``). ``class_counts`` counts the images in which each class appears
    (image-level labels, over all splits). The same arguments give byte-identical files, on any
    number of ``workers`` (processes).
    """
    _check_args(seed, n_train_aug, n_train, n_val, min_size, max_size, max_objects)
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root}: must be an empty folder or absent")
    dirs = {name: root / name for name in ("JPEGImages", "Annotations", "SegmentationClass")}
    sets = root / "ImageSets" / "Segmentation"
    for d in (*dirs.values(), sets):
        d.mkdir(parents=True, exist_ok=True)

    total = n_train_aug + n_val
    ids = [f"{ID_PREFIX}{i:06d}" for i in range(total)]
    class_counts = dict.fromkeys(DEMO_CLASSES, 0)
    write = partial(_write_sample, root=root, ids=ids, seed=seed, min_size=min_size, max_size=max_size,
                    max_objects=max_objects, style=style)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="demo data", unit="img")
    # every image comes from its own generator: the files are the same on any number of workers
    pool = ProcessPoolExecutor(workers) if workers > 1 and total > 64 else None
    try:
        present = pool.map(write, range(total), chunksize=16) if pool else map(write, range(total))
        for classes in present:
            for k in classes:
                class_counts[DEMO_CLASSES[k - 1]] += 1
            if bar is not None:
                bar.update()
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()

    splits = {"train_aug": ids[:n_train_aug], "train": ids[:n_train], "val": ids[n_train_aug:]}
    for name, members in splits.items():
        write_bytes(sets / f"{name}.txt", "".join(f"{x}\n" for x in members).encode())
    write_bytes(root / "classes.txt", "".join(f"{c}\n" for c in DEMO_CLASSES).encode())
    return {"num_images": total, "splits": {k: len(v) for k, v in splits.items()},
            "class_counts": class_counts}
