"""Every public function and method of the ledger and of delivery has a docstring, saying
what it returns and what it raises (the issue "Typed outcomes and documented shapes").

Public: a name without a leading underscore, on a public class (dunders are left out by
that rule). The exceptions are few and explicit: a `@property` whose body is only
`return self.<field>`, and the names in `EXEMPT`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("notifier/ledger", "notifier/delivery", "notifier/delivery/channels")
#: `path:qualified name` of public functions that need no docstring of their own (a
#: Lua-script wrapper's method documented on its class, say). Keep this short.
EXEMPT: frozenset[str] = frozenset()

Function = ast.FunctionDef | ast.AsyncFunctionDef


def returns_a_field(node: Function) -> bool:
    """Whether `node` is a `@property` that only returns an attribute of `self`."""
    is_property = any(isinstance(d, ast.Name) and d.id == "property"
                      for d in node.decorator_list)
    body = node.body
    return (is_property and len(body) == 1 and isinstance(body[0], ast.Return)
            and isinstance(body[0].value, ast.Attribute)
            and isinstance(body[0].value.value, ast.Name) and body[0].value.value.id == "self")


def public_functions(tree: ast.Module) -> list[tuple[str, Function]]:
    """(qualified name, node) of every public function, and public method of a public
    class (nested classes included), of a module."""
    found: list[tuple[str, Function]] = []

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if not isinstance(node, Function | ast.ClassDef) or node.name.startswith("_"):
                continue
            if isinstance(node, ast.ClassDef):
                walk(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, Function):
                found.append((prefix + node.name, node))

    walk(tree.body, "")
    return found


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).glob("*.py"))


def test_the_packages_are_found() -> None:
    assert len(modules()) > 20
    names = [name for path in modules()
             for name, _ in public_functions(ast.parse(path.read_text(encoding="utf-8")))]
    assert "Schedule.begin" in names and "TwilioSMS.send" in names


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_public_function_has_a_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(ROOT)
    assert ast.get_docstring(tree), f"{where}: no module docstring"
    missing = [f"{where}:{node.lineno} {name}" for name, node in public_functions(tree)
               if not ast.get_docstring(node) and not returns_a_field(node)
               and f"{where}:{name}" not in EXEMPT]
    assert not missing, "public functions without a docstring:\n" + "\n".join(missing)


def test_the_exemptions_still_name_something() -> None:
    known = {f"{path.relative_to(ROOT)}:{name}" for path in modules()
             for name, _ in public_functions(ast.parse(path.read_text(encoding="utf-8")))}
    assert not EXEMPT - known, f"stale exemptions: {sorted(EXEMPT - known)}"
