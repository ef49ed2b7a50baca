"""The layering of docs/architecture.md, checked on the source: the core (ct, triage, stats, io)
reads no environment variable, imports neither argparse nor tqdm nor the faces, and its messages
name no command-line flag; ct and triage do not import each other, stats (the statistics both
report) imports neither, io imports none of them; train does not import the command line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pulmo"
CORE = ("ct", "triage", "stats", "io")
MAY_IMPORT = {"ct": {"ct", "stats", "io"}, "triage": {"triage", "stats", "io"}, "stats": {"stats", "io"}, "io": {"io"}}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (PKG / pkg).rglob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


@pytest.mark.parametrize("path", _modules(*CORE), ids=lambda p: str(p.relative_to(PKG)))
def test_core_module_has_no_face_in_it(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = _imports(tree)
    assert not {i for i in imports if i.split(".")[0] in ("argparse", "tqdm")}, "argparse/tqdm belong to the CLI"
    assert not {i for i in imports if i.startswith(("pulmo.cli", "pulmo.train", "pulmo.web"))}
    own = path.relative_to(PKG).parts[0]
    layers = {i.split(".")[1] for i in imports if i.startswith("pulmo.") and i.split(".")[1] in MAY_IMPORT}
    assert layers <= MAY_IMPORT[own], f"pulmo.{own} imports pulmo.{layers - MAY_IMPORT[own]}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            pytest.fail(f"line {node.lineno}: the core reads no environment variable (configure it through options)")
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            hit = FLAG.search(node.value)
            assert hit is None, f"line {node.lineno}: a message names the flag {hit.group()}"


@pytest.mark.parametrize("path", _modules("train"), ids=lambda p: str(p.relative_to(PKG)))
def test_training_does_not_import_the_command_line(path):
    imports = _imports(ast.parse(path.read_text(encoding="utf-8")))
    assert not {i for i in imports if i.startswith("pulmo.cli")}


def test_no_private_names_imported_across_modules():
    """``from pulmo.x import _name``: a module relying on another's private helper."""
    offenders = []
    for path in _modules(*CORE, "cli", "train"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pulmo"):
                offenders += [f"{path.relative_to(PKG)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []
