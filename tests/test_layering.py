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
