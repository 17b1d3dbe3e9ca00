"""Swin backbones from timm, their weights, and a window layout that is the same at every size.

timm fixes each stage's window and shift when the model is built. Built at the training crop
(224), Swin-T's stages see 56/28/14/7 token grids with 7x7 windows: stages 1-3 are windowed and
shifted, stage 4 (7x7) is one window with no shift, i.e. global attention. Run on a larger
image, timm keeps 7x7 windows everywhere, so stage 4 silently becomes several unshifted local
windows: not what training saw. :func:`match_training_layout` keeps the training layout at any
input size: every stage that was windowed in training keeps its window and shift (inputs are
padded to :func:`pad_multiple` so windows tile the grid exactly, as in training), and every stage
that was global in training stays global, its relative position bias extended to the larger
window by clamping offsets to the trained range (offsets seen in training keep their exact bias).
At the training size this is the identity.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import timm
import torch
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

from ..io import ArtifactError, load_weights

#: Small Swin configurations for CPU runs, by name (timm's own names pass through unchanged).
#: ``swin_demo`` is the CPU demo's: built for 128 px crops, its 4x4 windows tile the 32/16/8 token
#: grids of stages 1-3 exactly and stage 4 (4x4) is one global window, the layout Swin-T has at 224.
SMALL_CONFIGS = {
    "swin_demo": dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4),
    "swin_nano": dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
    "swin_micro": dict(embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16)),
}
SMALL_BASE = "swin_tiny_patch4_window7_224"


class BackboneError(ValueError):
    """Unknown backbone name or weights that do not fit it."""


def create_backbone(name: str, img_size: int, drop_path_rate: float) -> SwinTransformer:
    """A headless timm Swin built at the training crop, accepting any input size.

    Output of ``forward_intermediates``: stage maps (B, C_s, H/4/2^s, W/4/2^s), s = 0..3.
    """
    kwargs = dict(pretrained=False, num_classes=0, global_pool="", img_size=img_size,
                  drop_path_rate=drop_path_rate, dynamic_img_size=True)
    if name in SMALL_CONFIGS:
        model = timm.create_model(SMALL_BASE, **kwargs, **SMALL_CONFIGS[name])
    else:
        if not timm.is_model(name):
            raise BackboneError(f"model.backbone: unknown model '{name}' (a timm Swin name or one of "
                                f"{', '.join(SMALL_CONFIGS)})")
        try:
            model = timm.create_model(name, **kwargs)
        except (RuntimeError, TypeError) as exc:
            raise BackboneError(f"model.backbone: '{name}' cannot be built as a Swin backbone ({exc})") from None
    if not isinstance(model, SwinTransformer):
        raise BackboneError(f"model.backbone: '{name}' is not a Swin Transformer")
    _record_training_layout(model)
    return model


def load_pretrained(model: SwinTransformer, name: str, pretrained: str) -> dict:
    """Fill ``model`` with ImageNet weights: ``none``, ``timm`` (hub download) or a local file.

    A local file may be in timm's format or Microsoft's original Swin format (``{'model': ...}``,
    downsampling at the end of each stage); safetensors or a ``weights_only`` torch file.
    Returns ``{"loaded": n, "missing": [...], "unexpected": [...]}``.
    """
    if pretrained == "none":
        return {"loaded": 0, "missing": [], "unexpected": []}
    if pretrained == "timm":
        if name in SMALL_CONFIGS:
            raise BackboneError(f"model.pretrained: timm has no weights for the demo backbone '{name}'")
        src = timm.create_model(name, pretrained=True, num_classes=0, global_pool="")
        state = src.state_dict()
    else:
        path = Path(pretrained)
        if not path.exists():
            raise BackboneError(f"model.pretrained: checkpoint '{path}' not found")
        try:
            state = load_weights(path)
        except ArtifactError as exc:
            raise BackboneError(f"model.pretrained: {exc}") from None
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
    try:
        state = checkpoint_filter_fn(state, model)
    except (AttributeError, KeyError, RuntimeError) as exc:
        raise BackboneError(f"model.pretrained: '{pretrained}' does not fit backbone '{name}' ({exc})") from None
    state = {k: v for k, v in state.items() if not k.startswith("head")}
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise BackboneError(f"model.pretrained: {len(wrong)} tensors do not fit '{name}', e.g. {wrong[0]}: "
                            f"{tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if "relative_position_index" not in k and "attn_mask" not in k]
    loaded = len(state) - len(result.unexpected_keys)
    if loaded == 0:
        raise BackboneError(f"model.pretrained: no tensor of '{pretrained}' matches backbone '{name}'")
    return {"loaded": loaded, "missing": missing, "unexpected": list(result.unexpected_keys)}


# --------------------------------------------------------------------------------------------
# window layout
# --------------------------------------------------------------------------------------------

def _blocks(model: SwinTransformer):
    for s, stage in enumerate(model.layers):
        for block in stage.blocks:
            yield s, block


def _record_training_layout(model: SwinTransformer) -> None:
    """Remember, per stage, whether training sees it windowed (window, shift) or global."""
    model.wsss_layout = []  # one (trained_window, shift, is_global) per stage
    for stage in model.layers:
        b0 = stage.blocks[0]
        res = tuple(b0.input_resolution)
        win = tuple(b0.window_size)
        is_global = all(r <= w for r, w in zip(res, win))
        shifts = [tuple(b.shift_size) for b in stage.blocks]
        model.wsss_layout.append({"window": win, "shifts": shifts, "global": is_global,
                                  "table": tuple(b0.attn.window_size)})


def stage_strides(model: SwinTransformer) -> list[int]:
    patch = model.patch_embed.patch_size[0]
    return [patch * 2 ** s for s in range(len(model.layers))]


def pad_multiple(model: SwinTransformer) -> int:
    """Inputs padded to this multiple tile every windowed stage exactly, as in training.

    Global stages need no tiling: where the last stage's grid comes out odd-sized, timm's patch
    merging pads its input by one zero token row/column, as it would at any size.
    """
    m = model.patch_embed.patch_size[0]
    for stride, layout in zip(stage_strides(model), model.wsss_layout):
        if not layout["global"]:
            w = layout["window"]
            m = math.lcm(m, stride * w[0], stride * w[1])
    return m


def clamped_position_index(win: Sequence[int], table: Sequence[int], device=None) -> torch.Tensor:
    """Relative position index (N, N) for a ``win`` window into a bias table trained for ``table``.

    Offsets beyond the trained range (|dy| > table_h - 1) are clamped to its edge; offsets within
    it index exactly the entries training learnt. With ``win == table`` this is timm's index.
    """
    wh, ww = win
    th, tw = table
    ys, xs = torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = (ys[:, None] - ys[None, :]).clamp(-(th - 1), th - 1) + th - 1
    dx = (xs[:, None] - xs[None, :]).clamp(-(tw - 1), tw - 1) + tw - 1
    return dy * (2 * tw - 1) + dx


def match_training_layout(model: SwinTransformer, height: int, width: int) -> None:
    """Set every stage's attention layout for an input of ``height`` x ``width`` pixels so it
    matches training (see module doc). Windowed stages need the input padded to
    :func:`pad_multiple`; global stages become one window over the whole token grid."""
    strides = stage_strides(model)
    for s, block in _blocks(model):
        layout = model.wsss_layout[s]
        if not layout["global"]:
            continue
        grid = (math.ceil(height / strides[s]), math.ceil(width / strides[s]))
        if tuple(block.window_size) == grid:
            continue
        attn = block.attn
        device = attn.relative_position_bias_table.device
        block.window_size = grid
        block.shift_size = (0, 0)
        block.window_area = grid[0] * grid[1]
        attn.window_size = grid
        attn.window_area = grid[0] * grid[1]
        attn.relative_position_index = clamped_position_index(grid, layout["table"], device=device)
