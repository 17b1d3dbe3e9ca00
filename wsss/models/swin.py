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
import re
from pathlib import Path
from typing import Mapping, Sequence

import timm
import torch
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

from ..io import ArtifactError, load_weights

#: Small Swin configurations for CPU runs, by name (timm's own names pass through unchanged).
#: ``swin_demo`` is built for 128 px crops: its 4x4 windows tile the 32/16/8 token grids of stages
#: 1-3 exactly and stage 4 (4x4) is one global window, the layout Swin-T has at 224.
#: ``swin_demo_p2`` (the demo's default) is the same network with 2 px patches: stride 16 at the
#: last stage, so a 128 px crop gives an 8 x 8 CAM instead of 4 x 4 (the demo's images are 96-160 px;
#: on them a stride-32 CAM is 3-5 cells a side). About 3x the compute; README "Demo variants".
SMALL_CONFIGS = {
    "swin_demo": dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4),
    "swin_demo_p2": dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4, patch_size=2),
    "swin_nano": dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
    "swin_micro": dict(embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16)),
}
SMALL_BASE = "swin_tiny_patch4_window7_224"


from ..errors import BackboneError  # noqa: F401


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


def load_pretrained(model: SwinTransformer, name: str, pretrained: str, *, partial: bool = False) -> dict:
    """Fill ``model`` (a backbone from :func:`create_backbone`) with pretrained weights.

    ``pretrained`` is ``none``, ``timm`` (hub download) or a local file: timm's format,
    Microsoft's original Swin format (``{'model': ...}``, downsampling at the end of each stage),
    or this project's own SWTformer weights (``models/model.safetensors``, or a training
    checkpoint ``checkpoints/last.pt``; a folder holding ``model.safetensors`` names that file):
    their ``backbone.*`` tensors are loaded, their head and V2 branches are not (fine-tuning of
    the backbone). Safetensors or a torch file loadable with ``weights_only=True``.

    The checkpoint must fit: a backbone tensor it lacks (*missing*) or a tensor of it that no
    backbone tensor takes (*unexpected*, i.e. unused) is refused with one line listing them,
    unless ``partial`` (``model.pretrained_partial``) says that is intended: then what fits is
    loaded and the rest stays at its init. Buffers timm recomputes (``relative_position_index``,
    ``attn_mask``) are neither; a classifier head (``head.*``; this project's head and HFF) is
    expected and reported under ``ignored``. A checkpoint with no tensor for the backbone and one
    whose tensors have other shapes are always refused; nothing is loaded unless all is well.
    Every fault is a :class:`BackboneError` with one line naming the source.

    Returns ``{"loaded": n, "missing": [...], "unexpected": [...], "ignored": [...],
    "ignored_why": str | None, "source_format": "timm" | "microsoft" | "wsss" |
    "wsss-checkpoint" | "timm-hub", "resized": [...], "partial": bool}`` (``resized``: tensors
    timm resampled to this backbone's window or patch size; ``partial``: missing or unexpected
    tensors were left out); for ``none`` only the first three, empty.
    """
    if pretrained == "none":
        return {"loaded": 0, "missing": [], "unexpected": []}
    if pretrained == "timm":
        source = f"timm's '{name}' weights"
        state, origin = _hub_state(name), "hub"
    else:
        path = _checkpoint_path(pretrained)
        source = f"'{path}'"
        state, origin = _read_checkpoint(path)
    state, fmt, ignored, why = _backbone_tensors(state, origin)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own}
    unused = [_shown_name(k, fmt) for k in state if k not in own]   # as the file names them
    if not matching:
        raise BackboneError(
            f"model.pretrained: {source} has no tensor for backbone '{name}' ({len(state)} tensor"
            f"{'s' if len(state) != 1 else ''}"
            f"{', none named like a backbone tensor, e.g. ' + _few(unused) if unused else ''})")
    fitted = matching
    wrong = _shape_mismatches(matching, own, resizable=True)
    if not wrong:
        try:  # timm resamples bias tables to this backbone's windows, the patch embedding to its patch
            fitted = checkpoint_filter_fn(dict(matching), model)
        except Exception as exc:  # noqa: BLE001 - a tensor timm cannot resample
            raise BackboneError(f"model.pretrained: {source} does not fit backbone '{name}' "
                                f"({type(exc).__name__}: {_one_line(str(exc))})") from None
        fitted = {k: v for k, v in fitted.items() if k in own}
        wrong = _shape_mismatches(fitted, own)
    if wrong:
        k = wrong[0]
        raise BackboneError(
            f"model.pretrained: {source}: {len(wrong)} tensors do not fit '{name}', e.g. {_shown_name(k, fmt)}: "
            f"{tuple(fitted[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the backbone")
    missing = [k for k in own if k not in fitted and not _is_buffer(k)]
    if (missing or unused) and not partial:
        raise BackboneError(_coverage_message(source, name, missing, unused, len(own)))
    try:
        model.load_state_dict(fitted, strict=False)
    except Exception as exc:  # noqa: BLE001 - e.g. a dtype that cannot be copied into a parameter
        raise BackboneError(f"model.pretrained: {source} cannot be loaded into backbone '{name}' "
                            f"({type(exc).__name__}: {_one_line(str(exc))})") from None
    resized = [k for k in fitted if fitted[k].shape != matching[k].shape]
    return {"loaded": len(fitted), "missing": missing, "unexpected": unused, "ignored": ignored,
            "ignored_why": why, "source_format": fmt, "resized": resized, "partial": bool(missing or unused)}


# --------------------------------------------------------------------------------------------
# pretrained weights: reading and naming
# --------------------------------------------------------------------------------------------

_BUFFERS = ("relative_position_index", "attn_mask")   # timm recomputes these; never loaded
_WSSS_PREFIX = "backbone."
_SHOWN = 3                                             # names quoted per list in a message


def _is_buffer(key: str) -> bool:
    return any(b in key for b in _BUFFERS)


def _one_line(text: str, limit: int = 400) -> str:
    """An exception's text as one line: torch's weights-only boilerplate dropped, whitespace
    collapsed, cut at ``limit`` characters."""
    head, found, rest = text.partition("Weights only load failed")
    if found:  # keep torch's reason (the middle paragraphs), drop its advice around it
        paragraphs = [p for p in rest.split("\n\n")[1:] if p.strip() and not p.strip().startswith("Check the doc")]
        text = head + " ".join(paragraphs)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _few(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")


def _coverage_message(source: str, name: str, missing: list[str], unused: list[str], total: int) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {total} backbone tensors missing ({_few(missing)})")
    if unused:
        parts.append(f"{len(unused)} unused ({_few(unused)})")
    what = f"does not cover backbone '{name}'" if missing else f"has tensors backbone '{name}' does not take"
    return (f"model.pretrained: {source} {what}: {', '.join(parts)}; "
            f"set model.pretrained_partial: true if that is intended")


def _shape_mismatches(state: dict, own: dict, resizable: bool = False) -> list[str]:
    """Names whose shapes differ from the backbone's; with ``resizable``, not those timm's
    :func:`checkpoint_filter_fn` resamples (bias tables of another window, same heads; a patch
    embedding of another patch size, same channels)."""
    def fits(k: str, v: torch.Tensor) -> bool:
        want = own[k]
        if tuple(v.shape) == tuple(want.shape):
            return True
        if resizable and k.endswith("relative_position_bias_table"):
            return v.ndim == 2 and v.shape[1] == want.shape[1]
        if resizable and k == "patch_embed.proj.weight":
            return v.ndim == 4 and v.shape[:2] == want.shape[:2]
        return False

    return [k for k in own if k in state and not fits(k, state[k])]   # in the backbone's order


def _hub_state(name: str) -> dict:
    if name in SMALL_CONFIGS:
        raise BackboneError(f"model.pretrained: timm has no weights for the demo backbone '{name}'")
    try:
        src = timm.create_model(name, pretrained=True, num_classes=0, global_pool="")
    except Exception as exc:  # noqa: BLE001 - no network, no weights for this name, ...
        raise BackboneError(f"model.pretrained: timm could not provide weights for '{name}' "
                            f"({type(exc).__name__}: {_one_line(str(exc))}); offline, name a local "
                            f"checkpoint file instead") from None
    return src.state_dict()


def _checkpoint_path(pretrained: str) -> Path:
    """The file ``pretrained`` names; a folder stands for its ``model.safetensors`` (as ``models/``)."""
    path = Path(pretrained)
    if not path.exists():
        hint = ""
        try:
            if path.resolve().is_relative_to(Path("models").resolve()):
                hint = (" (models/ is the train stage's own output, which dvc removes before training:"
                        " copy the file out of it and name the copy)")
        except OSError:
            pass
        raise BackboneError(f"model.pretrained: checkpoint '{path}' not found{hint}")
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise BackboneError(f"model.pretrained: '{path}' is a folder with no model.safetensors in it: "
                                f"name a checkpoint file")
        path = weights
    return path


def _file_kind(path: Path) -> str:
    """'safetensors', 'torch' (zip or legacy pickle), 'empty' or 'other', from the first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise BackboneError(f"model.pretrained: '{path}' cannot be read ({_one_line(str(exc))})") from None
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04" or head[0] == 0x80:
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":   # 8-byte header length, then the JSON header
        return "safetensors"
    return "other"


def _read_checkpoint(path: Path) -> tuple[dict, str]:
    """The state dict a file holds (unwrapped from ``{'model': ...}`` / ``{'state_dict': ...}``)
    and where it comes from: 'training-checkpoint' (this project's ``checkpoints/last.pt``) or 'file'."""
    kind = _file_kind(path)
    if kind == "empty":
        raise BackboneError(f"model.pretrained: '{path}' is an empty file, not a checkpoint")
    if kind == "other":
        with open(path, "rb") as f:
            start = f.read(12)
        raise BackboneError(f"model.pretrained: '{path}' is not a checkpoint (neither safetensors nor a torch "
                            f"file; it starts with {start!r})")
    try:
        if kind == "safetensors" and path.suffix != ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = load_weights(path)
    except ArtifactError as exc:
        raise BackboneError(f"model.pretrained: {_one_line(str(exc))}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors for a file named otherwise
        raise BackboneError(f"model.pretrained: '{path}': not a readable checkpoint "
                            f"({type(exc).__name__}: {_one_line(str(exc))})") from None
    origin = "training-checkpoint" if "fingerprint" in obj and isinstance(obj.get("model"), Mapping) else "file"
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
    state = dict(obj)
    others = [f"'{k}' ({type(v).__name__})" for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise BackboneError(f"model.pretrained: '{path}' is not a state dict: {len(others)} of its entries are not "
                            f"tensors ({_few(others)}; weights under a key other than 'model' or 'state_dict'?)")
    if not state:
        raise BackboneError(f"model.pretrained: '{path}' holds no tensors")
    return state, origin


def _backbone_tensors(state: dict, origin: str) -> tuple[dict, str, list[str], str | None]:
    """The checkpoint's tensors under timm's backbone names, its format, and the tensors set
    aside as expected (a classifier head; this project's head and V2 branches), with why.

    Buffers timm recomputes are dropped. Names kept in the result that the backbone lacks are the
    caller's *unused* tensors."""
    if state and all(k.startswith("module.") for k in state):   # saved from a DDP-wrapped model
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith(_WSSS_PREFIX) for k in state):
        # this project's SWTformer weights: the backbone is fine-tuned, the rest is the new model's own
        fmt = "wsss-checkpoint" if origin == "training-checkpoint" else "wsss"
        ignored = [k for k in state if not k.startswith(_WSSS_PREFIX)]
        state = {k[len(_WSSS_PREFIX):]: v for k, v in state.items() if k.startswith(_WSSS_PREFIX)}
        parts = "classifier head and V2 branches" if any(k.startswith("hff.") for k in ignored) else "classifier head"
        why = (f"the source SWTformer's {parts}: this model keeps its own freshly initialised "
               f"ones (fine-tuning of the backbone)") if ignored else None
    else:
        fmt = "timm-hub" if origin == "hub" else "timm"
        if "layers.0.downsample.reduction.weight" in state:
            # Microsoft's layout: stage i ends with the patch merging timm puts at the start of stage i + 1
            fmt = "microsoft"
            state = {_timm_stage_name(k): v for k, v in state.items()}
        ignored = [k for k in state if k.startswith("head.")]
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        why = "the source's classifier head (e.g. ImageNet's): not part of the backbone" if ignored else None
    state = {k: v for k, v in state.items() if not _is_buffer(k)}
    return state, fmt, ignored, why


def _timm_stage_name(key: str) -> str:
    m = re.match(r"layers\.(\d+)\.downsample\.", key)
    return f"layers.{int(m.group(1)) + 1}.downsample.{key[m.end():]}" if m else key


def _shown_name(key: str, fmt: str) -> str:
    """A backbone-named checkpoint tensor under the name the checkpoint file gives it."""
    if fmt in ("wsss", "wsss-checkpoint"):
        return _WSSS_PREFIX + key
    if fmt == "microsoft":
        m = re.match(r"layers\.(\d+)\.downsample\.", key)
        if m:
            return f"layers.{int(m.group(1)) - 1}.downsample.{key[m.end():]}"
    return key


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
