"""The wheel as a user installs it: built from this checkout, installed into a fresh
virtualenv, and run from a directory that is not the checkout, with nothing pointing back
at it (no PYTHONPATH, no NOTIFIER_* settings). templates/, schedules/ and examples/ must
come from the wheel itself."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx
import pytest

from notifier.config import PROJECT_ROOT
from notifier.ledger.embedded_redis import EmbeddedRedis, free_port
from tests.service import wait_for

#: The installed wheel runs the whole service, and building it is slow.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: The top-level directories the wheel carries, and where it puts them.
SHIPPED = ("templates", "schedules", "examples")
DATA = "notifier/_data"

#: What a build must not copy from the checkout: the venv, runtime state, build output,
#: caches, and `.env` (secrets).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "*.egg-info",
                                    "__pycache__", ".*_cache", ".hypothesis", ".env")


def _release(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in re.findall(r"\d+", version(name))[:2])
    except PackageNotFoundError:
        return ()


def builds_offline() -> bool:
    """Whether this environment's setuptools can build the wheel itself (pyproject asks for
    >= 68; before 70.1 its bdist_wheel comes from the `wheel` package), so pip need not
    fetch a build backend into an isolated environment."""
    setuptools = _release("setuptools")
    return setuptools >= (70, 1) or (setuptools >= (68,) and _release("wheel") >= (0, 38))


def checkout_files(directory: str) -> dict[str, bytes]:
    """The files of a top-level directory of the checkout, by path relative to it."""
    root = PROJECT_ROOT / directory
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                          for part in path.relative_to(root).parts)}


def run(*args: str | Path, **kw) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                            timeout=300, **kw)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout (building in place would leave build/
    behind in it), symlinks kept as they are in git."""
    work = tmp_path_factory.mktemp("wheel-build")
    source = work / "source"
    shutil.copytree(PROJECT_ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    isolation = ["--no-build-isolation"] if builds_offline() else []
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation,
        "-w", work / "dist", source)
    [built] = (work / "dist").glob("notifier-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed, and nothing of the checkout.

    Its dependencies are not installed again (slow, and needs the network): a `.pth` file
    appends the site-packages of the environment running the tests *after* the venv's own,
    so `notifier` is the wheel's, while redis, fastapi and the rest are found there. A
    directory named in a `.pth` file is not scanned for `.pth` files of its own, so an
    editable install of the checkout living there stays inert."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
        "--no-index", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    dependencies = dict.fromkeys([sysconfig.get_paths()["purelib"],
                                  sysconfig.get_paths()["platlib"]])
    (site / "_notifier_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return venv


@pytest.fixture
def user_env(venv: Path) -> dict[str, str]:
    """A shell with the venv activated, and nothing pointing at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NOTIFIER_", "TWILIO_", "SENDGRID_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv)}


def site_packages(venv: Path) -> Path:
    [site] = venv.glob("lib/python*/site-packages")
    return site


def test_the_wheel_carries_the_top_level_templates_schedules_and_examples(wheel):
    with zipfile.ZipFile(wheel) as archive:
        for directory in SHIPPED:
            prefix = f"{DATA}/{directory}/"
            shipped = {info.filename.removeprefix(prefix): archive.read(info)
                       for info in archive.infolist()
                       if info.filename.startswith(prefix) and not info.is_dir()}
            expected = checkout_files(directory)
            assert expected, f"nothing under {directory}/ in the checkout"
            # Every file, as it is in the checkout (a regular file, not a link to it).
            assert sorted(shipped) == sorted(expected), directory
            assert shipped == expected, directory


def test_the_installed_package_reads_its_own_copies_not_the_checkout(venv, user_env,
                                                                     tmp_path):
    shown = run(venv / "bin" / "python", "-c",
                "import notifier, notifier.config as c; s = c.Settings.from_env(); "
                "print(notifier.__file__, c.in_checkout(), s.templates_dir, s.schedules_dir, "
                "sep='\\n')", cwd=tmp_path, env=user_env).stdout.split("\n")
    package = site_packages(venv) / "notifier"
    assert shown[:4] == [str(package / "__init__.py"), "False",
                         str(package / "_data" / "templates"),
                         str(package / "_data" / "schedules")]
    assert (package / "_data" / "templates").is_dir()
    assert not (package / "_data" / "templates").is_symlink()

    # The settings still point elsewhere when told to.
    elsewhere = tmp_path / "mine"
    shutil.copytree(package / "_data" / "schedules", elsewhere)
    told = run(venv / "bin" / "python", "-c",
               "from notifier.config import Settings; print(Settings.from_env().schedules_dir)",
               cwd=tmp_path, env={**user_env, "NOTIFIER_SCHEDULES_DIR": str(elsewhere)})
    assert told.stdout.strip() == str(elsewhere)


def test_installed_preview_and_jobs_list_run_from_another_directory(venv, user_env, tmp_path,
                                                                     redis_url):
    preview = run(venv / "bin" / "notifier", "preview", "refill_due", cwd=tmp_path,
                  env=user_env)
    assert preview.stdout.startswith("--- sms (en) GSM-7, ")
    assert "--- email (en) ---" in preview.stdout

    jobs = run(venv / "bin" / "notifier", "jobs", "list", cwd=tmp_path,
               env={**user_env, "NOTIFIER_REDIS_URL": redis_url})
    assert jobs.stdout.startswith("provider-digest  cron ")


def test_installed_dev_serves_and_takes_the_shipped_example_events(venv, user_env, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    example = site_packages(venv) / "notifier" / "_data" / "examples" / \
        "appointment-scheduled.json"
    dev = subprocess.Popen([venv / "bin" / "notifier", "dev", "--port", str(port)],
                           cwd=tmp_path, env=user_env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        def healthy() -> bool:
            try:
                return httpx.get(base + "/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout_s=30, what="the installed notifier dev to answer")
        sent = run(venv / "bin" / "notifier", "send-event", example, "--url", base,
                   cwd=tmp_path, env=user_env)
        assert sent.stdout.count(": 202 ") == 3
    finally:
        dev.send_signal(signal.SIGTERM)
        output = dev.communicate(timeout=30)[0]
    assert dev.returncode == 128 + signal.SIGTERM, output
    assert f"listening on {base}" in output
    # The banner's first command, pasted in the same shell, finds the example events.
    assert f"  notifier send-event {example} --url {base}\n" in output
    assert "Traceback" not in output
    assert not EmbeddedRedis(tmp_path / "var").running()
