"""`notifier console add-operator NAME`, run as a process: the password from standard input
(not a terminal), too short refused, the hash written then good for signing in."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from notifier.config import PROJECT_ROOT
from notifier.console.operators import load_operators, verify_password
from tests.console.test_routes import sign_in

pytestmark = pytest.mark.slow


def add_operator(name: str, stdin: str, cwd: Path,
                 operators_file: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), clean.get("PYTHONPATH")]))
    env = {**clean, "PYTHONPATH": path, "NOTIFIER_VAR_DIR": str(cwd / "var"),
           "NOTIFIER_CONSOLE_OPERATORS_FILE": str(operators_file)}
    return subprocess.run([sys.executable, "-m", "notifier", "console", "add-operator", name],
                          input=stdin, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_add_operator_writes_a_hash_that_then_signs_in(tmp_path: Path, operators_file: Path,
                                                        client: Any):
    added = add_operator("bo", "a long enough password\n", tmp_path, operators_file)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added operator bo in var/console/operators.toml")
    assert "a long enough password" not in added.stdout + added.stderr
    assert stat.S_IMODE(operators_file.stat().st_mode) == 0o600
    operators = load_operators(operators_file)
    assert sorted(operators) == ["ana", "bo"]  # the one there before is kept
    assert verify_password(operators, "bo", "a long enough password") is not None
    # The running app reads the file again at sign-in: no restart needed.
    assert sign_in(client, "bo", "a long enough password").status_code == 303
    assert "Signed in as <strong>bo</strong>" in client.get("/console/").text
    again = add_operator("bo", "another long password\n", tmp_path, operators_file)
    assert again.stdout.startswith("password changed for operator bo"), again.stderr
    assert verify_password(load_operators(operators_file), "bo", "a long enough password") \
        is None


def test_a_short_password_or_a_bad_name_changes_nothing(tmp_path: Path, operators_file: Path):
    before = operators_file.read_bytes()
    short = add_operator("bo", "short\n", tmp_path, operators_file)
    assert short.returncode == 2
    assert short.stderr == ("notifier: console add-operator: a password needs at least 12 "
                            "characters; nothing changed\n")
    bad = add_operator("bo bo", "a long enough password\n", tmp_path, operators_file)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "operator name 'bo bo'" in bad.stderr
    assert operators_file.read_bytes() == before
