"""The packages' dependencies point one way (README, "Package map"); read from every import in the source."""

from __future__ import annotations

import ast
import collections

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("intake", "features", "tfrecords", "models", "data_prep", "train", "serving", "configs")
# What each package may import of this project's (besides `tf_startup`, which every binary imports first).
ALLOWED = {
    "features": set(),  # The feature definition: numpy and TensorFlow only.
    "intake": {"tfrecords.splits"},  # The catalog's `split` column names the dataset's splits.
    "tfrecords": {"features"},  # The schema stores log-mels; it knows no models.
    "models": {"features"},  # Nothing of ours but the feature definition.
    "data_prep": {"intake", "features", "tfrecords"},  # Neither models, train nor serving.
    "train": {"intake", "features", "tfrecords", "models", "data_prep", "configs"},
    "serving": {"intake", "features", "tfrecords", "models", "data_prep"},  # Never train.
    "configs": set(),
}


def _imports_of(package: str) -> dict[str, set[str]]:
    """`{imported module of this project: the files importing it}`, function-level imports included."""
    found = collections.defaultdict(set)
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in PACKAGES and name.split(".")[0] != package:
                    found[name].add(str(path.relative_to(REPO_ROOT)))
    return found


def _allowed(name: str, allowed: set[str]) -> bool:
    return any(name == rule or name.startswith(rule + ".") for rule in allowed)


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_forward(package):
    imports = _imports_of(package)
    assert package in ("features", "configs") or imports, "nothing found: the walk is broken"
    wrong = {name: sorted(files) for name, files in imports.items() if not _allowed(name, ALLOWED[package])}
    assert not wrong, f"{package} imports what it must not: {wrong}"


def test_the_check_sees_a_backward_import(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.py").write_text("def f():\n    from serving.retrieval import recommender\n")
    monkeypatch.setattr("tests.test_package_layout.REPO_ROOT", tmp_path)
    assert _imports_of("models") == {"serving.retrieval": {"models/bad.py"}}
    assert not _allowed("serving.retrieval", ALLOWED["models"])


def test_no_test_module_imports_another_or_a_benchmark():
    """What tests share is a fixture or a support module; only the benchmarks' own tests import benchmarks."""
    wrong = []
    for path in sorted((REPO_ROOT / "tests").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                module = node.module
                if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_"):
                    wrong.append(f"{relative}: {module}")
                if module.split(".")[0] == "benchmarks" and relative.parts[1] != "benchmarks":
                    wrong.append(f"{relative}: {module}")
    assert not wrong
