"""Names in the docs of the code still name something: every dotted `notifier.x.y` in a
docstring or comment under notifier/ is an importable module, or an attribute of one; and
every `Class.attribute` in backticks, for a class of notifier/, is an attribute of it."""

from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "notifier"
DOTTED = re.compile(r"\bnotifier(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
CLASS_ATTRIBUTE = re.compile(r"`([A-Z][A-Za-z0-9]*)\.([A-Za-z_][A-Za-z0-9_]*)(?:\(\))?`")


def docs_and_comments(source: str) -> list[tuple[int, str]]:
    """(line, text) of every docstring and comment in `source`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        # A bare string statement: the docstring of a module, class or function, or of the
        # attribute assigned just before it.
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            found.append((node.lineno, node.value.value))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.append((token.start[0], token.string))
    return found


def resolves(dotted: str) -> bool:
    """Whether `dotted` is a module, or a module followed by attributes it has."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def mentions() -> list[tuple[str, str]]:
    """(where, dotted name) of every mention under notifier/."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in docs_and_comments(path.read_text(encoding="utf-8")):
            for name in DOTTED.findall(text):
                found.append((f"{path.relative_to(PACKAGE.parent)}:{line}", name))
    return found


def classes() -> dict[str, str]:
    """The module defining each class of notifier/, by class name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                found[node.name] = module.removesuffix(".__init__")
    return found


def class_mentions() -> list[tuple[str, str, str]]:
    """(where, class, attribute) of every backticked `Class.attribute` of a notifier class."""
    known = classes()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in docs_and_comments(path.read_text(encoding="utf-8")):
            for cls, attribute in CLASS_ATTRIBUTE.findall(text):
                if cls in known:
                    found.append((f"{path.relative_to(PACKAGE.parent)}:{line}", cls, attribute))
    return found


def has_attribute(module: str, cls: str, attribute: str) -> bool:
    """Whether the class has the attribute: a method or class attribute, a dataclass field
    or a pydantic field."""
    target = getattr(importlib.import_module(module), cls)
    return (hasattr(target, attribute)
            or attribute in getattr(target, "__dataclass_fields__", {})
            or attribute in getattr(target, "model_fields", {}))


@pytest.mark.parametrize(("where", "cls", "attribute"), sorted(set(class_mentions())))
def test_every_class_attribute_in_the_docs_exists(where: str, cls: str, attribute: str) -> None:
    assert has_attribute(classes()[cls], cls, attribute), (
        f"{where} names {cls}.{attribute}, which does not exist")


def test_the_scan_finds_mentions() -> None:
    names = {name for _, name in mentions()}
    assert "notifier.ledger.turns" in names, "docstrings and comments are read"
    assert ("Store", "apply_event") in {(c, a) for _, c, a in class_mentions()}


@pytest.mark.parametrize(("where", "name"), sorted(set(mentions())))
def test_every_dotted_name_in_the_docs_resolves(where: str, name: str) -> None:
    assert resolves(name), f"{where} names {name}, which does not exist"


def test_resolves_tells_a_missing_name() -> None:
    assert resolves("notifier.ledger.store.Store.apply_event")
    assert resolves("notifier.delivery.channels")
    assert not resolves("notifier.delivery.channels.build")
    assert not resolves("notifier.nowhere")
    assert not has_attribute("notifier.ledger.store", "Store", "apply_plan")
    assert has_attribute("notifier.policy.figures", "Policy", "opening_wait")


OUTSIDE = re.compile(r"\bSPEC\b|DESIGN\.md|\.\./shared")


def test_the_code_says_its_rules_instead_of_pointing_outside_the_repo() -> None:
    """No docstring or comment under notifier/ sends the reader to a file outside the repo
    (`SPEC §3`, `DESIGN.md §1`): the rule is said where it is applied."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text.strip()[:60]}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for line, text in docs_and_comments(path.read_text(encoding="utf-8"))
             if OUTSIDE.search(text)]
    assert found == []
