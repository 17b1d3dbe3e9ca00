"""Predictions on a folder of your own images, with the trained segmenter or the classifier.

    python -m wsss.predict --images DIR --out DIR                  # segmenter: masks + overlays
    python -m wsss.predict --images DIR --out DIR --scales 0.75 1 1.25 --flip
    python -m wsss.predict --images DIR --out DIR --cams --classes cat dog   # CAM (V2: + R-CAM) panels

Every file of ``--images`` (not its sub-folders) is read whatever its size and pixel format
(grey, RGB, RGBA, palette; JPEG, PNG or WebP data); for each, the segmenter writes
``<name>.png`` (VOC palette, class ids as in the data set's class list, 0 = background) and
``<name>_overlay.jpg`` (the colours over the image); ``--cams`` writes ``<name>_cams.png``,
the classifier's CAM (and a V2 model's R-CAM) of each named class over the image. A file that
cannot be read is reported by name and skipped; the rest are written; the exit code is 1 when any
file failed (2 for a usage error), else 0. Runs on CUDA when present (AMP), else on the CPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import artifacts, io, runtime
from .data import files
from .errors import KNOWN_FAULTS, DataError, ParamsError


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The VOC colours of a class-id mask (H, W) blended over an RGB image; background left as is."""
    colours = files.voc_palette()[mask].astype(np.float32)
    out = image.astype(np.float32)
    fg = (mask > 0) & (mask < 255)
    out[fg] = out[fg] * (1 - alpha) + colours[fg] * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wsss.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="folder of images")
    ap.add_argument("--out", type=Path, required=True, help="folder for the outputs (created)")
    ap.add_argument("--model", type=Path, default=None,
                    help="the segmenter's folder (default: segmenter/), or with --cams the classifier's (models/)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0], help="image scales, averaged")
    ap.add_argument("--flip", action="store_true", help="also average the mirrored image")
    ap.add_argument("--cams", action="store_true", help="the classifier's CAMs of --classes instead of masks")
    ap.add_argument("--classes", nargs="+", default=[], help="with --cams: class names present in the images")
    args = ap.parse_args(argv)
    if not args.images.is_dir():
        ap.error(f"--images: '{args.images}' is not a folder")
    if args.cams and not args.classes:
        ap.error("--cams needs --classes: the names of the classes to draw")
    if any(s <= 0 for s in args.scales):
        ap.error("--scales must be > 0")
    paths = _files(args.images)
    if not paths:
        ap.error(f"--images: '{args.images}' holds no paths")
    device = runtime.device()
    try:
        run = _cam_runner(args, device) if args.cams else _mask_runner(args, device)
    except (*KNOWN_FAULTS, OSError) as exc:
        print(f"predict: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in tqdm(paths, desc="predict", unit="img"):
        try:
            image = files.read_image(path)
        except DataError as exc:
            tqdm.write(f"predict: skipped {path}: {exc}")
            failed.append(path)
            continue
        run(image, args.out / path.stem)
    print(f"predict: {len(paths) - len(failed)} of {len(paths)} images written to {args.out}"
          + (f"; {len(failed)} could not be read: {', '.join(p.name for p in failed[:10])}" if failed else ""))
    return 1 if failed else 0


def _mask_runner(args, device):
    from .models.segmenter import load_segmenter
    from .segmentation import predict

    folder = args.model or artifacts.SEGMENTER
    model = load_segmenter(folder / artifacts.SEGMENTER_WEIGHTS.name, folder / artifacts.SEGMENTER_INFO.name, device)

    def run(image: np.ndarray, stem: Path) -> None:
        mask = predict(model, image, args.scales, args.flip, device, amp=True).argmax(0).astype(np.uint8)
        io.write_bytes(stem.with_suffix(".png"), files.palette_png(mask))
        io.write_bytes(stem.parent / f"{stem.name}_overlay.jpg", jpeg_bytes(overlay(image, mask)))
    return run


def _cam_runner(args, device):
    from .inference import multiscale_maps
    from .models import trained
    from .viz import cam_panel, png_bytes

    folder = args.model or artifacts.MODELS
    model = trained.load_model(device, folder)
    names = list(model.cfg.class_names)
    unknown = [c for c in args.classes if c not in names]
    if unknown:
        raise ParamsError(f"--classes: {', '.join(unknown)} not among the model's classes ({', '.join(names)})")
    keys = [names.index(c) + 1 for c in args.classes]
    seeds = None
    if model.cfg.version == "v2" and Path("params.yaml").exists():    # cams.seeds, as the cams stage
        from .config import load_params
        from .inference import seeding

        seeds = seeding(load_params().cams.seeds, model)

    def run(image: np.ndarray, stem: Path) -> None:
        maps = multiscale_maps(model, image, keys, args.scales, args.flip, device, amp=True, seeding=seeds)
        io.write_bytes(stem.parent / f"{stem.name}_cams.png", png_bytes(cam_panel(image, maps, keys, names)))
    return run


if __name__ == "__main__":
    sys.exit(main())
