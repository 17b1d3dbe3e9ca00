"""Where a prepared data set's images and masks are: the one way later stages find files.

``prepare`` records in the manifest, per id, the image's path relative to ``data.root``, and in
``masks.json`` (the seed split) and ``segment_masks.json`` (the segmenter's splits) the masks'
paths (relative to the root, or members of the pack ``data/prepared/masks`` where ``prepare``
rasterised COCO's annotations). A :class:`Source` resolves them; no stage after ``prepare`` builds a layout path, so
a new ``data.format`` needs a reader module and nothing else.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import artifacts, packs
from ..errors import DataError
from . import files


class Source:
    """The images of a manifest under ``root`` and the masks of ``masks`` (id -> path, from the
    masks record a stage depends on); ``project_dir`` holds ``data/prepared``."""

    def __init__(self, root: Path, manifest: dict, masks: dict[str, str] | None = None,
                 project_dir: Path | None = None):
        self.root, self.manifest = Path(root), manifest
        self.images, self.masks = manifest["images"], dict(masks or {})
        base = manifest.get("mask_base", "root")
        project = Path.cwd() if project_dir is None else Path(project_dir)
        self.mask_root = self.root if base == "root" else project / artifacts.PREPARED_MASKS
        self._packed = base != "root"        # prepare's rasterised masks are a pack (wsss.packs)
        self._pack: packs.Pack | None = None

    def image_path(self, image_id: str) -> Path:
        return self.root / self.images[image_id]

    def has_mask(self, image_id: str) -> bool:
        return bool(self.masks.get(image_id))

    def mask_path(self, image_id: str) -> Path | packs.Member:
        """The mask's file, or its member in prepare's pack (both read with ``read_bytes``, print
        where they are and have ``exists``); a :class:`DataError` where the data set has none for
        ``image_id``."""
        rel = self.masks.get(image_id)
        if not rel:
            raise DataError(f"{self.image_path(image_id)}: no mask for '{image_id}' (prepare found none; "
                            "only the scored splits' masks are recorded)")
        if not self._packed:
            return self.mask_root / rel
        if self._pack is None:
            self._pack = packs.opened(self.mask_root)
        return self._pack.member(rel)

    def image(self, image_id: str) -> np.ndarray:
        """RGB uint8 (H, W, 3)."""
        return files.read_image(self.image_path(image_id))

    def mask(self, image_id: str) -> np.ndarray:
        """Class indices uint8 (H, W): 0 background, 1..C, 255 ignore."""
        return files.read_mask(self.mask_path(image_id))

    def masked(self, ids) -> list[str]:
        """The ids among ``ids`` that have a mask, in order."""
        return [i for i in ids if self.has_mask(i)]
