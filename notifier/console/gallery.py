"""The console's Templates page, `GET /console/templates` (audited as a view of
`templates`): every kind x channel x locale rendered with the sample data `notifier
preview` uses (`notifier.delivery.preview.preview_entries`, the same source as `notifier
preview --all`), with each SMS's encoding and segments and the client SMS's worst case.
Read-only. Email HTML is shown as escaped source in `<pre>`, never rendered live; an
invite's `.ics` is shown as text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from notifier.console.routes import Console
from notifier.delivery.preview import TemplatePreview, preview_entries
from notifier.errors import ConfigError, TemplateError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shown:
    """One template as the page shows it: the preview, its anchor, and its attachments
    as (filename, content type, text) — text attachments only (an invite's `.ics`)."""

    preview: TemplatePreview
    anchor: str
    attachments: list[tuple[str, str, str]]


def anchor(p: TemplatePreview) -> str:
    """The id of a template's section: `t-sms-appointment_reminder-en`."""
    return f"t-{p.channel}-{p.kind}-{p.locale}"


def shown(previews: list[TemplatePreview]) -> list[Shown]:
    """`previews` with their anchors and readable attachments (a binary one is named,
    its content left out)."""
    out = []
    for p in previews:
        files = []
        for a in p.message.attachments if p.message else ():
            try:
                text = a.content.decode("utf-8")
            except UnicodeDecodeError:
                text = f"({len(a.content)} bytes, not text)"
            files.append((a.filename, a.content_type, text))
        out.append(Shown(p, anchor(p), files))
    return out


def routes(console: Console) -> APIRouter:
    """`GET /console/templates`."""
    router = APIRouter()

    @router.get("/templates")
    async def templates(request: Request) -> Response:
        session = await console.viewer(request, "templates")
        if isinstance(session, Response):
            return session
        try:
            previews = await run_in_threadpool(preview_entries, console.settings, False)
        # jinja2's own errors too: a template's syntax error escapes as one from the
        # worst-case measure, and the page should say so rather than fail.
        except (TemplateError, ConfigError, jinja2.TemplateError) as exc:
            log.error("console templates page: %s", exc)
            return console.refused(500, "Templates do not render",
                                   f"The templates could not be rendered: {exc}",
                                   session=session)
        entries = shown(previews)
        kinds = sorted({e.preview.kind for e in entries})
        return console.signed_in(session, "templates_gallery.html", entries=entries,
                                 kinds=kinds, count=len(entries))

    return router
