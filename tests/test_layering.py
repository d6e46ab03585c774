"""The dependency direction of DESIGN.md holds: core layers never import the web or Redis."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "authgate"
CORE = [
    "crypto",
    "verifiers",
    "policy",
    "tokens",
    "stores/base.py",
    "stores/memory.py",
    "pipeline.py",
    "models.py",
    "errors.py",
    "config",
]


def imports(path: Path) -> set[str]:
    """Modules ``path`` imports; ``from a import b`` counts as ``a`` and ``a.b`` (b may be a
    module: ``from authgate.stores import redis``)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def core_files() -> list[Path]:
    files: list[Path] = []
    for entry in CORE:
        target = SRC / entry
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return files


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_core_never_imports_aiohttp_or_redis(path: Path) -> None:
    """crypto/, verifiers/, policy/, tokens/, stores/base and the pipeline stay framework-free."""
    bad = {
        m
        for m in imports(path)
        if m.split(".")[0] in {"aiohttp", "redis"}
        or m.startswith(("authgate.web", "authgate.stores.redis."))
        or m == "authgate.stores.redis"
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_only_stores_redis_imports_redis() -> None:
    """redis is imported by the modules of the stores/redis/ package alone."""
    package = Path("stores/redis")
    users = [
        p.relative_to(SRC)
        for p in SRC.rglob("*.py")
        if any(m.split(".")[0] == "redis" for m in imports(p))
    ]
    assert users, "nothing imports redis: the check would pass vacuously"
    assert [p for p in users if p.parent != package] == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module loads or type-checks: top level, and inside module-level
    ``if`` (``TYPE_CHECKING`` included) and ``try`` blocks; not those inside functions."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            found += _module_level_imports(node.body) + _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse):
                found += _module_level_imports(block)
            found += _module_level_imports(node.finalbody)
    return found


def import_graph() -> dict[str, set[str]]:
    """authgate module -> the authgate modules it imports at module level.

    ``from package import name`` counts as importing ``package.name`` when that is a
    module, else ``package``.
    """
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name in modules)
                continue
            base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            if node.level:
                prefix = base[: len(base) - node.level + 1]
                module = ".".join([*prefix, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                if f"{module}.{alias.name}" in modules:
                    targets.add(f"{module}.{alias.name}")
                elif module in modules:
                    targets.add(module)
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (``[a, b, ..., a]``), or ``None`` (iterative DFS)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        pending = [iter(sorted(graph[start]))]
        while pending:
            target = next(pending[-1], None)
            if target is None:
                pending.pop()
                done.add(path.pop())
            elif target in path:
                return [*path[path.index(target) :], target]
            elif target not in done:
                path.append(target)
                pending.append(iter(sorted(graph.get(target, ()))))
    return None


def test_find_cycle_finds_a_cycle() -> None:
    """The checker itself: a cycle, including one through a TYPE_CHECKING-only edge, is found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_type_checking_imports_are_edges() -> None:
    """Imports under ``if TYPE_CHECKING:`` count; imports inside functions do not."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from authgate.policy.rules import CompiledRule\n"
        "def f():\n    import authgate.web.app\n"
    )
    modules = {n.module for n in _module_level_imports(tree.body) if isinstance(n, ast.ImportFrom)}
    assert modules == {"typing", "authgate.policy.rules"}


def test_no_import_cycles() -> None:
    """The modules of src/authgate import one another one way only."""
    graph = import_graph()
    assert "authgate.models" in graph and graph["authgate.policy.rules"]  # the graph is real
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def _calls(path: Path) -> list[tuple[str, int]]:
    """Names called in ``path`` (``f(...)`` as ``f``, ``x.f(...)`` as ``.f``), with lines."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                found.append((node.func.id, node.lineno))
            elif isinstance(node.func, ast.Attribute):
                found.append(("." + node.func.attr, node.lineno))
    return found


def test_doors_and_endpoints_never_call_verifiers() -> None:
    """web/ turns HTTP into a context and a decision back into HTTP: only the gate consults
    verifiers (one decision path, every decision counted and logged)."""
    bad = [
        f"{path.relative_to(SRC)}:{line} calls {name}"
        for path in sorted((SRC / "web").rglob("*.py"))
        for name, line in _calls(path)
        if name in {".verify", ".extract", ".verify_jws", ".consume", ".consume_limited"}
    ]
    assert not bad, bad


CONSTRUCTED_BY_THE_ROOT = {
    "build_stores",
    "RedisStores",
    "MemoryStores",
    "Gate",
    "BPCVerifier",
    "HMACProofVerifier",
    "JWTBearerVerifier",
    "build_key_manager",
    "TokenIssuer",
    "FleetSessions",
    "WalletSignIn",
    "Operator",
    "UserService",
    "RevocationList",
    "PairService",
    "ApiKeyService",
}


def test_only_the_composition_root_constructs_services() -> None:
    """Stores, verifiers, the gate and the services are built in compose.py alone (the
    stores package builds its own back ends)."""
    bad = [
        f"{path.relative_to(SRC)}:{line} calls {name}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "compose.py" and path.relative_to(SRC).parts[0] != "stores"
        for name, line in _calls(path)
        if name in CONSTRUCTED_BY_THE_ROOT
    ]
    assert not bad, bad
