"""Where the pipeline's artifacts live and how each is read back: one place for paths and formats.

Layout (relative to the project directory)::

    data/demo/                         the generated demo set, in data.format's layout (when data.root names it)
    data/prepared/manifest.json        ids, labels, sizes, classes, counts, fingerprint of what training reads
    data/prepared/masks.json           fingerprint of the scored masks (read by cams' previews and evaluate)
    data/prepared/segment_masks.json   fingerprint of the segmenter's masks (val; with segment.labels gt, train)
    data/prepared/masks/               COCO only: a pack of <id>.png, the scored splits' masks rasterised from the annotations
    models/model.safetensors           trained weights
    models/model.json                  ModelConfig + training summary + versions
    models/val_scores.npz              class logits on data.cls_split (ids order of the manifest)
    checkpoints/last.pt                an interrupted training run's last checkpoint (gone once training ends)
    metrics/train.json                 the last epoch's health statistics (wsss.diagnostics); V2: collapse
    cams/                              a pack (wsss.packs: index.json + part-*.zip) of <id>.npz, one per
                                       image of cams.splits: seed maps keys (k,) int16, cam (k, H, W)
                                       float16 and, for V2, rcam (k+1, H, W) float16 (channel 0 = background)
    previews/<id>.png                  CAM-over-image mosaics
    relations/relations.json           IRN relation net: trained or not, config, label stats, times
    relations/relations.safetensors    its boundary head (the backbone is the classifier's)
    relations/labels/                  a pack of <id>.png: its confident training labels (palette PNG, 255 = unsure)
    relations/live/                    its DVCLive training log
    pseudo/                            a pack of <id>.png, one per image of the refined splits: pseudo
                                       labels, VOC palette PNG (0 = background, 255 = unsure)
    pseudo/refine.json                 how they were made (method, map, splits, time)
    segmenter/model.safetensors        the trained segmenter (step 3)
    segmenter/model.json               its SegmenterConfig, labels it trained on, summary, versions
    segmenter/checkpoints/last.pt      an interrupted segmenter run's last checkpoint
    dvclive/segment/                   its DVCLive training log
    metrics/segment.json               its mIoU on data.val_split: single-scale, msc + flip, msc + CRF
    metrics/segment_per_class.json     per-class IoU / precision / recall of each setting
    predictions/<id>.png, <id>_overlay.jpg  ``python -m wsss.predict``'s output (not a stage)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import io, packs
from .errors import ParamsError

PREPARED = Path("data/prepared")
MANIFEST = PREPARED / "manifest.json"
MASKS = PREPARED / "masks.json"
SEGMENT_MASKS = PREPARED / "segment_masks.json"
PREPARED_MASKS = PREPARED / "masks"            # COCO: masks prepare rasterised from the annotations
DEMO_ROOT = Path("data/demo")
MODELS = Path("models")
WEIGHTS = MODELS / "model.safetensors"
MODEL_INFO = MODELS / "model.json"
VAL_SCORES = MODELS / "val_scores.npz"
CHECKPOINTS = Path("checkpoints")
CHECKPOINT = CHECKPOINTS / "last.pt"
TRAIN_LIVE = Path("dvclive/train")           # DVCLive's training log (metrics.json, plots/metrics/*/*.tsv)
CAMS = Path("cams")
PREVIEWS = Path("previews")
PSEUDO = Path("pseudo")
RELATIONS = Path("relations")
RELATION_WEIGHTS = RELATIONS / "relations.safetensors"
RELATION_INFO = RELATIONS / "relations.json"
SEGMENTER = Path("segmenter")
SEGMENTER_WEIGHTS = SEGMENTER / "model.safetensors"
SEGMENTER_INFO = SEGMENTER / "model.json"
SEGMENTER_CHECKPOINT = SEGMENTER / "checkpoints" / "last.pt"
SEGMENT_LIVE = Path("dvclive/segment")
METRICS = Path("metrics")
TRAIN_HEALTH = METRICS / "train.json"          # the last epoch's health statistics; V2: background seed collapse
PLOTS = Path("plots")


def load_manifest(path: Path = MANIFEST) -> dict:
    return io.read_json(path)


RELATION_LABELS = RELATIONS / "labels"


def cam_name(image_id: str) -> str:
    """An image's member in the seed-map pack (``cams/``)."""
    return f"{image_id}.npz"


def label_name(image_id: str) -> str:
    """An image's member in a label pack (``pseudo/``, ``relations/labels/``)."""
    return f"{image_id}.png"


def cams_pack(base: Path = CAMS) -> packs.Pack:
    return packs.Pack(base)


def read_cams(pack: packs.Pack, image_id: str, expect_shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """One image's seed maps from the pack (see :func:`load_cams`)."""
    return load_cams(pack.member(cam_name(image_id)), expect_shape)


def seed_kind(map_param: str) -> str:
    """``refine.map`` -> the seed map to refine: 'seed' is the trained model's (model.json)."""
    info = io.read_json(MODEL_INFO)
    kind = info.get("seed_map", "cam") if map_param == "seed" else map_param
    if kind == "rcam" and info.get("config", {}).get("version") != "v2":
        raise ParamsError("params.yaml: 'refine.map' is 'rcam' but the trained model is V1 (no R-CAM): use cam or seed")
    return kind


def cams_bytes(keys, maps: dict[str, np.ndarray], where: str = "seed maps") -> bytes:
    """Seed maps of one image as ``.npz`` bytes: ``keys`` (k,) class indices and each map
    (k', H, W) as float16."""
    return io.npz_bytes(where, keys=np.asarray(keys, dtype=np.int16),
                        **{name: m.astype(np.float16) for name, m in maps.items()})


def save_cams(path: Path, keys, maps: dict[str, np.ndarray]) -> None:
    """:func:`cams_bytes` into a file of its own (the stages write packs; this is for tests and tools)."""
    io.write_bytes(path, cams_bytes(keys, maps, str(path)))


def load_cams(path, expect_shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Read seed maps back (no pickle) as float32, checking their size against the image's;
    ``path`` is a file or a pack member."""
    arrays = io.load_npz(path)
    if "keys" not in arrays or "cam" not in arrays:
        raise io.ArtifactError(f"{path}: not a seed-map file (needs arrays 'keys' and 'cam')")
    out = {k: (v.astype(np.float32) if k != "keys" else v.astype(np.int64)) for k, v in arrays.items()}
    if out["cam"].shape[0] != len(out["keys"]):
        raise io.ArtifactError(f"{path}: {out['cam'].shape[0]} CAM channels for {len(out['keys'])} keys")
    if "rcam" in out and out["rcam"].shape != (len(out["keys"]) + 1, *out["cam"].shape[1:]):
        raise io.ArtifactError(f"{path}: R-CAM is {out['rcam'].shape}, expected background + "
                               f"{len(out['keys'])} classes at {out['cam'].shape[1:]}")
    if expect_shape is not None and out["cam"].shape[1:] != tuple(expect_shape):
        raise io.ArtifactError(f"{path}: maps are {out['cam'].shape[1:]}, image is {tuple(expect_shape)}")
    return out
