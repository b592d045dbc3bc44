"""Finding a client by what an operator has in hand: the client's id, phone number or email
address, each matched exactly (never a prefix, never a list of everyone).

`read_query` (pure) says what a query can be: an id (the intake's id alphabet), a phone
number (parsed as the intake reads numbers, `phonenumbers`, E.164; a national number is
read in the practice's region, `practice_region`), an address (it has an @). A query may
be more than one (`12345` is an id and, in some regions, a number): `find_clients` looks
each up and returns the union.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

from notifier.config import Settings
from notifier.intake.events import e164
from notifier.ledger.records import ClientRecord
from notifier.ledger.store import Store

#: A longer query is refused: no id (128), number or address (254) is longer.
MAX_QUERY_CHARS = 254
#: The intake's id alphabet (`notifier.intake.events.Id`).
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")
#: The region of national numbers when the practice has no number of its own configured.
DEFAULT_REGION = "US"


@dataclass(frozen=True)
class Query:
    """What a search query may be: an id, a number in E.164, an address (as typed)."""

    client_id: str | None = None
    phone: str | None = None
    email: str | None = None

    def kinds(self) -> str:
        """`id`, `phone`, `email` or several joined by `+`: what was looked up, for the
        audit (which never holds the query itself)."""
        return "+".join(kind for kind, value in (("id", self.client_id), ("phone", self.phone),
                                                 ("email", self.email)) if value)


def practice_region(settings: Settings) -> str:
    """The region national numbers are read in: the region of the practice's own number
    (TWILIO_FROM, else NOTIFIER_SUPPORT_PHONE), else `DEFAULT_REGION`. Operators type a
    local number as they say it (`(415) 555-0123`); a number with + and a country code is
    read as such anywhere."""
    for number in (settings.twilio_from, settings.support_phone):
        if number:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
            if region and region != "ZZ":
                return str(region)
    return DEFAULT_REGION


def read_query(raw: str, region: str) -> Query | None:
    """What the query `raw` can be, stripped; None when it is empty, longer than
    `MAX_QUERY_CHARS`, or nothing a client could be found by."""
    text = raw.strip()
    if not text or len(text) > MAX_QUERY_CHARS:
        return None
    query = Query(client_id=text if ID_RE.fullmatch(text) else None,
                  phone=None if "@" in text else e164(text, region),
                  email=text if "@" in text else None)
    return query if query.kinds() else None


def find_clients(store: Store, query: Query) -> list[ClientRecord]:
    """The clients `query` matches exactly, by id: the client of that id, every client of
    that number (a family may share one), every client of that address (`normalised_email`).
    A few round trips, one per kind looked up."""
    found: dict[str, ClientRecord] = {}
    if query.client_id:
        record = store.load_record(f"client:{query.client_id}")
        if isinstance(record, ClientRecord):
            found[record.client.id] = record
    if query.phone:
        found.update((r.client.id, r) for r in store.clients_for_phone(query.phone))
    if query.email:
        found.update((r.client.id, r) for r in store.clients_for_email(query.email))
    return [found[i] for i in sorted(found)]
