"""Commands of many notifications sent to Redis in one round trip, each with its own reply.

A `Batch` queues commands and Lua script calls (no MULTI: each script is atomic on its
own, and each notification keeps its own compare-and-set), sends them in one pipeline on
`run()`, and hands each caller a `Reply` that gives that command's answer, or raises that
command's own error, so one notification's failure never becomes another's.

Why not redis-py's `Script` on a pipeline: it sends a `SCRIPT EXISTS` round trip before
every pipeline that holds a script. Here a script is called by its sha, and the rare
`NOSCRIPT` (Redis restarted or flushed its scripts) is answered by running that one call
again through the `Script` object, which loads it: a command that got `NOSCRIPT` never ran,
so running it again is safe.

Errors: `Reply.get()` raises `StoreUnavailable` when the round trip failed (Redis cannot
be reached or take commands now: every reply of the batch raises it; on a Redis Cluster,
every reply of the node that failed, the other nodes' replies stand) and `StoreError` when
Redis refused that command (a script error, `WRONGTYPE`; `CrossSlot` for every reply when a
command's keys are in several cluster slots, nothing sent). `run()` itself never raises.

On a cluster (`notifier.ledger.cluster.client`) the pipeline is a `SpreadPipeline`: the
commands are grouped per node and every node is sent its group before any reply is read,
still one round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from notifier.errors import StoreError

T = TypeVar("T")

#: Not answered yet: `run()` has not been called since the command was queued.
_UNSET: Any = object()


class Reply(Generic[T]):
    """One command's answer in a `Batch`, read after `run()` with `get()`; or one made from
    others (`Reply(lambda: f(a.get(), b.get()))`), raising what they raise."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read

    def get(self) -> T:
        """The answer; raises the command's own error (see the module's docstring), or
        RuntimeError when the batch has not run yet."""
        return self._read()


class Batch:
    """Commands queued now, sent in one pipeline by `run()`; reusable after it runs."""

    def __init__(self, client: Any) -> None:
        # `client` is the ledger's (`LedgerRedis` or `LedgerCluster`): its pipeline raises
        # the ledger's errors.
        self.client = client
        self._queued: list[tuple[Script | None, str, tuple[Any, ...]]] = []
        self._answers: list[Any] = []

    def __len__(self) -> int:
        """How many commands are queued and not sent yet."""
        return len(self._queued)

    def call(self, command: str, *args: Any, parse: Callable[[Any], T]) -> Reply[T]:
        """Queue `command` (a redis-py pipeline method name: `mget`, `exists`...) with
        `args`; its reply is `parse(raw answer)`."""
        return self._queue(None, command, args, parse)

    def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any],
               parse: Callable[[Any], T]) -> Reply[T]:
        """Queue a call of a registered script; its reply is `parse(raw answer)`."""
        return self._queue(script, "evalsha", (len(keys), *keys, *args), parse)

    def _queue(self, script: Script | None, command: str, args: tuple[Any, ...],
               parse: Callable[[Any], T]) -> Reply[T]:
        self._queued.append((script, command, args))
        answers, index = self._answers, len(self._queued) - 1
        answers.append(_UNSET)

        def read() -> T:
            answer = answers[index]
            if answer is _UNSET:
                raise RuntimeError("the batch has not run yet")
            if isinstance(answer, Exception):
                raise answer
            return parse(answer)

        return Reply(read)

    def run(self) -> None:
        """Send every queued command in one round trip (none when nothing is queued) and
        fill in their replies; a failed round trip fails every reply of this run. The
        batch is empty again afterwards."""
        queued, answers = self._queued, self._answers
        self._queued, self._answers = [], []
        if not queued:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for script, command, args in queued:
                    if script is not None:
                        pipe.evalsha(script.sha, *args)
                    else:
                        getattr(pipe, command)(*args)
                raw = pipe.execute(raise_on_error=False)
        except Exception as exc:  # StoreUnavailable/StoreError: every command shares it
            answers[:] = [exc] * len(queued)
            return
        for index, ((script, _, args), answer) in enumerate(zip(queued, raw, strict=True)):
            if script is not None and isinstance(answer, NoScriptError):
                answer = self._again(script, args)
            elif isinstance(answer, redis.RedisError):
                answer = StoreError(str(answer))
            answers[index] = answer

    def _again(self, script: Script, args: tuple[Any, ...]) -> Any:
        """A script call that found no script, run on its own (which loads it)."""
        count = int(args[0])
        try:
            return script(keys=list(args[1:1 + count]), args=list(args[1 + count:]),
                          client=self.client)
        except Exception as exc:
            return exc
