"""What tells a user a training run went wrong: seed and map statistics per step, and a watch
that warns when V2's background seeds vanish (the "everything is foreground" collapse).

:func:`batch_health` reduces one batch's model output to a few shares and means (no gradient):

- ``cam_fg``: the share of the image the CAM calls foreground, softly: the mean over image
  tokens of the strongest present class's max-normed CAM (``1 - M_bg``). A flat CAM that covers
  the whole image gives ~1; objects that fill a third of the image, about a third.
- V2 only, from its one-hot seeds (token grid in training; the fused grid under a fused ``Seeding``; the CAM is
  resized to their grid) and R-CAM (fused-feature grid):
  ``seed_bg`` the share of image tokens seeded background; ``rcam_bg`` the share of image cells
  where the R-CAM's argmax over background + present classes is the background;
  ``cam_in_seed`` / ``cam_off_seed`` the mean max-normed CAM of a present class over the tokens
  seeded with it (where the model says it is present) and over the rest (where it says it is
  absent); ``proto_bg`` / ``proto_fg`` the norms of the background / present-class prototypes
  (0 when a class has no seed; ``F_hie``'s features have norm 2, so 2 means a region of
  identical features).

A healthy V2 run keeps ``seed_bg`` and ``rcam_bg`` near the background's share of the images
and ``cam_in_seed`` well above ``cam_off_seed``. It can fail two ways, each self-reinforcing
through GSC (README, "Demo variants"): the background seeds vanish (both shares ~0, the
background prototype 0, the CAM as high off the seeds as on them), or the present classes'
seeds do (both shares ~1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .models.seeds import valid_grid
from .models.swtformer import max_norm

#: the statistics :func:`batch_health` reports, V1's first
V1_KEYS = ("cam_fg",)
V2_KEYS = ("cam_fg", "seed_bg", "rcam_bg", "cam_in_seed", "cam_off_seed", "proto_bg", "proto_fg")


def _share(mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (mask * valid).sum() / valid.sum().clamp_min(1.0)


@torch.no_grad()
def batch_health(out: dict[str, torch.Tensor], labels: torch.Tensor,
                 valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One batch's statistics (0-d tensors, see the module docstring) from a model output, the
    labels (B, C) and the pixel mask ``valid`` (B, 1, H, W) of the image in the crop (or None).
    An output without class maps (``cam_raw``) has none."""
    if "cam_raw" not in out:          # a model with no class maps (a plain classifier)
        return {}
    present = labels.float()[:, :, None, None]                       # (B, C, 1, 1)
    cam = max_norm(torch.relu(out["cam_raw"].float()))                # (B, C, h, w)
    grid = cam.shape[-2:]
    v_tok = valid_grid(valid, grid)
    v_tok = torch.ones_like(cam[:, :1]) if v_tok is None else v_tok.float()
    stats = {"cam_fg": _share((cam * present).amax(dim=1, keepdim=True), v_tok)}
    if "seeds" not in out:
        return stats
    seeds = out["seeds"].float()                         # (B, C+1, h', w') one-hot, token or fused grid
    if seeds.shape[-2:] != grid:                          # seeds located on the fused grid: the CAM there
        cam = F.interpolate(cam, size=seeds.shape[-2:], mode="bilinear", align_corners=False)
        v_tok = valid_grid(valid, seeds.shape[-2:])
        v_tok = torch.ones_like(cam[:, :1]) if v_tok is None else v_tok.float()
    stats["seed_bg"] = _share(seeds[:, :1], v_tok)
    rcam = max_norm(out["rcam_raw"].float())                          # (B, C+1, h2, w2)
    keep = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)
    rcam = torch.where(keep > 0, rcam, torch.full_like(rcam, -1.0))   # argmax over bg + present
    v_hie = out.get("valid")
    v_hie = torch.ones_like(rcam[:, :1]) if v_hie is None else v_hie.float()
    stats["rcam_bg"] = _share((rcam.argmax(dim=1, keepdim=True) == 0).float(), v_hie)
    fg_seeds = seeds[:, 1:] * v_tok                                    # (B, C, h, w)
    off = (1 - seeds[:, 1:]) * v_tok * present
    stats["cam_in_seed"] = (cam * fg_seeds).sum() / fg_seeds.sum().clamp_min(1.0)
    stats["cam_off_seed"] = (cam * off).sum() / off.sum().clamp_min(1.0)
    norms = out["prototypes"].float().norm(dim=2)                     # (B, C+1)
    stats["proto_bg"] = norms[:, 0].mean()
    stats["proto_fg"] = (norms[:, 1:] * labels.float()).sum() / labels.float().sum().clamp_min(1.0)
    return stats


@dataclass
class CollapseWatch:
    """Watches the per-epoch mean background seed share of a V2 run. An epoch is collapsed when
    the share is below ``floor`` (the background seeds vanished: "everything is foreground") or
    above ``1 - floor`` (the present classes' seeds vanished: "everything is background"; on the
    demo, V2 runs fail this way). ``update`` returns a warning for the first epoch of each run
    of collapsed epochs (else None); ``report`` is what ``metrics/`` records, and what
    :meth:`restore` rebuilds the watch from when a run resumes."""

    floor: float
    shares: list[float] = field(default_factory=list)       # epoch e's mean seed_bg at index e - 1

    def kind(self, share: float) -> str | None:
        """``background`` or ``foreground`` (which seeds vanished), or None for a healthy share."""
        if share < self.floor:
            return "background"
        if share > 1 - self.floor:
            return "foreground"
        return None

    @property
    def collapsed_epochs(self) -> list[int]:
        return [e for e, s in enumerate(self.shares, start=1) if self.kind(s)]

    def update(self, epoch: int, seed_bg: float) -> str | None:
        if epoch != len(self.shares) + 1:
            raise ValueError(f"CollapseWatch: epoch {epoch} after {len(self.shares)} epochs")
        self.shares.append(float(seed_bg))
        kind = self.kind(seed_bg)
        if kind is None or (epoch > 1 and self.kind(self.shares[-2]) == kind):
            return None
        if kind == "background":
            what = (f"only {100 * seed_bg:.2f} % of the image tokens were seeded background. The CAMs "
                    f"call everything foreground, the background prototype is empty and the R-CAM's "
                    f"background channel is ~0")
        else:
            what = (f"{100 * seed_bg:.2f} % of the image tokens were seeded background, leaving the "
                    f"present classes almost no seeds: their prototypes come from a few tokens and "
                    f"the R-CAM calls nearly everything background")
        return (f"WARNING: V2's {kind} seeds have vanished in epoch {epoch}: {what}. This run's seeds "
                f"will be poor (train.collapse_floor = {self.floor:g}; README, 'When something goes wrong').")

    def report(self) -> dict:
        epochs = self.collapsed_epochs
        return {"collapsed": bool(epochs), "collapsed_epochs": epochs,
                "kinds": sorted({self.kind(self.shares[e - 1]) for e in epochs}), "floor": self.floor,
                "min_epoch_seed_bg": min(self.shares) if self.shares else None,
                "max_epoch_seed_bg": max(self.shares) if self.shares else None,
                "epoch_seed_bg": list(self.shares)}

    @classmethod
    def restore(cls, floor: float, report: dict | None) -> "CollapseWatch":
        return cls(floor, list((report or {}).get("epoch_seed_bg", [])))
