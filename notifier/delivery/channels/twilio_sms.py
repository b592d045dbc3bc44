"""SMS through Twilio's Messages API, with the official SDK.

The SDK client is built once per thread (see `TwilioSMS`). `NOTIFIER_TWILIO_BASE_URL` points
it elsewhere (a compatible gateway, a staging stand-in) through a custom `http_client` that
rewrites the scheme and host of each request; `TWILIO_EDGE` / `TWILIO_REGION` are passed to
the SDK.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import MaxRetryError, NewConnectionError

from notifier.config import PROVIDER_TIMEOUT_S, Settings, reveal
from notifier.delivery.channels import LookedUp, Message, Receipt
from notifier.delivery.channels.retry_after import retry_after_s
from notifier.errors import MaybeSent, PermanentError, RetryableError

#: Seconds we wait for Twilio before treating the attempt as failed (and retrying).
HTTP_TIMEOUT_S = PROVIDER_TIMEOUT_S
#: Seconds to wait for Twilio's first status callback (carrying our id in its URL's `?n=`)
#: before sending again a message whose answer was lost (`errors.MaybeSent`). Twilio posts
#: no callback for a message's initial status (`queued`: "Outbound Message Status in Status
#: Callbacks"); the first is `sent` (or `failed`), when the message leaves its sender's
#: queue, seconds later at the usual rates. A sender queue longer than a minute (a burst
#: far over the number's rate) makes the second copy go before the report comes.
REPORT_WAIT_S = 60.0
#: Twilio's upper bound for ValidityPeriod.
MAX_VALIDITY_S = 36000
#: Kinds worthless after their expiry: Twilio drops them from its queue rather than late.
TIME_BOUND_KINDS = frozenset({"appointment_reminder", "appointment_join_link"})


class RoutingHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio has no type hints
    """Twilio's HTTP client, optionally sending to another base URL, and remembering the last
    response's headers (the SDK's exception does not carry Retry-After). One thread's only."""

    def __init__(self, base_url: str | None = None, timeout: float = HTTP_TIMEOUT_S) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/") if base_url else None
        self._headers: dict[str, str] = {}

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        """Twilio's request, sent to `base_url` when one is set; the response's headers are
        kept for `last_headers`."""
        if self.base_url:
            parts = urlsplit(url)
            url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        self._headers = {}
        response = super().request(method, url, *args, **kwargs)
        self._headers = {k.lower(): v for k, v in (response.headers or {}).items()}
        return response

    def last_headers(self) -> dict[str, str]:
        """The headers of the last response, names lower-case; {} while a request is under
        way."""
        return self._headers


def _int_or_none(value: object) -> int | None:
    """Twilio's `num_segments` (a string in its JSON), or None when absent or not a number."""
    try:
        return int(str(value))
    except ValueError:
        return None


def never_left(exc: requests.RequestException) -> bool:
    """Whether `exc` (from requests, under the SDK) came before the request was written, so
    Twilio cannot have taken the message: a connect timeout (`ConnectTimeout`), or a
    connection that could not be opened (refused, DNS: urllib3's `NewConnectionError`,
    which requests raises as a `ConnectionError` wrapping a `MaxRetryError`), or a TLS
    handshake that failed (`SSLError`: a bad certificate or CA bundle, a proxy closing the
    connection; the request is written only once the handshake is done; found by QA).
    Anything else (a read timeout, a connection dropped while writing or reading) may have
    reached it."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        return True
    cause = exc.args[0] if exc.args else None
    return (isinstance(exc, requests.ConnectionError) and isinstance(cause, MaxRetryError)
            and isinstance(cause.reason, NewConnectionError))


def _refusal(exc: TwilioRestException | TwilioServiceException, http: RoutingHttpClient,
             now: datetime, what: str) -> RetryableError | PermanentError:
    """Twilio's error answer as ours: a 429 or 5xx may succeed later (after its
    Retry-After, seconds or a date), any other never will; the code is Twilio's error code
    (its HTTP status when it gives none)."""
    code = str(exc.code or exc.status)
    if exc.status == 429 or exc.status >= 500:
        return RetryableError(f"twilio answered {exc.status}", code=code,
                              retry_after_s=retry_after_s(http.last_headers().get("retry-after"),
                                                          now))
    return PermanentError(f"twilio {what} ({code})", code=code)


class TwilioSMS:
    """Shared by the worker's threads, but each thread sends with its own SDK client: the SDK's
    `TwilioHttpClient.request` keeps each response on the instance (`_test_only_last_response`)
    and returns it from there, on one `requests.Session`, so a client shared by threads could
    hand one of them another's answer (a 21610 read as someone's 429). With CPython's GIL no
    thread switch falls between that store and the return; without it (free-threaded
    builds), or with any code the SDK adds there, nothing would stop it."""

    def __init__(self, settings: Settings, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._local = threading.local()

    @property
    def http(self) -> RoutingHttpClient:
        """This thread's HTTP client."""
        return self._sdk()[1]

    def _sdk(self) -> tuple[Client, RoutingHttpClient]:
        sdk: tuple[Client, RoutingHttpClient] | None = getattr(self._local, "sdk", None)
        if sdk is None:
            http = RoutingHttpClient(self.settings.twilio_base_url, self.timeout_s)
            sdk = (Client(self.settings.twilio_account_sid, reveal(self.settings.twilio_auth_token),
                          http_client=http, edge=self.settings.twilio_edge,
                          region=self.settings.twilio_region), http)
            self._local.sdk = sdk
        return sdk

    def build_request(self, message: Message, now: datetime) -> dict[str, Any]:
        """The Messages API parameters for `message` (pure)."""
        params: dict[str, Any] = {
            "to": message.to,
            "body": message.body,
            # Our text is GSM-7 already (`sms_text.normalise`); Twilio's Smart Encoding is a
            # second line of defence, folding what might slip through the same way.
            "smart_encoded": True,
            "status_callback": (f"{self.settings.public_url}/twilio/status"
                                f"?n={quote(message.notification_id, safe='')}"),
        }
        if self.settings.twilio_messaging_service_sid:
            params["messaging_service_sid"] = self.settings.twilio_messaging_service_sid
        else:
            params["from_"] = self.settings.twilio_from
        if message.kind in TIME_BOUND_KINDS and message.expires_at is not None:
            left_s = int((message.expires_at - now).total_seconds())
            params["validity_period"] = max(1, min(MAX_VALIDITY_S, left_s))
        return params

    def send(self, message: Message, now: datetime) -> Receipt:
        """Send `message`; returns a `Receipt` with the message's SID and Twilio's segment
        count. Raises `RetryableError` for a 429 or 5xx (with Retry-After's seconds or date) and for
        a network failure before the request left (`never_left`, code `network`), its
        subclass `MaybeSent` for one after it may have (a read timeout, a dropped
        connection: code `network`, `report_wait_s` `REPORT_WAIT_S`, as our status callback
        URL is always given), `PermanentError` for any other refusal (code: Twilio's error
        code, such as 21610 for a number that replied STOP).
        """
        client, http = self._sdk()
        try:
            created = client.messages.create(**self.build_request(message, now))
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _refusal(exc, http, now, "refused the message") from None
        except requests.RequestException as exc:
            if never_left(exc):
                raise RetryableError(f"twilio unreachable: {type(exc).__name__}",
                                     code="network") from None
            raise MaybeSent(f"twilio's answer lost: {type(exc).__name__}", code="network",
                            report_wait_s=REPORT_WAIT_S) from None
        return Receipt(provider_id=str(created.sid), sent_at=now,
                       segments=_int_or_none(created.num_segments), awaits_report=True)

    def look_up(self, provider_id: str, now: datetime) -> LookedUp:
        """The Message resource whose SID is `provider_id`, fetched (`GET
        /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`): its `status`,
        `error_code` and `to`. Raises as `send` does: `RetryableError` for a 429, a 5xx or the
        network, `PermanentError` for any other refusal (20404: no such message in this
        account)."""
        client, http = self._sdk()
        try:
            found = client.messages(provider_id).fetch()
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _refusal(exc, http, now, "does not know the message") from None
        except requests.RequestException as exc:
            raise RetryableError(f"twilio unreachable: {type(exc).__name__}",
                                 code="network") from None
        code = found.error_code
        return LookedUp(status=str(found.status or ""), code="" if code is None else str(code),
                        to=str(found.to or ""))

    def already_sent(self, message: Message) -> bool | None:
        """Twilio takes no idempotency key and we do not search its logs: cannot tell."""
        return None
