"""The HTTP side: one router per concern (events, read API, links, ops, provider hooks)."""
