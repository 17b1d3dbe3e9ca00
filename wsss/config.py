"""Parameters: the schema of ``params.yaml`` and its validation.

Every knob of the pipeline is declared here once, with its type and the values it may take.
``load_params`` reads ``params.yaml``, rejects an unknown key, a wrong type or a bad value with
one :class:`ParamsError` that names the key, and returns the parameters as nested attribute
namespaces (``p.train.epochs``). Stages call it first, before any work.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping

import yaml


from .data import FORMATS
from .errors import ParamsError  # noqa: F401  (re-exported: wsss.config.ParamsError)


@dataclass(frozen=True)
class Field:
    """One leaf parameter: its expected type(s) and an optional value check.

    ``check`` returns an error message for a bad value, or None when the value is fine.
    """

    types: tuple
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def _choice(*options: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


def _positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _fraction(v) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def _pair(v) -> str | None:
    if len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return "must be a list of two integers [low, high]"
    if not 0 < v[0] <= v[1]:
        return "must satisfy 0 < low <= high"
    return None


def _scales(v) -> str | None:
    if not v:
        return "must list at least one scale"
    for s in v:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            return f"every scale must be a number > 0 (got {s!r})"
    return None


def _splits(v) -> str | None:
    if not v or not all(isinstance(s, str) and s for s in v):
        return "must be a non-empty list of split names"
    return None


def _dims(v) -> str | None:
    if len(v) != 4 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        return "must be a list of four positive integers"
    return None


def _root(v) -> str | None:
    if not v.strip():
        return "must name the data set's folder (data/demo for the generated demo)"
    if v.strip() == "demo":
        return "'demo' is now the folder the demo stage writes: data/demo"
    if v.startswith("~"):   # DVC would take '~' literally for the ${data.root} dependency
        return "must be an absolute path or one relative to the project, not starting with '~'"
    return None


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """``check`` for a value that may also be null (None)."""
    return lambda v: None if v is None else check(v)


def _extent(v) -> str | None:
    if v is None:
        return None
    if len(v) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return "must be null or a list of two numbers [low, high]"
    if not 0.05 <= v[0] <= v[1] <= 0.8:
        return "must satisfy 0.05 <= low <= high <= 0.8"
    return None


def _choice_int(*options: int) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(map(str, options))}"


def _rates(v) -> str | None:
    if len(v) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        return "must be a list of three positive integers"
    return None


def _pretrained(v) -> str | None:
    return None if v.strip() else "must be 'none', 'timm' or a checkpoint path"


INT, FLOAT, STR, BOOL, LIST = (int,), (int, float), (str,), (bool,), (list,)

# Dense CRF kernels, shared by refine.crf and IRN's label cleaning (refine.irn.clean_crf)
_CRF_KERNELS: dict[str, Field] = {
    "gt_prob": Field(FLOAT, lambda v: None if 0 < v < 1 else "must be in (0, 1)", "hard-label unary confidence"),
    "iterations": Field(INT, _positive),
    "gaussian_sxy": Field(FLOAT, _positive),
    "gaussian_compat": Field(FLOAT, _non_negative),
    "bilateral_sxy": Field(FLOAT, _positive),
    "bilateral_srgb": Field(FLOAT, _positive),
    "bilateral_compat": Field(FLOAT, _non_negative),
}

#: keys that say how a stage runs, not what it makes: no stage lists them in dvc.yaml (changing
#: them re-runs nothing) and no checkpoint fingerprint holds them (a run may resume on more GPUs)
HOW_KEYS = frozenset({"train.nproc", "train.num_workers", "train.checkpoint_every", "train.resume", "cams.nproc",
                      "refine.workers", "evaluate.workers", "segment.nproc", "segment.num_workers", "segment.checkpoint_every"})

# The whole parameter tree. A dict is a section; a Field is a leaf.
SCHEMA: dict[str, Any] = {
    "seed": Field(INT, _non_negative, "global seed (data order, augmentation, init)"),
    "data": {
        "format": Field(STR, _choice(*FORMATS), "the data set's layout: voc (VOC2012 + SBD) | "
                        "coco (COCO 2014) | labels (your images + a labels file)"),
        "root": Field(STR, _root, "the data set's folder, absolute or relative (data/demo: the generated demo)"),
        "labels_file": Field(STR, None, "data.format labels: the labels file (.csv or .json), relative to data.root"),
        "train_split": Field(STR, None, "split the classifier trains on"),
        "seed_split": Field(STR, None, "split where seeds are scored against masks"),
        "cls_split": Field(STR, None, "split where classification mAP is scored"),
        "val_split": Field(STR, None, "split where the segmenter is scored against its masks"),
        "demo": {
            "variant": Field(STR, _choice("standard", "large", "busy", "natural"),
                             "a named demo style: the three keys below set to null take its values"),
            "extent": Field((list, type(None)), _extent, "object size range, fractions of the short side"),
            "background": Field((str, type(None)), _optional(_choice("muted", "busy"))),
            "texture": Field((str, type(None)), _optional(_choice("synthetic", "natural"))),
            "seed": Field(INT, _non_negative, "the demo set is generated from this seed"),
            "num_train_aug": Field(INT, _positive),
            "num_train": Field(INT, _positive),
            "num_val": Field(INT, _positive),
            "min_size": Field(INT, _positive),
            "max_size": Field(INT, _positive),
            "max_objects": Field(INT, _positive),
        },
    },
    "model": {
        "version": Field(STR, _choice("v1", "v2"), "SWTformer-V1 or -V2"),
        "backbone": Field(STR, None, "a timm Swin name, or 'swin_nano' (CPU demo)"),
        "pretrained": Field(STR, _pretrained, "none | timm | path to a checkpoint"),
        "pretrained_partial": Field(BOOL, None, "true: a checkpoint that covers only part of the backbone is "
                                                  "intended (the rest stays at its random init)"),
        "drop_path_rate": Field(FLOAT, _fraction),
        "head_kernel": Field(INT, lambda v: None if v in (1, 3) else "must be 1 or 3"),
        "hff_dims": Field(LIST, _dims, "V2: channels of the four HFF projections (SIPE: 128 128 256 256)"),
        "hff_detach": Field(BOOL, None, "V2: HFF branches see detached backbone features (SIPE: true)"),
        "affinity": Field(STR, _choice("abs", "relu"), "V2: token affinity |cos| (paper) or ReLU(cos) (SIPE)"),
        "bg_weight": Field(FLOAT, _fraction, "V2: background structural match down-weighting (SIPE: 0.5)"),
        "seed_features": Field(STR, _choice("tokens", "fused"), "V2 in training: seeds located by T_out's "
                                                                 "affinity (paper Eq. 4) or F_hie's"),
        "every_class": Field(BOOL, None, "V2 in training: a labelled class left without a seed takes the "
                                         "cell of its best match (paper, SIPE: false)"),
    },
    "loss": {
        "w_gsc": Field(FLOAT, _non_negative, "V2: weight of L_GSC (0 = off)"),
        "w_ccl": Field(FLOAT, _non_negative, "V2: weight of L_CCL (0 = off)"),
        "ccl": Field(STR, _choice("paper", "contrastive"), "V2: Eq. 6 as printed, or class-wise contrastive"),
        "ramp_epochs": Field(FLOAT, _non_negative, "V2: GSC and CCL weights ramp up from 0 over these epochs"),
        "grad_to": Field(STR, _choice("both", "rcam"), "V2: GSC and CCL train the CAM and the R-CAM (paper) or "
                                                        "the R-CAM's fused branch only"),
    },
    "train": {
        "epochs": Field(INT, _positive),
        "batch_size": Field(INT, _positive),
        "crop_size": Field(INT, lambda v: None if v > 0 and v % 32 == 0 else "must be a multiple of 32"),
        "resize_long": Field(LIST, _pair, "random rescale of the long side, [low, high] px"),
        "hflip": Field(BOOL),
        "color_jitter": Field(FLOAT, _fraction, "brightness/contrast/saturation jitter, 0 = off"),
        "lr": Field(FLOAT, _positive, "backbone learning rate"),
        "head_lr_mult": Field(FLOAT, _positive, "new layers learn at lr * this"),
        "weight_decay": Field(FLOAT, _non_negative),
        "warmup_epochs": Field(FLOAT, _non_negative),
        "min_lr_ratio": Field(FLOAT, _fraction, "cosine floor as a fraction of the peak lr"),
        "num_workers": Field(INT, _non_negative),
        "amp": Field(BOOL, None, "mixed precision on CUDA (ignored on CPU)"),
        "resume": Field(STR, _choice("auto", "never"), "auto: continue an interrupted run from checkpoints/"),
        "checkpoint_every": Field(INT, _non_negative, "also checkpoint every this many steps within an epoch (0: epoch ends only)"),
        "nproc": Field(INT, _positive, "processes (torchrun, DDP; one GPU each on CUDA); batch_size is their global batch"),
        "cls_size": Field(INT, lambda v: None if v > 0 and v % 32 == 0 else "must be a multiple of 32",
                          "whole-image size for classification scoring"),
        "collapse_floor": Field(FLOAT, lambda v: None if 0 <= v < 0.5 else "must be in [0, 0.5)",
                                "V2: an epoch whose mean background seed share is below this (or above "
                                "1 - this) is reported as collapsed"),
    },
    "cams": {
        "splits": Field(LIST, _splits, "splits to compute seeds on (must hold data.seed_split)"),
        "scales": Field(LIST, _scales),
        "flip": Field(BOOL),
        "num_previews": Field(INT, _non_negative),
        "nproc": Field(INT, _positive, "processes (torchrun) the images are shared out over; one GPU each on CUDA"),
        "seeds": {
            "features": Field(STR, _choice("tokens", "fused"), "V2 at inference: seeds located by T_out's "
                                                                "affinity (as in training, paper Eq. 4) or F_hie's (SIPE)"),
            "affinity": Field(STR, _choice("abs", "relu"), "V2 at inference: |cos| (paper) or ReLU(cos) (SIPE)"),
            "bg_prototypes": Field(INT, _positive, "V2 at inference: background prototypes (SIPE: 1; k > 1: "
                                                   "k-means centres, the background channel their best match)"),
            "every_class": Field(BOOL, None, "V2 at inference: a labelled class left without a seed takes the "
                                             "cell of its best match (paper, SIPE: false)"),
        },
    },
    "refine": {
        "method": Field(STR, _choice("none", "crf", "irn"), "none = seeds cut at bg_threshold | crf | irn"),
        "map": Field(STR, _choice("seed", "cam", "rcam"), "seed = the map evaluate leads with (V2: R-CAM)"),
        "bg_threshold": Field(FLOAT, _fraction, "CAM background score for pseudo labels (not the GT sweep's)"),
        "workers": Field(INT, _non_negative, "processes for the CRF (0 = all cores)"),
        "crf": {
            "unary": Field(STR, _choice("prob", "labels"), "prob (PSA) | labels (IRN label cleaning)"),
            **_CRF_KERNELS,
        },
        "irn": {
            "conf_fg": Field(FLOAT, _fraction, "confident foreground: top class score above this (IRN: 0.30)"),
            "conf_bg": Field(FLOAT, _fraction, "confident background: no class score above this (IRN: 0.05)"),
            "rcam_bg_scale": Field(FLOAT, _fraction, "R-CAM confident background: where it wins with its score "
                                                     "times this (SIPE: 0.5)"),
            "clean": Field(BOOL, None, "clean both cuts with a CRF on hard labels (IRN: true)"),
            "clean_crf": dict(_CRF_KERNELS),
            "epochs": Field(INT, _positive),
            "batch_size": Field(INT, _positive),
            "crop_size": Field(INT, lambda v: None if v > 0 and v % 32 == 0 else "must be a multiple of 32"),
            "resize_long": Field(LIST, _pair, "random rescale of the long side, [low, high] px"),
            "optimizer": Field(STR, _choice("adamw", "sgd"), "adamw (warm-up + cosine) | sgd (IRN's poly)"),
            "lr": Field(FLOAT, _positive, "relation head learning rate"),
            "weight_decay": Field(FLOAT, _non_negative),
            "dim": Field(INT, _positive, "channels of the boundary head's branches"),
            "train_radius": Field(INT, lambda v: None if v >= 2 else "must be >= 2", "pair radius in training, stride-4 cells (IRN: 10)"),
            "walk_radius": Field(INT, lambda v: None if v >= 2 else "must be >= 2", "affinity radius of the walk (IRN: 5)"),
            "beta": Field(FLOAT, _positive, "affinity exponent (IRN: 10)"),
            "iterations": Field(INT, _non_negative, "random-walk steps (IRN: 2^8 = 256)"),
            "bg_threshold": Field(FLOAT, _fraction, "background score after the walk (IRN: 0.25; CAM seeds only)"),
            "rcam_power": Field(FLOAT, _positive, "R-CAM seeds raised to this power before the walk (SIPE: 1.5)"),
        },
    },
    "segment": {
        "labels": Field(STR, _choice("pseudo", "gt"), "pseudo = refine's labels of data.train_split | gt = its "
                                                       "ground-truth masks (the fully supervised upper bound)"),
        "backbone": Field(STR, None, "a timm model name (features_only): resnet101 = the literature's DeepLab; "
                                     "classifier = the trained SWTformer's Swin backbone and weights"),
        "pretrained": Field(STR, _pretrained, "none | timm (ImageNet, hub) | path to ImageNet weights"),
        "output_stride": Field(INT, _choice_int(8, 16, 32), "backbone stride (dilated past it)"),
        "feature_stage": Field(INT, None, "the backbone stage that feeds ASPP (-1: the last)"),
        "aspp_channels": Field(INT, _positive, "width of ASPP and the head (torchvision's DeepLabHead: 256)"),
        "aspp_rates": Field(LIST, _rates, "ASPP's three dilation rates (DeepLabV3 at stride 16: 6 12 18)"),
        "epochs": Field(INT, _positive),
        "batch_size": Field(INT, lambda v: None if v >= 2 else "must be >= 2 (batch norm)"),
        "crop_size": Field(INT, _positive),
        "resize_long": Field(LIST, _pair, "random rescale of the long side, [low, high] px"),
        "optimizer": Field(STR, _choice("adamw", "sgd"), "adamw | sgd (DeepLab: momentum 0.9)"),
        "momentum": Field(FLOAT, _fraction, "sgd only"),
        "schedule": Field(STR, _choice("cosine", "poly"), "cosine (warm-up + cosine) | poly (DeepLab: power 0.9)"),
        "warmup_epochs": Field(FLOAT, _non_negative, "cosine only"),
        "lr": Field(FLOAT, _positive, "backbone learning rate"),
        "head_lr_mult": Field(FLOAT, _positive, "ASPP and head learn at lr * this (DeepLab: 10)"),
        "weight_decay": Field(FLOAT, _non_negative),
        "validate": Field(BOOL, None, "score data.val_split single-scale after every epoch (training curves)"),
        "num_workers": Field(INT, _non_negative),
        "nproc": Field(INT, _positive, "processes (torchrun, DDP; one GPU each on CUDA); batch_size is their global batch"),
        "checkpoint_every": Field(INT, _non_negative, "also checkpoint every this many steps within an epoch"),
        "eval": {
            "scales": Field(LIST, _scales, "multi-scale inference (with flip): the 'msc' score"),
            "flip": Field(BOOL),
            "crf": Field(BOOL, None, "also score msc + dense CRF ('msc_crf')"),
            "crf_kernels": {k: v for k, v in _CRF_KERNELS.items() if k != "gt_prob"},
        },
    },
    "evaluate": {
        "workers": Field(INT, _non_negative, "processes scoring the seed split's images (0 = all cores)"),
        "threshold_start": Field(FLOAT, _fraction),
        "threshold_stop": Field(FLOAT, _fraction),
        "num_thresholds": Field(INT, _positive),
    },
}


def _namespace(d: Mapping[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(**{k: _namespace(v) if isinstance(v, Mapping) else v for k, v in d.items()})


def to_dict(ns: SimpleNamespace) -> dict:
    """Inverse of the namespace conversion: plain nested dicts (for JSON records)."""
    return {k: to_dict(v) if isinstance(v, SimpleNamespace) else v for k, v in vars(ns).items()}


def shaping(p: SimpleNamespace, *keys: str) -> dict:
    """The named top-level keys of the parameters as plain dicts, without :data:`HOW_KEYS`: what
    shapes a result (a training checkpoint's fingerprint)."""
    def drop(d: dict, prefix: str) -> dict:
        return {k: drop(v, f"{prefix}{k}.") if isinstance(v, dict) else v for k, v in d.items()
                if f"{prefix}{k}" not in HOW_KEYS}
    whole = to_dict(p)
    return {k: drop(whole[k], f"{k}.") if isinstance(whole[k], dict) else whole[k] for k in keys}


def _validate(node: Mapping[str, Any], schema: Mapping[str, Any], prefix: str, source: str) -> None:
    if not isinstance(node, Mapping):
        raise ParamsError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be a mapping")
    for key in node:
        if key not in schema:
            near = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else ""
            raise ParamsError(f"{source}: unknown key '{prefix}{key}'{hint}")
    for key, spec in schema.items():
        name = prefix + key
        if key not in node:
            raise ParamsError(f"{source}: missing key '{name}'")
        value = node[key]
        if isinstance(spec, dict):
            _validate(value, spec, name + ".", source)
            continue
        # bool is an int in Python: only accept it where a bool is asked for
        ok_type = isinstance(value, spec.types) and (bool in spec.types or not isinstance(value, bool))
        if not ok_type:
            want = " or ".join(t.__name__ for t in spec.types)
            raise ParamsError(f"{source}: '{name}' must be {want}, got {type(value).__name__} {value!r}")
        if spec.check is not None:
            msg = spec.check(value)
            if msg:
                raise ParamsError(f"{source}: '{name}' {msg} (got {value!r})")


def _cross_checks(p: SimpleNamespace, source: str) -> None:
    if p.data.cls_split == p.data.train_split:
        raise ParamsError(f"{source}: 'data.cls_split' must differ from data.train_split '{p.data.train_split}' "
                          "(mAP would be scored on the images the classifier trained on)")
    if p.data.seed_split not in p.cams.splits:
        raise ParamsError(f"{source}: 'cams.splits' must include data.seed_split '{p.data.seed_split}'")
    if p.refine.method == "irn" and p.data.train_split not in p.cams.splits:
        raise ParamsError(f"{source}: 'refine.method' irn trains on the seeds of data.train_split: add "
                          f"'{p.data.train_split}' to cams.splits")
    if p.train.batch_size % p.train.nproc:
        raise ParamsError(f"{source}: 'train.batch_size' {p.train.batch_size} (the global batch) must split evenly "
                          f"over train.nproc={p.train.nproc} processes")
    if p.refine.irn.conf_fg < p.refine.irn.conf_bg:
        raise ParamsError(f"{source}: 'refine.irn.conf_fg' must be >= refine.irn.conf_bg")
    if p.data.demo.min_size > p.data.demo.max_size:
        raise ParamsError(f"{source}: 'data.demo.min_size' must be <= data.demo.max_size")
    if p.data.demo.num_train > p.data.demo.num_train_aug:
        raise ParamsError(f"{source}: 'data.demo.num_train' must be <= data.demo.num_train_aug")
    if p.segment.labels == "pseudo" and p.data.train_split not in p.cams.splits:
        raise ParamsError(f"{source}: 'cams.splits' must include data.train_split '{p.data.train_split}': the "
                          f"segmenter trains on its pseudo labels (segment.labels: pseudo)")
    if p.segment.backbone == "classifier" and p.segment.pretrained != "none":
        raise ParamsError(f"{source}: 'segment.pretrained' must be none with segment.backbone classifier (the "
                          f"classifier's trained weights are its start), got {p.segment.pretrained!r}")
    if p.segment.batch_size % p.segment.nproc:
        raise ParamsError(f"{source}: 'segment.batch_size' {p.segment.batch_size} (the global batch) must split "
                          f"evenly over segment.nproc={p.segment.nproc} processes")
    if p.data.val_split == p.data.train_split:
        raise ParamsError(f"{source}: 'data.val_split' must differ from data.train_split '{p.data.train_split}' "
                          "(the segmenter would be scored on the images it trained on)")
    if p.evaluate.threshold_start > p.evaluate.threshold_stop:
        raise ParamsError(f"{source}: 'evaluate.threshold_start' must be <= evaluate.threshold_stop")


def validate_params(raw: Mapping[str, Any], source: str = "params") -> SimpleNamespace:
    """Check a parameter tree against :data:`SCHEMA`; return it as nested namespaces."""
    _validate(raw, SCHEMA, "", source)
    params = _namespace(raw)
    _cross_checks(params, source)
    return params


def load_params(path: str | Path = "params.yaml") -> SimpleNamespace:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return validate_params(raw or {}, str(path))


def thresholds(p: SimpleNamespace) -> list[float]:
    """The background thresholds the evaluate stage sweeps, from the ``evaluate`` section."""
    e = p.evaluate
    if e.num_thresholds == 1:
        return [float(e.threshold_start)]
    step = (e.threshold_stop - e.threshold_start) / (e.num_thresholds - 1)
    return [round(e.threshold_start + i * step, 6) for i in range(e.num_thresholds)]
