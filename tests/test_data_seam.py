"""Only `prepare` knows a data set's layout: no other stage, and no library module outside the
data layer, imports a reader (voc, coco, labels), so a new data.format needs a reader and nothing
else; every stage after prepare finds files through the manifest (wsss.data.source)."""
from __future__ import annotations

import ast
from pathlib import Path

from wsss.data import FORMATS
from wsss.data.manifest import reader

REPO = Path(__file__).resolve().parents[1]
READERS = {f"wsss.data.{fmt}" for fmt in FORMATS}
#: The data layer itself: the manifest dispatches to the readers, the forms writer and the labels
#: reader use VOC's class list and split files.
ALLOWED = {"wsss/data/manifest.py", "wsss/data/forms.py", "wsss/data/labels.py", "wsss/data/voc.py",
           "wsss/data/coco.py"}


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_only_the_data_layer_knows_layouts():
    offenders = {}
    for path in sorted([*REPO.glob("stages/*.py"), *REPO.glob("wsss/**/*.py")]):
        rel = path.relative_to(REPO).as_posix()
        if rel in ALLOWED or rel in ("stages/prepare.py", "stages/demo.py"):
            continue
        found = _imports(path) & READERS
        if found:
            offenders[rel] = sorted(found)
    assert not offenders, f"layout readers imported outside prepare and the data layer: {offenders}"


def test_every_format_has_a_reader_with_the_same_interface():
    for fmt in FORMATS:
        module = reader(fmt)
        assert callable(module.load) and callable(module.check_image), fmt
