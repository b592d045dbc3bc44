"""The operators file: parsed and validated with one-line errors, written atomically with
mode 0600, passwords verified with argon2id."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from notifier.console.operators import (
    Operator,
    load_operators,
    parse_operators,
    verify_password,
    write_operators,
)
from notifier.errors import ConfigError
from tests.console.conftest import NAME, PASSWORD


def test_written_operators_read_back_and_verify(tmp_path: Path, ana_hash: str):
    path = tmp_path / "console" / "operators.toml"
    write_operators(path, {NAME: Operator(NAME, ana_hash), "bo": Operator("bo", ana_hash)})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    operators = load_operators(path)
    assert sorted(operators) == ["ana", "bo"]
    assert verify_password(operators, NAME, PASSWORD) == operators[NAME]
    assert verify_password(operators, NAME, PASSWORD + "x") is None
    assert verify_password(operators, "nobody", PASSWORD) is None
    assert ana_hash not in repr(operators[NAME])
    assert [p.name for p in path.parent.iterdir()] == ["operators.toml"]  # no leftovers


def test_a_missing_file_is_no_operators(tmp_path: Path):
    assert load_operators(tmp_path / "absent.toml") == {}


@pytest.mark.parametrize(("text", "error"), [
    ("[[operator]\n", "f.toml: not valid TOML"),
    ('[operators]\nname = "x"\n', "f.toml: unknown key 'operators'"),
    ('[[operator]]\npassword_hash = "$argon2id$"\n', "f.toml: operator 1: name: required"),
    ('[[operator]]\nname = "a b"\npassword_hash = "x"\n', "f.toml: operator 'a b': name:"),
    ('[[operator]]\nname = "ana"\npassword = "hunter2"\npassword_hash = "x"\n',
     "f.toml: operator 'ana': unknown key 'password'"),
    ('[[operator]]\nname = "ana"\n', "f.toml: operator 'ana': password_hash: must be"),
    ('[[operator]]\nname = "ana"\npassword_hash = "$2b$12$abcdefghijklmnopqrstuv"\n',
     "f.toml: operator 'ana': password_hash: must be an argon2id hash"),
    ('[[operator]]\nname = "ana"\npassword_hash = "$argon2id$v=19$nonsense"\n',
     "f.toml: operator 'ana': password_hash: not a valid argon2id hash"),
])
def test_a_bad_file_is_one_line_naming_the_operator_and_key(text: str, error: str):
    with pytest.raises(ConfigError) as raised:
        parse_operators(text, "f.toml")
    assert str(raised.value).startswith(error), str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_name_listed_twice_is_refused(ana_hash: str):
    entry = f'[[operator]]\nname = "ana"\npassword_hash = "{ana_hash}"\n'
    with pytest.raises(ConfigError, match="operator 'ana': name: listed twice"):
        parse_operators(entry * 2, "f.toml")
