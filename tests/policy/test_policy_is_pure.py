"""`notifier/policy/` is pure: it never reads the real clock and never touches Redis.

A static check over the source (nothing is imported or run): every module under
notifier/policy/ is parsed, and so is every module of `notifier` it imports, however
indirectly, with the packages that contain them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "notifier"
POLICY = PACKAGE / "policy"

#: Methods that read the real clock, on `datetime`, `date` or `time` objects.
CLOCK_READS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "time_ns"}
CLOCK_OWNERS = {"datetime", "date", "time"}
#: Modules that read the clock or talk to Redis: not imported by policy at all.
FORBIDDEN_MODULES = {"redis", "time", "notifier.timeutil"}


def policy_modules() -> list[Path]:
    return sorted(POLICY.rglob("*.py"))


def imported_modules(tree: ast.Module, path: Path) -> set[str]:
    """Dotted names of every module `tree` imports (absolute; relative ones resolved)."""
    names: set[str] = set()
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            # `from notifier.policy import refills` imports a module too.
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def module_file(name: str) -> Path | None:
    """The source file of a `notifier` module (or package), None for anything else."""
    parts = name.split(".")
    if parts[0] != "notifier":
        return None
    path = PACKAGE.parent.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def with_parents(name: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`, `a.b.c`]: importing a module runs its packages first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def clock_reads(tree: ast.Module) -> list[str]:
    """`datetime.now(...)`, `date.today()`, `datetime.datetime.utcnow()`, `utcnow()`, …"""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in CLOCK_READS:
            owner = func.value
            owner_name = (owner.id if isinstance(owner, ast.Name)
                          else owner.attr if isinstance(owner, ast.Attribute) else None)
            if owner_name in CLOCK_OWNERS:
                found.append(f"line {node.lineno}: {owner_name}.{func.attr}()")
        elif isinstance(func, ast.Name) and func.id == "utcnow":
            found.append(f"line {node.lineno}: utcnow()")
    return found


def redis_imports(names: set[str]) -> list[str]:
    return sorted(n for n in names if n == "redis" or n.startswith("redis."))


@pytest.mark.parametrize("path", policy_modules(), ids=lambda p: p.name)
def test_policy_never_reads_the_real_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assert clock_reads(tree) == [], f"{path.name} reads the clock; take `now` as an argument"
    names = imported_modules(tree, path)
    assert not names & FORBIDDEN_MODULES, f"{path.name} imports {names & FORBIDDEN_MODULES}"
    defined = {n.name for n in ast.walk(tree)
               if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert "utcnow" not in defined, f"{path.name} defines utcnow: it lives outside policy"
    imported = {alias.asname or alias.name for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) for alias in n.names}
    assert "utcnow" not in imported


def test_nothing_policy_imports_touches_redis() -> None:
    """Neither policy nor any `notifier` module it pulls in (however indirectly) imports
    redis, so planning can be run and tested without it."""
    seen: set[Path] = set()
    todo = policy_modules()
    offenders: dict[str, list[str]] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        names = imported_modules(tree, path)
        if redis_imports(names):
            offenders[str(path.relative_to(PACKAGE.parent))] = redis_imports(names)
        for name in names:
            for module in with_parents(name):
                found = module_file(module)
                if found is not None and found not in seen:
                    todo.append(found)
    assert offenders == {}
    assert PACKAGE / "ledger" / "records.py" in seen, "the walk follows policy's imports"
    assert PACKAGE / "ledger" / "store.py" not in seen


def test_the_check_finds_what_it_looks_for() -> None:
    """The checks themselves, on samples: each of these reads the clock or imports redis."""
    source = ("import redis\nfrom datetime import UTC, date, datetime\nimport datetime as dt\n"
              "a = datetime.now(UTC)\nb = date.today()\nc = dt.datetime.utcnow()\n"
              "d = utcnow()\n")
    tree = ast.parse(source)
    assert [r.split(":")[0] for r in clock_reads(tree)] == [
        "line 4", "line 5", "line 6", "line 7"]
    assert redis_imports(imported_modules(tree, POLICY / "sample.py")) == ["redis"]
    assert clock_reads(ast.parse("x = datetime.combine(day, at)\n")) == []
