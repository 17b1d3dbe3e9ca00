"""Background-aware seeds and prototypes (SIPE, as modified by SWTformer-V2, paper section 3-5).

Pure functions on batched tensors, in the order the model applies them:

1. :func:`with_background`: foreground CAMs (B, C, h, w) -> (B, C+1, h, w), channel 0 the
   background ``1 - max_c M_c`` (Eq. 3), absent classes zeroed.
2. :func:`token_affinity`: tokens (B, D, h, w) -> (B, N, N) cosine affinities, N = h*w, passed
   through ``abs`` (the paper's Eq. 4) or ``relu`` (SIPE).
3. :func:`structural_seeds`: each token takes the class whose map best matches the token's
   affinity row (an IoU of two soft masks), giving one-hot seeds (B, C+1, h, w).
4. :func:`class_prototypes`: the mean feature of each seed region (B, C+1, D);
   :func:`background_prototypes`: optionally several for the background (B, k, D), the centres of
   a spherical k-means over its seed region's features (a busy background is many things, and one
   mean feature matches none of them well).
5. :func:`reactivate`: ``ReLU(cos(F, P_k))`` (B, C+1, h, w), the R-CAM before max-normalising
   (with several background prototypes, the background channel is the largest of theirs).

Padding: an input padded to the model's tiling (inference) or a crop smaller than the crop
size (training) carries tokens that are not the image. Each step takes ``valid`` (B, 1, h, w)
in {0, 1} on its grid (``None``: every token is the image; :func:`valid_grid` makes it from a
pixel mask): padded tokens are no affinity neighbour, no part of a class map or of a
structural match, never a seed, never in a prototype, and their R-CAM is 0. Given the same
tokens, CAM and fused features on the image, the seeds and the R-CAM there are the same
whatever padding surrounds it (tested). What produces those features (Swin's windows, the
3x3 CAM head, the fusion's convolutions and upsampling) still sees the padding next to the
image, as SIPE's ResNet sees its training crops' padding; SIPE never pads at inference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def valid_grid(valid: torch.Tensor | None, grid: tuple[int, int]) -> torch.Tensor | None:
    """A pixel mask (B, 1, H, W) in {0, 1} -> (B, 1, h, w) on a grid that divides it: a cell is
    valid when any of its pixels is (a token that overlaps the image is the image's)."""
    if valid is None:
        return None
    if tuple(valid.shape[-2:]) == tuple(grid):
        return valid
    return F.adaptive_max_pool2d(valid.float(), grid)


def masked(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """x (B, K, h, w) with padded cells zeroed (``valid`` None: x itself)."""
    return x if valid is None else x * valid.to(x.dtype)


def resize_valid(x: torch.Tensor, valid: torch.Tensor | None, valid_out: torch.Tensor | None,
                 size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of x (B, K, h, w) to ``size`` from its valid cells only (normalised
    convolution: resize(x v) / resize(v)), 0 on the padded cells of ``valid_out``: near the
    padding, values come from the image as at an image border, never from the padding."""
    up = F.interpolate(masked(x, valid), size=size, mode="bilinear", align_corners=False)
    if valid is None:
        return up
    weight = F.interpolate(valid.to(x.dtype), size=size, mode="bilinear", align_corners=False)
    return masked(up / weight.clamp_min(1e-6), valid_out)


def with_background(cam: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """cam (B, C, h, w) in [0, 1], labels (B, C) multi-hot -> M (B, C+1, h, w).

    Absent classes are zeroed first, so the background is one minus the strongest *present*
    class (an absent class's activation is no evidence against background); channel 0 is kept
    for every image.
    """
    fg = cam * labels[:, :, None, None].to(cam.dtype)
    bg = 1.0 - fg.amax(dim=1, keepdim=True)
    return torch.cat([bg, fg], dim=1)


def token_affinity(tokens: torch.Tensor, mode: str = "abs", eps: float = 1e-5) -> torch.Tensor:
    """tokens (B, D, h, w) -> S (B, N, N), N = h*w: |cos| (``abs``, Eq. 4) or ReLU(cos) (``relu``)."""
    t = tokens.flatten(2)
    t = t / (t.norm(dim=1, keepdim=True) + eps)
    cos = t.transpose(1, 2) @ t
    if mode == "abs":
        return cos.abs()
    if mode == "relu":
        return F.relu(cos)
    raise ValueError(f"token_affinity: mode must be 'abs' or 'relu', got {mode!r}")


def structural_match(affinity: torch.Tensor, maps: torch.Tensor, bg_weight: float = 0.5,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """IoU of each token's affinity row with each class map: (B, N, N), (B, K, h, w) -> (B, K, h, w).

    ``inter = sum_j S_ij m_k(j)``, ``union = sum_j S_ij + sum_j m_k(j) - inter``; the background
    row (k = 0) is multiplied by ``bg_weight`` (SIPE: 0.5). With ``valid`` (B, 1, h, w), the sums
    run over valid tokens j only (padded rows of S and cells of the maps are zeroed).
    """
    b, k, h, w = maps.shape
    if valid is not None:
        v = valid.flatten(2).to(affinity.dtype)           # (B, 1, N)
        affinity = affinity * v * v.transpose(1, 2)
        maps = masked(maps, valid)
    m = maps.flatten(2)                                   # (B, K, N)
    inter = m @ affinity.transpose(1, 2)                  # (B, K, N): sum_j m_k(j) S_ij
    union = affinity.sum(dim=2)[:, None, :] + m.sum(dim=2, keepdim=True) - inter
    iou = inter / union.clamp_min(1e-5)
    weight = torch.ones(k, dtype=iou.dtype, device=iou.device)
    weight[0] = bg_weight
    return (iou * weight[None, :, None]).view(b, k, h, w)


def structural_seeds(tokens: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor, affinity: str = "abs",
                     bg_weight: float = 0.5, valid: torch.Tensor | None = None,
                     every_class: bool = False) -> torch.Tensor:
    """One-hot seeds R (B, C+1, h, w) from tokens (B, D, h, w) and the (C+1) map M on their grid.

    Each token takes the class of largest structural match; the result is masked by the image's
    labels (B, C) (the background channel always kept) and by ``valid`` (a padded token is no
    seed: all its channels 0). No gradient flows through seeds.

    ``every_class``: a present class left without any seed (the background's match won all its
    tokens) takes the background seed where its own match is highest, so that every class the
    labels name gets a prototype (without it, its R-CAM channel is 0 everywhere). Classes are
    served in order; a class finds no token only when no background seed is left.
    """
    with torch.no_grad():
        match = structural_match(token_affinity(tokens.float(), affinity), maps.float(), bg_weight, valid)
        seeds = F.one_hot(match.argmax(dim=1), maps.shape[1]).permute(0, 3, 1, 2).to(maps.dtype)
        keep = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1).to(maps.dtype)
        seeds = masked(seeds * keep[:, :, None, None], valid)
        if every_class:
            _seed_missing_classes(seeds, match, labels)
        return seeds


def _seed_missing_classes(seeds: torch.Tensor, match: torch.Tensor, labels: torch.Tensor) -> None:
    """In place: each present class with no seed takes the background seed of its best match."""
    flat, score = seeds.flatten(2), match.flatten(2)                 # views: (B, C+1, N)
    rows = torch.arange(seeds.shape[0], device=seeds.device)
    for c in range(1, seeds.shape[1]):
        free = flat[:, 0] > 0                                        # background seeds (image cells)
        need = (labels[:, c - 1] > 0) & (flat[:, c].sum(dim=1) == 0) & free.any(dim=1)
        if not need.any():
            continue
        best = score[:, c].masked_fill(~free, float("-inf")).argmax(dim=1)   # (B,)
        b, cell = rows[need], best[need]
        flat[b, 0, cell] = 0
        flat[b, c, cell] = 1


def class_prototypes(seeds: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Mean feature of each seed region: seeds (B, K, h, w) in {0, 1}, features (B, D, h, w) -> (B, K, D).

    A class with an empty region gets the zero vector (its reactivation is then 0 everywhere).
    """
    area = seeds.flatten(2).sum(dim=2, keepdim=True)                # (B, K, 1)
    total = seeds.flatten(2) @ features.flatten(2).transpose(1, 2)  # (B, K, D)
    return total / area.clamp_min(1.0)


def background_prototypes(region: torch.Tensor, features: torch.Tensor, k: int, iterations: int = 10,
                          eps: float = 1e-5) -> torch.Tensor:
    """``k`` prototypes of one seed region: region (B, 1, h, w) in {0, 1}, features (B, D, h, w) ->
    (B, k, D), the mean features of the clusters of a spherical k-means (cosine) over the region's
    cells.

    Deterministic: the first centre is the region's mean direction, each next one the region's
    cell least similar to the centres so far (farthest-point start), then ``iterations`` rounds of
    assign-to-nearest and re-centre. Clustering takes no gradient; the returned prototypes are the
    plain means of their clusters' features (as :func:`class_prototypes`), so gradients reach the
    features through them. A cluster left empty (a region of fewer than k distinct cells, or none)
    gives the zero vector, whose reactivation is 0 everywhere. ``k == 1`` is
    :func:`class_prototypes` of the region.
    """
    b = features.shape[0]
    x = features.flatten(2).transpose(1, 2)                     # (B, N, D)
    member = region.flatten(1).to(x.dtype)                      # (B, N)
    if k == 1:
        return class_prototypes(region, features)
    with torch.no_grad():
        xn = x / (x.norm(dim=2, keepdim=True) + eps)
        centres = [F.normalize((member[..., None] * xn).sum(dim=1), dim=1, eps=eps)]
        rows = torch.arange(b, device=x.device)
        for _ in range(k - 1):
            sim = (xn @ torch.stack(centres, dim=2)).amax(dim=2)   # (B, N): nearest centre so far
            sim = sim.masked_fill(member == 0, float("inf"))
            centres.append(xn[rows, sim.argmin(dim=1)])
        centres = torch.stack(centres, dim=1)                      # (B, k, D)
        for _ in range(iterations + 1):
            assign = F.one_hot((xn @ centres.transpose(1, 2)).argmax(dim=2), k).to(x.dtype) * member[..., None]
            counts = assign.sum(dim=1)[..., None]                  # (B, k, 1)
            centres = torch.where(counts > 0, F.normalize(assign.transpose(1, 2) @ xn, dim=2, eps=eps), centres)
    return (assign.transpose(1, 2) @ x) / counts.clamp_min(1.0)


def reactivate(prototypes: torch.Tensor, features: torch.Tensor, eps: float = 1e-5,
               valid: torch.Tensor | None = None) -> torch.Tensor:
    """R-CAM before normalising: ReLU(cos(F, P_k)); prototypes (B, K, D), features (B, D, h, w) ->
    (B, K, h, w), 0 on padded cells (``valid`` (B, 1, h, w))."""
    b, d, h, w = features.shape
    f = features.flatten(2)
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    p = prototypes / (prototypes.norm(dim=2, keepdim=True) + eps)
    return masked(F.relu(p @ f).view(b, -1, h, w), valid)
