"""The direction of imports: UI -> session -> engine -> models -> core, never back.

Every import counts, at module level or inside a function: a lazy import still ties the layers.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "editor"

# What each layer may import of the editor (prefixes of dotted module names). Entry points
# (editor.cli, editor.__main__) may import every layer. The composition root (editor.build) and the
# serving backend beside it (editor.serving: it builds the models in the replicas and assembles the
# app's engine over them) compose the models and the engine, never the session or the page.
ALLOWED = {
    "editor.core": ("editor.core",),
    "editor.models": ("editor.core", "editor.models"),
    "editor.engine": ("editor.core", "editor.models.base", "editor.engine"),
    "editor.session": ("editor.core", "editor.models.base", "editor.engine", "editor.session"),
    "editor.ui": ("editor.core", "editor.models.base", "editor.engine", "editor.session", "editor.ui"),
    "editor.build": ("editor.core", "editor.models", "editor.engine", "editor.serving"),
    "editor.serving": ("editor.core", "editor.models", "editor.engine", "editor.build", "editor.serving"),
}
NO_DEEP_LEARNING = ("editor.core", "editor.engine", "editor.session", "editor.models.base", "editor.models.registry")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it (dotted names, `from editor.x import y` as editor.x.y too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def layer(name: str) -> str | None:
    for prefix in ALLOWED:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_run_down_the_layers_only(path: Path) -> None:
    name = module_name(path)
    own = layer(name)
    if own is None:
        return  # an entry point: editor.cli, editor.__main__
    editor_imports = {i for i in imports(path) if i == "editor" or i.startswith("editor.")}
    # `from editor.models import base` names editor.models.base; the package itself is only a folder
    wrong = sorted(i for i in editor_imports
                   if not within(i, ALLOWED[own]) and i not in {"editor", "editor.models"}
                   and not (i == "editor.models" and own in ("editor.engine", "editor.session", "editor.ui")))
    assert not wrong, f"{name} ({own}) imports {wrong}: allowed are {ALLOWED[own]}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_only_the_ui_imports_gradio(path: Path) -> None:
    name = module_name(path)
    if within(name, ("editor.ui",)):
        return
    assert not {i for i in imports(path) if i.split(".")[0] in ("gradio", "gradio_client")}, name


@pytest.mark.parametrize("path", [p for p in MODULES if within(module_name(p), NO_DEEP_LEARNING)],
                         ids=lambda p: module_name(p))
def test_lower_layers_and_the_interfaces_never_import_torch(path: Path) -> None:
    deep = {i for i in imports(path) if i.split(".")[0] in ("torch", "torchvision", "diffusers", "transformers",
                                                           "segment_anything", "spandrel", "timm")}
    assert not deep, f"{module_name(path)} imports {sorted(deep)}"


def test_the_interfaces_load_neither_torch_nor_gradio() -> None:
    """What a client of a model served elsewhere imports: the interfaces, the registry and the engine."""
    code = ("import sys, editor.models.base, editor.models.registry, editor.engine.ops, editor.session.store; "
            "print(sorted(m for m in ('torch', 'gradio', 'diffusers', 'transformers') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
