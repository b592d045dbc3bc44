"""The HTTP side: the FastAPI app (events, read API, ops) and the providers' webhooks."""
