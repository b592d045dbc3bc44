"""Email through SendGrid's v3 mail send, with the official SDK.

Text and HTML parts; calendar invites attached as `invite.ics` with their METHOD in the
content type; the notification id in `custom_args`, so event webhooks can be matched.
`SENDGRID_API_HOST` selects the region (EU accounts) or a stand-in.

No `look_up` (`channels.ReportLookup`): SendGrid answers about one message only through
its Email Activity API (`GET /v3/messages`), a paid add-on, so a send whose report never
came is marked `unknown` by the repair job (`notifier.worker.reports`) without asking.
"""

from __future__ import annotations

import base64
import http.client
import urllib.error
from datetime import datetime
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from notifier.config import PROVIDER_TIMEOUT_S, Settings, reveal
from notifier.delivery.channels import Message, Receipt
from notifier.delivery.channels.retry_after import retry_after_s
from notifier.errors import MaybeSent, PermanentError, RetryableError

HTTP_TIMEOUT_S = PROVIDER_TIMEOUT_S
#: Seconds to wait for SendGrid's first event (`processed`, our id in its `custom_args`)
#: before sending again a message whose answer was lost (`errors.MaybeSent`): "Events post
#: every 30 seconds or when the batch size reaches 768 kilobytes" (SendGrid's Event Webhook
#: guide, "Data Storage"); twice that leaves room for one late batch.
REPORT_WAIT_S = 60.0


def build_mail(message: Message, from_email: str, from_name: str) -> dict[str, Any]:
    """The v3 mail-send body for `message` (pure)."""
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": message.to}]}],
        "from": {"email": from_email, "name": from_name},
        "subject": message.subject or "",
        "content": [{"type": "text/plain", "value": message.body}],
        "custom_args": {"notification_id": message.notification_id},
    }
    if message.html:
        body["content"].append({"type": "text/html", "value": message.html})
    if message.attachments:
        body["attachments"] = [
            {"content": base64.b64encode(a.content).decode(), "type": a.content_type,
             "filename": a.filename, "disposition": "attachment"}
            for a in message.attachments
        ]
    return body


class SendGridEmail:
    """The email channel through SendGrid, with the key, host and sender of `settings`."""
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = SendGridAPIClient(reveal(settings.sendgrid_api_key),
                                        host=settings.sendgrid_api_host)
        self.client.client.timeout = HTTP_TIMEOUT_S

    def send(self, message: Message, now: datetime) -> Receipt:
        """Send `message`; returns a `Receipt` with SendGrid's `X-Message-Id` (the
        notification id when it gives none). Raises `RetryableError` for a 429 or 5xx (with
        Retry-After's seconds or date) and for a network failure before the request was
        written (urllib's `URLError`: refused, DNS, a connect timeout; code `network`), its
        subclass `MaybeSent` for one after (a read timeout, a dropped connection: code
        `network`; `report_wait_s` `REPORT_WAIT_S` when the event webhook is configured,
        else None), `PermanentError` for any other refusal (code: the HTTP status)."""
        mail = build_mail(message, self.settings.from_email, self.settings.practice_name)
        try:
            response = self.client.send(mail)
        except HTTPError as exc:
            status = int(exc.status_code)
            if status == 429 or status >= 500:
                after = (exc.headers or {}).get("Retry-After") if exc.headers else None
                raise RetryableError(f"sendgrid answered {status}", code=str(status),
                                     retry_after_s=retry_after_s(after, now)) from None
            raise PermanentError(f"sendgrid refused the message ({status})",
                                 code=str(status)) from None
        except urllib.error.URLError as exc:
            # urllib wraps in URLError what fails while connecting and writing the request
            # (`AbstractHTTPHandler.do_open`); what fails reading the answer comes bare.
            raise RetryableError(f"sendgrid unreachable: {type(exc).__name__}",
                                 code="network") from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            wait = REPORT_WAIT_S if self.settings.sendgrid_webhook_public_key else None
            raise MaybeSent(f"sendgrid's answer lost: {type(exc).__name__}", code="network",
                            report_wait_s=wait) from None
        message_id = (response.headers or {}).get("X-Message-Id") or message.notification_id
        return Receipt(provider_id=str(message_id), sent_at=now, awaits_report=True)

    def already_sent(self, message: Message) -> bool | None:
        """SendGrid cannot be asked whether a message went out: always None."""
        return None
