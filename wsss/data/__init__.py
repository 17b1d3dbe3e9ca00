"""Data: one reader module per layout (``data.format``), the manifest, where prepared files are
(``source``), image and mask decoding (``files``), the demo generator and its other forms, datasets."""

#: data.format -> the module ``wsss.data.<format>`` that alone knows that layout. A new format is
#: a reader module (``load`` and ``check_image``), its name here, and its tests.
FORMATS = ("voc", "coco", "labels")
