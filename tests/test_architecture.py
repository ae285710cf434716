"""The import rules of docs/architecture.md, checked on the source (issue 15): no import circles,
the model core imports nothing from the layers above it, package imports sit at the top of a module
(only the CLI defers its sub-commands' imports), no module imports another's private names, and the
architecture page names every module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vitpose_hf"

#: what transformers copies beside a saved checkpoint, and what it may import (stdlib, torch, numpy,
#: transformers, safetensors): the model, its config, the processor and their helpers
CORE = {
    "attention", "checkpoint_keys", "configuration_vitpose", "geometry", "heatmaps", "image_io", "image_processing_vitpose",
    "keypoint_schemas", "losses", "modeling_vitpose", "modeling_vitpose_mae", "saved_code", "version",
    "window_attention",
}  # fmt: skip
#: the model's own closure: no processor, data, training, evaluation, pipeline or detector code
MODEL = {"modeling_vitpose", "modeling_vitpose_mae", "configuration_vitpose"}
MODEL_MAY_IMPORT = {
    "attention", "checkpoint_keys", "configuration_vitpose", "heatmaps", "keypoint_schemas", "losses",
    "modeling_vitpose", "saved_code", "version", "window_attention",
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports():
    """`{module: {imported module}}` for imports at module level, and `[(module, target, line)]` for
    package imports inside functions (`""` is the package itself)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    top: dict[str, set[str]] = {m: set() for m in modules}
    inner: list[tuple[str, str, int]] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        module_level = {id(n) for n in tree.body}
        module_level |= {id(c) for n in tree.body if isinstance(n, (ast.If, ast.Try)) for c in ast.walk(n)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                stem = ".".join(base + ([node.module] if node.module else []))
                targets = [stem] if node.module else [f"{stem}.{a.name}".strip(".") for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vitpose_hf":
                targets = [node.module.partition(".")[2]]
            elif isinstance(node, ast.Import):
                targets = [a.name.partition(".")[2] for a in node.names if a.name.split(".")[0] == "vitpose_hf"]
            else:
                continue
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target not in modules or target == name:
                    continue
                if id(node) in module_level:
                    top[name].add(target)
                else:
                    inner.append((name, target, node.lineno))
    return modules, top, inner


def test_no_import_circles():
    _, top, _ = _imports()
    state: dict[str, int] = {}
    circles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(top[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(top):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_model_imports_nothing_from_the_layers_above_it():
    _, top, inner = _imports()
    for name in MODEL:
        assert top[name] <= MODEL_MAY_IMPORT, (name, top[name] - MODEL_MAY_IMPORT)
    assert [(m, t) for m, t, _ in inner if m in MODEL] == []
    for name in CORE:  # the copied files reach only each other
        assert top[name] <= CORE, (name, top[name] - CORE)


def test_package_imports_are_at_the_top():
    _, _, inner = _imports()
    # the CLI imports a sub-command's modules when that sub-command runs, so `vitpose-hf --help` and
    # `predict` do not pay for training or export imports
    assert [(m, t, line) for m, t, line in inner if m != "cli"] == []


def test_no_module_imports_another_modules_private_names():
    """A helper two modules share has a public name in the module that owns it (`from .x import _y`
    across modules is refused; private names within a module are fine)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    private = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            from_package = isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").split(".")[0] == "vitpose_hf"
            )
            if from_package:
                private += [
                    (name, node.lineno, node.module, a.name)
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert private == []


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules, _, _ = _imports()
    named = lambda m: f"`{m}`" in page or f"`{m.rpartition('.')[2]}`" in page or f"`{m}." in page  # noqa: E731
    missing = [m for m in modules if m and not named(m)]
    assert missing == []
