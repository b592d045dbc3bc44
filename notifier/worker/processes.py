"""`notifier worker --processes N`: one parent process running N worker processes.

A worker process's threads share one interpreter lock: with 8 threads, two thirds of a
worker's wall time went to waiting on sockets and that lock, while 2 threads per core in
more processes drained a burst 1.4-1.7x faster (issue 12). So the worker forks, as
dramatiq's own command does (`dramatiq.cli.main`, whose module asks not to be depended
on, and which boots each process by importing a broker module rather than from our
settings):

- the parent forks N children after start-up checks (settings, Redis answering), and
  each child runs `serve(stop)`: its own dramatiq worker, with its own threads;
- SIGTERM or SIGINT to the parent is passed on to every child as SIGTERM, and each child
  stops gracefully (the messages in hand are finished, the rest go back to the queue); a
  second signal kills them (SIGKILL);
- a child that ends on its own (killed, crashed, failed to start) makes the parent stop
  the others and exit with status 1, so the supervisor (systemd, a Procfile runner)
  restarts the worker whole rather than leaving it short of a process;
- a child whose parent died (SIGKILL) stops too: no orphan goes on consuming.

A child ignores SIGINT itself: Ctrl-C in a terminal reaches every process of the group,
and the parent passes it on once.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType

log = logging.getLogger(__name__)

#: The signals that stop the worker: passed on by the parent as SIGTERM.
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
#: Exit status of a parent one of whose children ended on its own.
CHILD_DIED = 1


def default_processes() -> int:
    """One worker process per core this process may run on (its CPU affinity, so a
    container limited to 2 cores of 64 runs 2)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _child(serve: Callable[[threading.Event], None]) -> None:
    """A child's life: stop on SIGTERM or when the parent dies, serve until then."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Blocked by the parent while it forked, so none was lost before these handlers.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    parent = multiprocessing.parent_process()
    if parent is not None:
        def orphaned() -> None:
            multiprocessing.connection.wait([parent.sentinel])
            if not stop.is_set():
                log.error("the worker's parent process died; stopping")
                stop.set()

        threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()
    serve(stop)


def run_processes(count: int, serve: Callable[[threading.Event], None],
                  poll_s: float = 1.0,
                  also: Sequence[tuple[str, Callable[[threading.Event], None]]] = ()) -> int:
    """Run `serve(stop)` in `count` forked processes, and each of `also` (name, serve)
    in one more, until SIGTERM or SIGINT, or until one ends on its own; return the
    parent's exit status: 0 when every child stopped cleanly when told to, `CHILD_DIED`
    (1) otherwise. Each serve must return once `stop` is set. `poll_s`: how often the
    parent looks for children that ended, seconds (a signal is acted on at once)."""
    context = multiprocessing.get_context("fork")
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    children = []
    try:
        targets = [(f"worker-{number}", serve) for number in range(count)] + list(also)
        for name, target in targets:
            child = context.Process(target=_child, args=(target,), name=name)
            child.start()
            children.append(child)
    except BaseException:
        for child in children:
            child.kill()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        raise
    stopping = False

    def stop_children(sig: int) -> None:
        for child in children:
            if child.exitcode is None and child.pid is not None:
                # One that ended between the look and the signal is waited for below.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, sig)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            log.warning("stopping again: killing the worker processes")
            stop_children(signal.SIGKILL)
            return
        stopping = True
        log.info("stopping %d worker processes", len(children))
        stop_children(signal.SIGTERM)

    handlers = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    status = 0
    try:
        running = list(children)
        while running:
            ended = multiprocessing.connection.wait([c.sentinel for c in running],
                                                    timeout=poll_s)
            for child in [c for c in running if c.sentinel in ended]:
                child.join()
                running.remove(child)
                if not stopping:
                    log.critical("worker process %s (pid %s) ended on its own (exit code "
                                 "%s); stopping the others", child.name, child.pid,
                                 child.exitcode)
                    stopping = True
                    status = CHILD_DIED
                    stop_children(signal.SIGTERM)
                elif child.exitcode != 0:
                    status = CHILD_DIED
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return status
