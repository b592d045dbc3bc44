"""The notifications of one `deliver` batch as the deliverer carries them along (`Job`),
and the ledger writes it queues until its next round trip (`Writes`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from notifier.delivery.compose import Stored
from notifier.delivery.decide import Outcome
from notifier.ledger.batch import Batch
from notifier.ledger.store import Store


@dataclass
class Job:
    """One notification of a batch, as far as it has got."""

    id: str
    n: Stored | None = None
    recovering: bool = False
    #: its lease's token (`Begun.lease`), which every write about it carries
    lease: str = ""
    outcome: Outcome | None = None
    #: what left it to its lease (`Outcome.LEASED`): Redis failing, or a bug before it began
    error: Exception | None = None

    @property
    def stored(self) -> Stored:
        """The notification as `begin` read it; ValueError for one not begun."""
        if self.n is None:
            raise ValueError(f"{self.id} was not begun")
        return self.n


class Writes:
    """Ledger writes of a batch, queued until the next round trip, each with what to make
    of its answer (its notification's outcome)."""

    def __init__(self, store: Store) -> None:
        self.batch = Batch(store.redis)
        self._then: list[tuple[Job, Callable[[], Outcome]]] = []
        #: the job whose send is queued to be recorded: recorded before anything else is sent
        self.sent: Job | None = None
        #: whether a send that went out could not be recorded (`Outcome.UNRECORDED`)
        self.unrecorded = False

    def then(self, job: Job, done: Callable[[], Outcome]) -> None:
        """After the round trip, `job`'s outcome is `done()` (which reads the answers)."""
        self._then.append((job, done))

    def run(self, failed: Callable[[Job, Exception], None]) -> None:
        """One round trip for everything queued; a job whose `done()` raises goes to
        `failed`, never stopping the others."""
        self.batch.run()
        then, self._then, self.sent = self._then, [], None
        for job, done in then:
            try:
                job.outcome = done()
            except Exception as exc:
                failed(job, exc)
            self.unrecorded |= job.outcome is Outcome.UNRECORDED
