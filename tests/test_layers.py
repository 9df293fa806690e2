"""The package's imports point down the layers of docs/architecture.md, with no circles, and the scripts use
only public names: a check that fails the day either comes back."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "nowcast"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("nowcast", "nowcast.errors", "nowcast.units"),
    ("nowcast.config", "nowcast.leads"),
    ("nowcast.runtime", "nowcast.transforms"),
    ("nowcast.io",),
    ("nowcast.motion",),
    ("nowcast.nowcasts",),
    ("nowcast.models", "nowcast.plots", "nowcast.synth"),
    ("nowcast.forecast", "nowcast.ensemble_forecast"),
    ("nowcast.verification",),
    ("nowcast.training", "nowcast.predict"),
    ("nowcast.watch",),
    ("nowcast.cli", "nowcast.__main__"),
)
"""From the bottom up: a module may import from its own layer and the ones below, never from above."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best = (-1, -1)  # (length of the longest matching prefix, layer)
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), rank)
    assert best[1] >= 0, f"{module}: in no layer of LAYERS (add it, and to docs/architecture.md)"
    return best[1]


def _imports(path: Path, module: str) -> set[str]:
    """Every nowcast module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in ("nowcast", "scripts")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] not in ("nowcast", "scripts"):
                continue
            for alias in node.names:  # ``from nowcast.io import atomic``: a module, or a name of one
                sub = f"{base}.{alias.name}"
                found.add(sub if (REPO_ROOT / Path(*sub.split("."))).with_suffix(".py").is_file() else base)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, _module_name(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{mod} (layer {_layer(mod)}) imports {dep} (layer {_layer(dep)})"
        for mod, deps in _graph().items()
        for dep in sorted(deps)
        if dep.split(".")[0] == "scripts" or _layer(dep) > _layer(mod)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_circles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in done:
            return
        for dep in sorted(graph.get(node, ())):
            if dep != node and not node.startswith(dep + "."):  # a module's own package is loaded first
                visit(dep, [*stack, node], done)
        done.add(node)

    done: set[str] = set()
    for module in graph:
        visit(module, [], done)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_scripts_use_only_public_names_of_the_package() -> None:
    private = []
    for path in sorted((REPO_ROOT / "scripts").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nowcast"):
                private += [
                    f"{path.relative_to(REPO_ROOT)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert not private, "private names imported by scripts:\n" + "\n".join(private)


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself: an import of the CLI inside a function of the io layer is found and is upward."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from nowcast.cli import app\n    from nowcast.io import atomic\n")
    found = _imports(probe, "nowcast.io.probe")
    assert found == {"nowcast.cli", "nowcast.io.atomic"}
    assert _layer("nowcast.cli") > _layer("nowcast.io.probe")
