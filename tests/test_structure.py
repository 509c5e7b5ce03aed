"""The package's shape: packages by concern with no import cycles, a small top level, small modules, and the old
module paths still importable (with a warning that names the new one)."""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "agegender"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every import of one agegender module by another, anywhere in the file: at the top, inside functions and
    under ``if TYPE_CHECKING`` (a cycle there is still two modules that cannot be understood one without the other)."""
    modules = {module_name(p): p for p in package.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    parent = ".".join(base + ([node.module] if node.module else []))
                else:
                    parent = node.module or ""
                targets = [f"{parent}.{a.name}" for a in node.names]
            for target in targets:
                found = known(target) if target.startswith("agegender") else None
                if found and found != name:
                    edges[name].add(found)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_agegender():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    pkg = tmp_path / "agegender"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "face.py").write_text("def f():\n    from agegender.sub.check import g\n")
    (pkg / "sub" / "check.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..face import f\n")
    (pkg / "alone.py").write_text("from .face import f\n")
    old = globals()["REPO"]
    globals()["REPO"] = tmp_path
    try:
        assert cycles(import_graph(pkg)) == [["agegender.face", "agegender.sub.check"]]
    finally:
        globals()["REPO"] = old


def test_top_level_is_the_spine_and_every_module_is_small():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    assert {"estimator.py", "face.py", "results.py", "weights.py"} <= set(top)
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert {"io", "detection", "crops", "models", "engines", "assurance", "video", "cli", "evaluation"} <= packages
    long = {str(p.relative_to(REPO)): n for p in [*PACKAGE.rglob("*.py"), *(REPO / "train").rglob("*.py")]
            if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def test_the_public_api_is_unchanged():
    import agegender

    for name in ("Estimator", "Face", "ConsensusEstimator", "annotate", "load_image", "AgeGenderError",
                 "InvalidImageError", "ImageTooLargeError", "WeightsError", "PRESETS", "get_preset"):
        assert getattr(agegender, name) is not None
    from agegender.cli import main
    from agegender.detection import FaceDetector
    from agegender.video import analyse_video

    assert callable(main) and callable(analyse_video) and FaceDetector.__module__ == "agegender.detection.detector"


@pytest.mark.parametrize("old,new", [("agegender.imageio", "agegender.io.images"),
                                     ("agegender.age_check", "agegender.assurance.age_check"),
                                     ("agegender.consensus", "agegender.assurance.consensus"),
                                     ("agegender.video_io", "agegender.io.video"),
                                     ("agegender.cli_options", "agegender.cli.options")])
def test_old_module_paths_still_import_with_a_warning(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(new in str(w.message) and w.category is DeprecationWarning for w in caught)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("agegender.no_such_module")
