"""dvc.yaml against the code: each stage's deps are exactly its import closure within the project,
and each stage's params are the keys that change its result (never a key that only says how it runs).

Both are derived here from the code itself, so dvc.yaml cannot drift from it unnoticed.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from wsss import config

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("wsss", "stages")


def _module_file(module: str, root: Path) -> Path | None:
    """The project file of a dotted module name (a package's __init__.py), or None if not ours."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, root: Path) -> set[str]:
    """Every module an import statement of ``path`` names (also inside functions: a lazy import
    runs too), except those under ``if TYPE_CHECKING:``, which never run."""
    tree = ast.parse(path.read_text(), str(path))
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
            for child in node.body for n in ast.walk(child)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}   # `from pkg import submodule`
    return out


def import_closure(entry: Path, root: Path = REPO) -> set[Path]:
    """Project files that running ``entry`` (as ``python -m``) can execute: its packages'
    __init__.py files, its imports, theirs, and so on, with every package __init__.py on the way."""
    seen: set[Path] = set()
    parts = _module_name(entry, root).split(".")
    todo = [entry] + [f for i in range(1, len(parts)) if (f := _module_file(".".join(parts[:i]), root))]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for mod in _imports(path, root):
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):      # importing a.b.c runs a and a.b first
                f = _module_file(".".join(parts[:i]), root)
                if f is not None and f not in seen:
                    todo.append(f)
    return seen


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _listed_code(deps: list) -> set[Path]:
    """The Python files a stage's deps name (a folder stands for every .py file under it)."""
    out = set()
    for d in deps:
        path = REPO / str(d)
        if path.is_dir():
            out |= set(path.rglob("*.py"))
        elif path.suffix == ".py":
            out.add(path)
    return out


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_are_its_import_closure(stage: str):
    spec = _stages()[stage]
    entry = REPO / "stages" / f"{spec['cmd'].split('-m stages.')[1].split()[0]}.py"
    closure = import_closure(entry)
    listed = _listed_code(spec.get("deps", []))
    rel = lambda files: sorted(str(f.relative_to(REPO)) for f in files)   # noqa: E731
    missing, surplus = rel(closure - listed), rel(listed - closure)
    assert not missing and not surplus, (
        f"dvc.yaml stage '{stage}': deps missing {missing} (code it runs: an edit would leave its outputs "
        f"stale), surplus {surplus} (code it never runs: an edit would re-run it for nothing); its code "
        f"deps are exactly: {rel(closure)}")


def test_closure_follows_lazy_and_relative_imports(tmp_path: Path):
    """The closure finder on a hand-made package: a lazy import inside a function counts, a
    TYPE_CHECKING import does not, relative imports resolve (also `from . import mod`), package
    __init__ files come along, and outside modules are not followed."""
    files = {
        "stages/__init__.py": "",
        "stages/run.py": "import os\nfrom wsss.a import f\n",
        "wsss/__init__.py": "",
        "wsss/a.py": "from typing import TYPE_CHECKING\nfrom . import b\nif TYPE_CHECKING:\n    from .c import T\n"
                     "def f():\n    from .sub.d import g\n",
        "wsss/b.py": "import numpy\n",
        "wsss/c.py": "",
        "wsss/unused.py": "",
        "wsss/sub/__init__.py": "",
        "wsss/sub/d.py": "from ..b import x\nfrom .. import e\n",
        "wsss/e.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    closure = {str(p.relative_to(tmp_path)) for p in import_closure(tmp_path / "stages/run.py", tmp_path)}
    assert closure == {"stages/run.py", "stages/__init__.py", "wsss/__init__.py", "wsss/a.py", "wsss/b.py", "wsss/sub/__init__.py",
                       "wsss/sub/d.py", "wsss/e.py"}


def test_torch_free_stages_do_not_import_torch():
    """prepare, demo and evaluate start in well under a second: their code never imports torch."""
    import subprocess
    import sys

    for stage in ("prepare", "demo", "evaluate"):
        out = subprocess.run([sys.executable, "-c", f"import sys, stages.{stage}; print('torch' in sys.modules)"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        assert out.strip() == "False", f"stages.{stage} imports torch"


# keys that say how a stage runs, not what it makes: no stage lists them, so changing them re-runs nothing
HOW_KEYS = config.HOW_KEYS


def _leaves(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


def _reached(key: str, listed: set[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in listed for i in range(1, len(parts) + 1))


def test_every_result_key_reaches_a_stage_and_no_how_key_does():
    """A knob no stage lists would change nothing under `dvc repro`: every leaf of params.yaml that
    shapes a result is listed by some stage (itself or a section above it). A how-to-run key (process
    counts, workers, resume) is listed by none, so a teammate with another machine re-runs nothing."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    leaves = _leaves(raw)
    assert HOW_KEYS <= leaves
    for stage, spec in _stages().items():
        listed = {str(k) for k in spec.get("params", [])}
        how = sorted(k for k in HOW_KEYS if _reached(k, listed))
        assert not how, f"dvc.yaml stage '{stage}' lists how-to-run key(s) {how}: changing them would re-run it"
    listed = {str(k) for spec in _stages().values() for k in spec.get("params", [])}
    unlisted = sorted(k for k in leaves - HOW_KEYS if not _reached(k, listed))
    assert not unlisted, f"params.yaml keys no stage lists (changing them re-runs nothing): {unlisted}"


def write_code_deps(path: Path = REPO / "dvc.yaml") -> list[str]:
    """Rewrite each stage's code deps in dvc.yaml to its import closure (comments and other deps
    kept; the code deps go after the others, sorted). Returns the stages changed.

        python tests/test_dvc_wiring.py      # after adding a stage or changing imports
    """
    lines, out, changed = path.read_text().splitlines(), [], []
    stages, stage, i = _stages(), None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":") \
                and line.strip()[:-1] in stages:
            stage = line.strip()[:-1]
        if stage and line == "    deps:":
            out.append(line)
            i += 1
            block = []
            while i < len(lines) and lines[i].startswith("      - "):
                block.append(lines[i])
                i += 1
            spec = stages[stage]
            entry = REPO / "stages" / f"{spec['cmd'].split('-m stages.')[1].split()[0]}.py"
            code = sorted(str(f.relative_to(REPO)) for f in import_closure(entry))
            kept = [b for b in block if not b[8:].startswith(("stages/", "wsss/")) or
                    (REPO / b[8:]).is_dir() and not b[8:].endswith(".py") and b[8:].startswith("wsss/data/lists")]
            new = kept + [f"      - {c}" for c in code]
            if new != block:
                changed.append(stage)
            out += new
            continue
        out.append(line)
        i += 1
    path.write_text("\n".join(out) + "\n")
    return changed


if __name__ == "__main__":
    print("code deps rewritten:", ", ".join(write_code_deps()) or "none")
