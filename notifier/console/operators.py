"""The console's operators, as data: a TOML file (NOTIFIER_CONSOLE_OPERATORS_FILE, by
default `var/console/operators.toml`) of

    [[operator]]
    name = "ana"
    password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."

read and validated at start-up (`load_operators`, one-line `ConfigError` naming the
operator and key), written by `notifier console add-operator` (`write_operators`, atomic,
mode 0600). Passwords are checked with argon2-cffi (`verify_password`) and never logged.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from notifier.errors import ConfigError

#: An operator's name: what the audit log records, so plain and short.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
#: Shorter passwords are refused by `notifier console add-operator`.
MIN_PASSWORD_CHARS = 12

#: argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB, 3 passes).
_HASHER = PasswordHasher()


@dataclass(frozen=True)
class Operator:
    """One person who may sign in to the console; the hash hides in `repr`."""

    name: str
    password_hash: str = field(repr=False)


def check_name(name: str) -> str:
    """`name` if it is a valid operator name; raises `ConfigError` otherwise."""
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"operator name {name!r}: 1 to 64 letters, digits, '.', '_', '@' "
                          "or '-', starting with a letter or digit")
    return name


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (a `$argon2id$...` string)."""
    return _HASHER.hash(password)


def parse_operators(text: str, where: str) -> dict[str, Operator]:
    """The operators in TOML `text`, by name; `where` names the file in errors. Raises
    `ConfigError` (one line naming the operator and key) for a wrong key, a bad or
    repeated name, or a value that is not an argon2id hash."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    unknown = set(data) - {"operator"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (only [[operator]])")
    entries = data.get("operator", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: 'operator' must be an array of tables ([[operator]])")
    operators: dict[str, Operator] = {}
    for number, entry in enumerate(entries, start=1):
        label = f"{where}: operator {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{label}: must be a table")
        name = entry.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"{label}: name: required, a string")
        label = f"{where}: operator {name!r}"
        check_name_in(name, label)
        extra = set(entry) - {"name", "password_hash"}
        if extra:
            raise ConfigError(f"{label}: unknown key {sorted(extra)[0]!r}")
        if name in operators:
            raise ConfigError(f"{label}: name: listed twice")
        password_hash = entry.get("password_hash")
        if not isinstance(password_hash, str) or not password_hash.startswith("$argon2id$"):
            raise ConfigError(f"{label}: password_hash: must be an argon2id hash "
                              "($argon2id$...; see `notifier console add-operator`)")
        try:
            extract_parameters(password_hash)
        except InvalidHashError:
            raise ConfigError(f"{label}: password_hash: not a valid argon2id hash") from None
        operators[name] = Operator(name, password_hash)
    return operators


def check_name_in(name: str, label: str) -> None:
    """`check_name`, its error prefixed with `label` (where the name was read)."""
    try:
        check_name(name)
    except ConfigError as exc:
        raise ConfigError(f"{label}: name: {exc}") from None


def load_operators(path: Path) -> dict[str, Operator]:
    """The operators in the file at `path`, by name; none when there is no such file.
    Raises `ConfigError` as `parse_operators` does, or when the file cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    return parse_operators(text, str(path))


@cache
def _dummy_hash() -> str:
    """Checked against when the name is unknown, so an unknown name costs what a known one
    does (no telling names apart by the answer's time). Made on first use: a hash takes
    64 MiB and tens of milliseconds, which no other command should pay at import."""
    return _HASHER.hash("not a password of anyone's")


def verify_password(operators: dict[str, Operator], name: str, password: str) -> Operator | None:
    """The operator `name` if `password` is theirs, else None (unknown name included, at the
    same cost). argon2-cffi compares in constant time; a hash made with older parameters
    still verifies (rehashing it is left to `add-operator`)."""
    operator = operators.get(name)
    try:
        _HASHER.verify(operator.password_hash if operator else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    return operator


def render_operators(operators: dict[str, Operator]) -> str:
    """The TOML text of `operators`, sorted by name. Names and hashes are ASCII without
    quotes or backslashes (`NAME_RE`, argon2's encoding), so they go in basic strings
    as they are."""
    lines = ["# Console operators: `notifier console add-operator NAME` sets a password.\n"]
    for name in sorted(operators):
        lines.append(f'\n[[operator]]\nname = "{name}"\n'
                     f'password_hash = "{operators[name].password_hash}"\n')
    return "".join(lines)


def write_operators(path: Path, operators: dict[str, Operator]) -> None:
    """Write `operators` to `path` at once (a file beside it, then renamed over it), readable
    by its owner only; the directory is made (mode 0700) if need be."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".operators-", suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp makes it 0600
            f.write(render_operators(operators))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
