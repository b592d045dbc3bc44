"""The console's pages beyond signing in, one module per concern; each module's `routes`
builds its router from the `Console` (`notifier.console.routes`)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from notifier.console import clients, gallery, today
from notifier.console.routes import Console

#: The routers `console_routes` includes, in this order.
PAGE_ROUTERS: list[Callable[[Console], APIRouter]] = [
    clients.routes,
    today.routes,
    gallery.routes,
]
