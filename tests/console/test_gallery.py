"""The console's Templates page (`notifier.console.gallery`): every template `notifier
preview --all` knows, rendered with sample data, with its SMS size; access and audit."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

from notifier.config import Settings
from notifier.delivery.preview import preview_all, preview_entries, template_keys
from notifier.delivery.render import Renderer
from notifier.delivery.sms_text import measure
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.worker.actors import build_broker
from tests.console.conftest import TestClient, console_env
from tests.console.test_routes import audited, sign_in


def test_the_page_without_a_session_is_401(client, redis_client):
    assert client.get("/console/templates").status_code == 401
    assert audited(redis_client) == []


def test_every_kind_channel_and_locale_preview_knows_is_shown_once(client, settings,
                                                                    redis_client):
    assert sign_in(client).status_code == 303
    page = client.get("/console/templates")
    assert page.status_code == 200, page.text
    expected = {f"t-{c}-{k}-{loc}" for c, k, loc in
                template_keys(Renderer(Path(settings.templates_dir)))}
    assert len(expected) > 40
    # The same list as `notifier preview --all` prints, a row per template.
    table, _ = preview_all(settings)
    printed = {line.split()[0] for line in table.splitlines()[1:-1]}
    assert {f"t-{name.replace('/', '-').replace('.', '-')}" for name in printed} == expected
    sections = re.findall(r'<section class="gallery-item" id="([^"]+)"', page.text)
    assert sorted(sections) == sorted(expected)
    links = set(re.findall(r'<a href="#(t-[^"]+)">', page.text))
    assert links == expected  # the contents link to every one
    assert f"({len(expected)} templates)" in page.text
    assert audited(redis_client)[-1] == ("ana", "view", "templates")


def section(text: str, anchor: str) -> str:
    start = text.index(f'id="{anchor}"')
    return text[start:text.index("</section>", start)]


def test_an_sms_shows_its_text_encoding_and_segments_as_measured(client, settings):
    [reminder] = [e for e in preview_entries(settings, worst_case=False)
                  if e.name == "sms/appointment_reminder.en"]
    assert reminder.message is not None
    size = measure(reminder.message.body)
    assert reminder.size is not None and reminder.size.segments == size.segments
    assert sign_in(client).status_code == 303
    text = client.get("/console/templates").text
    part = section(text, "t-sms-appointment_reminder-en")
    assert f'<span class="sms-encoding">{size.encoding}</span>' in part
    plural = "" if size.segments == 1 else "s"
    assert f'<span class="sms-segments">{size.segments} segment{plural}</span>' in part
    assert reminder.message.body in html.unescape(part)
    assert "Ana" in part  # the plain sample client, not the worst-case name
    assert '<span class="sms-worst">GSM-7, ' in part


def test_an_email_shows_subject_text_and_escaped_html_source_never_live(client, settings):
    entries = {e.name: e for e in preview_entries(settings, worst_case=False)}
    email = entries["email/appointment_confirmation.en"]
    assert email.message is not None and email.message.html
    assert sign_in(client).status_code == 303
    part = section(client.get("/console/templates").text, "t-email-appointment_confirmation-en")
    assert html.escape(email.message.subject or "") in part
    assert '<pre class="gallery-html">&lt;' in part  # the source, escaped
    assert "<table" not in part.split('<pre class="gallery-html">')[1].split("</pre>")[0]
    ics = [a for a in email.message.attachments if a.filename.endswith(".ics")]
    assert ics, "an invite carries its .ics"
    assert "BEGIN:VCALENDAR" in part and ics[0].filename in part


def test_a_template_that_does_not_render_gives_a_clear_page(tmp_path, operators_file,
                                                             redis_client, redis_url):
    templates = tmp_path / "templates"
    shutil.copytree(Path(Settings.from_env(console_env(operators_file),
                                           dotenv=Path("/nonexistent")).templates_dir),
                    templates)
    broken = next(templates.glob("sms/appointment_reminder.en*"))
    broken.write_text("{{ client.first_name(")
    settings = Settings.from_env(console_env(operators_file,
                                             NOTIFIER_TEMPLATES_DIR=str(templates)),
                                 dotenv=Path("/nonexistent"))
    broker = build_broker(redis_url)
    try:
        with TestClient(create_app(settings, Store(redis_client), broker),
                        base_url="https://testserver") as client:
            assert sign_in(client).status_code == 303
            page = client.get("/console/templates")
    finally:
        broker.close()
    assert page.status_code == 500
    assert "Templates do not render" in page.text
