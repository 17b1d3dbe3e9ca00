"""Inter-pixel relations on a grid: IRN's boundary -> affinity, pair labels, loss, random walk.

All of it works on one grid (the relation net's stride-4 grid) and on the *pairs* of cells
``(p, p + d)`` for the displacements ``d`` of :func:`displacements`: the half of the disc of
radius ``r`` (``0 < |d| < r``) that points forward (``dy > 0``, or ``dy == 0`` and ``dx > 0``);
the other half is the same pairs seen from the other end.

- The affinity of a pair is ``1 - max`` of the boundary map over the cells of its *path*
  (IRN, Ahn et al. 2019, ``PathIndex``): every cell of the box spanned by the two cells whose
  centre lies closer than 1 to the line through them (:func:`path_cells`), both ends included.
  Two cells are related unless a class boundary separates them. Pairs that leave the grid get
  affinity 0.
- Training labels of a pair come from confident labels (0 = background, 1.. = classes,
  255 = unsure): both background, both the same class (positive pairs), or two different labels
  (negative pairs); a pair touching an unsure cell is not used. As IRN, pairs start only from
  the cells whose every forward pair stays on the grid (:func:`source_cells`: the bottom
  ``radius - 1`` rows and the left and right ``radius - 1`` columns are no source).
- The random walk spreads seed scores ``x`` (K, N) over the symmetric affinity (with self loops)
  raised to ``beta``: ``x <- x T`` with ``T = A D^-1`` (columns sum to 1), ``iterations`` times,
  which is IRN's ``x T^(2^8)`` done as 256 sparse products instead of 8 dense squarings.
"""
from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F

IGNORE = 255


@cache
def displacements(radius: int) -> tuple[tuple[int, int], ...]:
    """Forward displacements (dy, dx) with 0 < dy^2 + dx^2 < radius^2 (half of the disc)."""
    out = []
    for dy in range(radius):
        for dx in range(-radius + 1, radius):
            if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius:
                out.append((dy, dx))
    return tuple(out)


@cache
def path_cells(dy: int, dx: int) -> tuple[tuple[int, int], ...]:
    """IRN's path from (0, 0) to (dy, dx): the cells (y, x) of the box spanned by the two ends
    whose distance to the line through them is below 1, ``(dy x - dx y)^2 < dy^2 + dx^2``; both
    ends included, row by row. E.g. (1, -1): the whole 2x2 box; (2, 2): the box but its two
    far corners; (0, 3): the 4 cells of the row."""
    l2 = dy * dy + dx * dx
    return tuple((y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
                 if (dy * x - dx * y) ** 2 < l2)


def source_cells(h: int, w: int, radius: int, device=None) -> torch.Tensor:
    """IRN's training sources on an (h, w) grid: (h, w) bool, False in the bottom ``radius - 1``
    rows and the left and right ``radius - 1`` columns (where some forward pair would leave)."""
    band = radius - 1
    keep = torch.zeros(h, w, dtype=torch.bool, device=device)
    keep[: max(0, h - band), band: max(band, w - band)] = True
    return keep


def _shift(padded: torch.Tensor, oy: int, ox: int, r: int, h: int, w: int) -> torch.Tensor:
    """The (h, w) window of a map padded by r on every side, moved by (oy, ox)."""
    return padded[..., r + oy: r + oy + h, r + ox: r + ox + w]


def boundary_to_affinity(boundary: torch.Tensor, radius: int) -> torch.Tensor:
    """boundary (B, H, W) in [0, 1] -> affinity (B, D, H, W) for the D = len(displacements(radius))
    pairs from each cell; 1 - the largest boundary value on the line between the two cells."""
    h, w = boundary.shape[-2:]
    r = radius
    padded = F.pad(boundary, (r, r, r, r), value=1.0)   # leaving the grid crosses a boundary
    out = []
    for dy, dx in displacements(radius):
        path = torch.stack([_shift(padded, oy, ox, r, h, w) for oy, ox in path_cells(dy, dx)])
        out.append(1.0 - path.amax(dim=0))
    return torch.stack(out, dim=1)


def pair_labels(labels: torch.Tensor, radius: int) -> dict[str, torch.Tensor]:
    """labels (B, H, W) int (255 unsure) -> boolean masks (B, D, H, W) of the pairs that are
    ``bg_pos`` (both background), ``fg_pos`` (both the same class) and ``neg`` (labels differ);
    only pairs from IRN's :func:`source_cells`."""
    h, w = labels.shape[-2:]
    r = radius
    padded = F.pad(labels.long(), (r, r, r, r), value=IGNORE)
    a = labels.long()[:, None]
    b = torch.stack([_shift(padded, dy, dx, r, h, w) for dy, dx in displacements(radius)], dim=1)
    valid = (a != IGNORE) & (b != IGNORE) & source_cells(h, w, radius, labels.device)
    same = valid & (a == b)
    return {"bg_pos": same & (a == 0), "fg_pos": same & (a > 0), "neg": valid & (a != b)}


def relation_loss(affinity: torch.Tensor, pairs: dict[str, torch.Tensor], eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """IRN's affinity loss: -log a on positive pairs, -log (1 - a) on negative pairs, each kind
    averaged over its pairs; total = (bg_pos + fg_pos) / 4 + neg / 2. An absent kind adds 0."""
    def mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum() / mask.sum().clamp_min(1)

    terms = {
        "bg_pos": mean(-torch.log(affinity + eps), pairs["bg_pos"]),
        "fg_pos": mean(-torch.log(affinity + eps), pairs["fg_pos"]),
        "neg": mean(-torch.log(1.0 + eps - affinity), pairs["neg"]),
    }
    terms["total"] = (terms["bg_pos"] + terms["fg_pos"]) / 4 + terms["neg"] / 2
    return terms


def transition_matrix(affinity: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """affinity (D, H, W) of one image -> sparse (N, N), N = H * W, the transpose of
    ``T = A^beta D^-1``: row j holds the weights that average the neighbours of cell j (rows sum to 1).

    A is symmetric (each forward pair in both directions) with self loops of affinity 1.
    """
    h, w = affinity.shape[1:]
    dev = affinity.device
    ys, xs = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    src, dst, val = [], [], []
    for k, (dy, dx) in enumerate(displacements(radius)):
        ty, tx = ys + dy, xs + dx
        inside = (ty < h) & (tx >= 0) & (tx < w)
        a = affinity[k][inside].clamp(0, 1) ** beta
        i, j = (ys * w + xs)[inside], (ty * w + tx)[inside]
        src += [i, j]
        dst += [j, i]
        val += [a, a]
    n = h * w
    diag = torch.arange(n, device=dev)
    rows = torch.cat([*dst, diag])
    cols = torch.cat([*src, diag])
    vals = torch.cat([*val, torch.ones(n, device=dev, dtype=affinity.dtype)])
    degree = torch.zeros(n, device=dev, dtype=vals.dtype).index_add_(0, rows, vals)
    vals = vals / degree[rows]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()


def random_walk(scores: torch.Tensor, affinity: torch.Tensor, radius: int, beta: float,
                iterations: int) -> torch.Tensor:
    """scores (K, H, W) >= 0, affinity (D, H, W) -> scores after ``iterations`` steps of the walk
    (each step: every cell takes the ``A^beta``-weighted mean of itself and its neighbours)."""
    k, h, w = scores.shape
    m = transition_matrix(affinity.float(), radius, beta)
    x = scores.float().reshape(k, h * w).T.contiguous()   # (N, K)
    for _ in range(iterations):
        x = m @ x
    return x.T.reshape(k, h, w)
