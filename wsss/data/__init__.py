"""Data: the one reader of data-set layouts (voc), the manifest, the demo generator, datasets."""
