"""Reading a request body within a size limit: every route that reads one reads it here.

The declared `Content-Length` is checked before a byte is read, and a body without one
(chunked) is counted as it streams in, so a 10 MB body costs at most the limit in memory,
and is refused before a signature is looked at.
"""

from __future__ import annotations

from fastapi import Request

from notifier.errors import PayloadTooLarge

#: Event and Twilio callback bodies: an event is a few hundred bytes, a Twilio form (an SMS
#: of at most 1,600 characters and its fields) a few KB.
MAX_BODY_BYTES = 64 * 1024
#: SendGrid posts its events in batches of up to 768 KB.
MAX_SENDGRID_BODY_BYTES = 1024 * 1024
#: A FHIR notification: a resource is a few KB, a bundle of a visit's changes some tens,
#: but a US Core Patient may carry its photo (`Patient.photo.data`, base64: a 1 MB JPEG is
#: 1.4 MB) and a bundle several Patients: bodies are read whole, so a bound stays.
MAX_FHIR_BODY_BYTES = 8 * 1024 * 1024


async def read_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, at most `limit` bytes. Raises `PayloadTooLarge` past it (declared or
    streamed), starlette's `ClientDisconnect` when the client goes away before the end."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
    return bytes(body)
