"""`notifier console add-operator NAME`: sets an operator's console password (a new
operator, or a new password for one), in the operators file NOTIFIER_CONSOLE_OPERATORS_FILE
names. `notifier console reindex`: fills the indexes the console finds clients and their
records by, for records written before those indexes existed."""

from __future__ import annotations

import argparse
import getpass
import sys

from notifier.cli.common import open_runtime, shell_path
from notifier.config import Settings
from notifier.console.operators import (
    MIN_PASSWORD_CHARS,
    Operator,
    check_name,
    hash_password,
    load_operators,
    write_operators,
)
from notifier.errors import ConfigError, UsageError


def read_password() -> str:
    """The new password: asked twice on a terminal (echo off), else the first line of
    standard input (for scripts and tests). Raises `UsageError` when the two differ or it
    is shorter than `MIN_PASSWORD_CHARS`."""
    if sys.stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("The same again: ") != password:
            raise UsageError("console add-operator: the two passwords differ; nothing changed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsageError(f"console add-operator: a password needs at least "
                         f"{MIN_PASSWORD_CHARS} characters; nothing changed")
    return password


def cmd_console_add_operator(args: argparse.Namespace, settings: Settings) -> None:
    """Add operator `args.name`, or set their password again, and say where it was written.
    The file is read and validated first: a bad one is reported, not overwritten."""
    try:
        name = check_name(args.name)
    except ConfigError as exc:
        raise UsageError(f"console add-operator: {exc}") from None
    path = settings.console_operators_file
    operators = load_operators(path)
    password = read_password()
    existed = name in operators
    operators[name] = Operator(name, hash_password(password))
    write_operators(path, operators)
    print(f"{'password changed for' if existed else 'added'} operator {name} in "
          f"{shell_path(path)} (readable by its owner only); a running web reads it at the "
          "next sign-in")


def cmd_console_reindex(args: argparse.Namespace, settings: Settings) -> None:
    """Index every stored client by email address and every appointment, prescription,
    refill request and message under its client (`RecordStore.reindex_clients`), and say
    how many. It only adds: safe to run again, and while the service runs."""
    with open_runtime(settings) as runtime:
        clients, entities, unreadable = runtime.store.reindex_clients()
    print(f"indexed {clients} client email address{'es' if clients != 1 else ''} and "
          f"{entities} appointment, prescription, refill request and message record"
          f"{'s' if entities != 1 else ''}"
          + (f"; {unreadable} record{'s' if unreadable != 1 else ''} no longer parse and "
             "were skipped" if unreadable else ""))
