"""A dramatiq message as dramatiq's `RedisBroker.enqueue` writes it into Redis, for a
ledger script to write together with what the message is about: the web stores an
accepted event and its `apply_event` message in one script (`event_store.lua`), so an
event answered 202 is always queued, in one round trip and one fsync. Only when the
broker is a `RedisBroker` on the ledger's own Redis: `notifier.worker.queueing` decides.

What `RedisBroker.enqueue(message)` does without a delay (dramatiq 1.x and 2.x,
`dramatiq/brokers/redis.py` and `redis/dispatch.lua`, command `enqueue`), and what is
kept here:

- the message is copied with `options={"redis_message_id": <new uuid4>}` (its id in
  Redis; a retried message gets another): kept;
- `HSET {namespace}:{queue}.msgs <redis_message_id> <message.encode()>`, then
  `RPUSH {namespace}:{queue} <redis_message_id>`: kept, by the script; a worker's fetch
  pops the id and reads the body, as for any message;
- `ZADD {namespace}:__heartbeats__ <now ms> <broker id>`: left out. Heartbeats tell the
  workers' queue maintenance which brokers died holding fetched, un-acked messages; a
  broker that only enqueues holds none, and each one it lists costs a `KEYS` scan of the
  whole keyspace when maintenance later finds it gone;
- one dispatch in a thousand also runs that maintenance: left to the workers, each of
  whose fetches has the same chance;
- the middleware's `before_enqueue` and `after_enqueue` hooks: not emitted. None of the
  broker's middleware (`worker.actors.build_broker`) has them; a test says so.

A message for a delay queue (`eta`) is not written this way: `message()` takes none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import dramatiq


@dataclass(frozen=True)
class BrokerMessage:
    """One message as it goes into Redis: `redis_message_id` pushed on `queue_key` (a list)
    and `data` (the encoded `message`) in `messages_key` (a hash) under that id."""

    message: dramatiq.Message[Any]
    queue_key: str
    messages_key: str
    redis_message_id: str
    data: bytes


def broker_message(namespace: str, queue_name: str, actor_name: str, *args: Any
                   ) -> BrokerMessage:
    """The message sending `actor_name(*args)` on `queue_name`, as a `RedisBroker` with
    this `namespace` enqueues it (new message id, timestamp now, no options of its own).
    Encoded with dramatiq's global encoder, as the workers decode it."""
    redis_message_id = str(uuid4())
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue_name, actor_name=actor_name, args=args, kwargs={},
        options={"redis_message_id": redis_message_id})
    queue_key = f"{namespace}:{queue_name}"
    return BrokerMessage(message=message, queue_key=queue_key,
                         messages_key=f"{queue_key}.msgs",
                         redis_message_id=redis_message_id, data=message.encode())
